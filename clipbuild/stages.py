"""The pipeline's stages, imported in order: importing a stage module registers its step kinds and planner."""

from clipbuild import plan  # isort: skip  (first: the profile step)
from clipbuild import jailstage  # isort: skip  (before build: clip/core reads the jails)
from clipbuild import build, packaging

__all__ = ["build", "jailstage", "packaging", "plan"]
