"""The jails stage: the species' jails rendered (and checked) at plan time, written by the `render-jails` step,
and packaged by the overlay's clip-layout/clip-jails through the normal build, package and sign path (the
build step of clip/core mounts this step's tree at /build/jails for it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from clipbuild.jails import check as jailcheck
from clipbuild.jails import definitions as jails
from clipbuild.core.errors import ProfileError
from clipbuild.spec.model import Profile
from clipbuild.core.plan import PlanSettings, Step, StepContext, StepKind, planner, step_kind
from clipbuild.core.project import Project

STEP = "jails"


@dataclass(frozen=True)
class JailsOptions:
    species: str
    files: dict[str, str] = field(default_factory=dict)
    directories: tuple[str, ...] = ()


@step_kind
class RenderJails(StepKind):
    name = "render-jails"
    version = 1
    Options = JailsOptions
    outputs = ("tree/etc/jails",)

    def parse_options(self, options: dict) -> JailsOptions:
        return JailsOptions(options["species"], options["files"], tuple(options["directories"]))

    def run(self, ctx: StepContext) -> None:
        opts: JailsOptions = ctx.options
        jails.write(jails.Rendered(opts.files, opts.directories), ctx.out / "tree")
        ctx.progress(f"{len(opts.files)} files for {opts.species}'s jails")


@planner
def plan_jails(profile: Profile, project: Project, settings: PlanSettings) -> list[Step]:
    if not profile.jails:
        return []
    loaded = jails.load_all(project, profile.jails)
    issues, _ = jailcheck.check(loaded, jailcheck.load_policy(project))
    if issues:
        raise ProfileError(issues)
    rendered = jails.render(project, loaded, profile.species)
    options = JailsOptions(profile.species, rendered.files, rendered.directories)
    return [RenderJails.step(STEP, options, description=f"render and check {len(loaded)} jails")]
