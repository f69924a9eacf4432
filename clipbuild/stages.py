"""The pipeline's stages in order. Importing a stage module registers its step kinds and planner; the plan
takes the planners in this order, whatever order the modules happened to be imported in."""

from clipbuild import build, image, jailstage, packaging, plan, signstage

ORDER = (
    plan,  # the resolved profile
    jailstage,  # before build: clip/core reads the jails
    build,
    packaging,
    signstage,  # signs (or gathers) packaging's packages
    image,  # last: reads the signed pools
)
__all__ = ["ORDER"]


def position(module_name: str) -> int:
    names = [m.__name__ for m in ORDER]
    if module_name not in names:
        raise ValueError(f"{module_name} registers a planner but is not listed in clipbuild.stages.ORDER")
    return names.index(module_name)
