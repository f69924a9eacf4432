"""The pipeline's stages, imported in order: importing a stage module registers its step kinds and planner."""

from clipbuild import build, packaging, plan

__all__ = ["build", "packaging", "plan"]
