"""The pipeline's stages, one module per step (named after its step id), and `pipeline`: their planners
in order and `compile_plan`."""
