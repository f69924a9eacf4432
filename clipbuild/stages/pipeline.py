"""The pipeline: every stage's planner in order, the step kinds they use, and `compile_plan`.

A profile compiles into a `BuildPlan` once; nothing after planning reads the YAML again. Each stage module
(clipbuild.stages.*) declares its step kinds and one planner; this module lists them explicitly, in the order
their steps enter the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from clipbuild.core.errors import InputError
from clipbuild.core.plan import BuildPlan, PlanSettings, Step, StepKind
from clipbuild.core.project import Project
from clipbuild.spec.model import Profile
from clipbuild.stages.build import EmergeSet, plan_build
from clipbuild.stages.image import AssembleImage, plan_image
from clipbuild.stages.jails import RenderJails, plan_jails
from clipbuild.stages.keys import RenderKeys, plan_keys
from clipbuild.stages.package import DebSet, plan_packages
from clipbuild.stages.profile import ResolveProfile, plan_profile
from clipbuild.stages.sign import SignSet, plan_signing

Planner = Callable[[Profile, Project, PlanSettings], list[Step]]

PLANNERS: tuple[Planner, ...] = (
    plan_profile,  # the resolved profile
    plan_jails,  # before build: clip/core reads the jails
    plan_keys,  # before build: clip/core reads the trust store
    plan_build,
    plan_packages,
    plan_signing,  # signs (or gathers) packaging's packages
    plan_image,  # last: reads the signed pools
)


def _by_name(*kinds: type[StepKind]) -> dict[str, type[StepKind]]:
    names = [kind.name for kind in kinds]
    if len(set(names)) != len(names):
        raise ValueError(f"two step kinds share a name: {sorted(names)}")
    return {kind.name: kind for kind in kinds}


STEP_KINDS: Mapping[str, type[StepKind]] = _by_name(ResolveProfile, RenderJails, RenderKeys, EmergeSet, DebSet, SignSet,
                                                    AssembleImage)


def compile_plan(profile: Profile, project: Project, settings: PlanSettings | None = None) -> BuildPlan:
    """The frozen plan for a species: every stage's steps, in pipeline order."""
    if profile.abstract:
        raise InputError(f"{profile.species} is abstract: it exists to be inherited, not built")
    steps: list[Step] = []
    for plan_stage in PLANNERS:
        steps.extend(plan_stage(profile, project, settings or PlanSettings()))
    return BuildPlan(profile.species, profile.version, tuple(steps))
