"""The jails stage: the species' jails rendered (and checked) at plan time, written by the `render-jails` step,
and packaged by the overlay's clip-layout/clip-jails through the normal build, package and sign path (the
build step of clip/core mounts this step's tree at /build/jails for it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from clipbuild.core.errors import ProfileError
from clipbuild.core.plan import PlanSettings, Step, StepContext, StepKind
from clipbuild.core.project import Project
from clipbuild.jails import definitions, rules
from clipbuild.spec.model import Profile

STEP = "jails"


@dataclass(frozen=True)
class JailsOptions:
    species: str
    files: dict[str, str] = field(default_factory=dict)
    directories: tuple[str, ...] = ()


class RenderJails(StepKind):
    name = "render-jails"
    version = 1
    Options = JailsOptions
    outputs = ("tree/etc/jails",)

    def parse_options(self, options: dict) -> JailsOptions:
        return JailsOptions(options["species"], options["files"], tuple(options["directories"]))

    def run(self, ctx: StepContext) -> None:
        opts: JailsOptions = ctx.options
        definitions.write(definitions.Rendered(opts.files, opts.directories), ctx.out / "tree")
        ctx.progress(f"{len(opts.files)} files for {opts.species}'s jails")


def plan_jails(profile: Profile, project: Project, settings: PlanSettings) -> list[Step]:
    if not profile.jails:
        return []
    loaded = definitions.load_all(project, profile.jails)
    issues, _ = rules.check(loaded, rules.load_policy(project))
    if issues:
        raise ProfileError(issues)
    rendered = definitions.render(project, loaded, profile.species)
    options = JailsOptions(profile.species, rendered.files, rendered.directories)
    return [RenderJails.step(STEP, options, description=f"render and check {len(loaded)} jails")]
