"""The pipeline's stages, imported in order: importing a stage module registers its step kinds and planner."""

from clipbuild import plan  # isort: skip  (first: the profile step)
from clipbuild import jailstage  # isort: skip  (before build: clip/core reads the jails)
from clipbuild import build, packaging  # isort: skip
from clipbuild import signstage  # isort: skip  (after packaging: signs its packages)
from clipbuild import image  # isort: skip  (last: reads the signed pools)

__all__ = ["build", "image", "jailstage", "packaging", "plan", "signstage"]
