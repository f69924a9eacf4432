"""The frozen build plan: typed steps with their options, inputs and outputs.

A profile compiles into a `BuildPlan` once (`compile_plan`); nothing after planning reads the YAML again. Each
stage module contributes steps through a planner registered with `@planner`, and each step kind is a
`StepKind` subclass registered with `@step_kind`, declaring its code version, options dataclass, outputs and
host tools. The executor (clipbuild.executor) runs a plan; it knows nothing of Portage or disks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from clipbuild.core.errors import InputError
from clipbuild.spec.model import Profile
from clipbuild.core.project import Project

STEP_ID = re.compile(r"[a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)*")


def canonical_json(data: Any) -> str:
    """The one serialisation cache keys are computed over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} cannot be part of a plan")


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's content. Holes in a sparse file (a disk image is mostly holes) are hashed as the
    zeros they read as, without reading them."""
    digest = hashlib.sha256()
    zeros = bytes(1 << 20)
    with path.open("rb") as stream:
        for offset, length, is_data in extents(stream.fileno()):
            if is_data:
                stream.seek(offset)
                while length > 0:
                    chunk = stream.read(min(length, 1 << 20))
                    if not chunk:
                        raise OSError(f"{path} shrank while being read")
                    digest.update(chunk)
                    length -= len(chunk)
            else:
                for _ in range(length >> 20):
                    digest.update(zeros)
                digest.update(zeros[:length & ((1 << 20) - 1)])
    return digest.hexdigest()


def extents(fd: int) -> list[tuple[int, int, bool]]:
    """(offset, length, is_data) runs covering a file, from SEEK_DATA/SEEK_HOLE (one data run when the
    filesystem cannot tell)."""
    size = os.fstat(fd).st_size
    runs: list[tuple[int, int, bool]] = []
    offset = 0
    while offset < size:
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            data = size
        if data > offset:
            runs.append((offset, data - offset, False))
        if data >= size:
            break
        hole = os.lseek(fd, data, os.SEEK_HOLE)
        runs.append((data, hole - data, True))
        offset = hole
    return runs


@dataclass(frozen=True)
class SourceFile:
    """A file a step reads from the project or the outside world, pinned by digest."""

    path: str
    sha256: str

    @classmethod
    def of(cls, path: Path, shown: str) -> SourceFile:
        return cls(shown, sha256_file(path))


@dataclass(frozen=True)
class Step:
    id: str
    kind: str
    options: Mapping[str, Any]
    inputs: tuple[str, ...] = ()
    sources: tuple[SourceFile, ...] = ()
    outputs: tuple[str, ...] = ()
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return json.loads(canonical_json(self))


@dataclass(frozen=True)
class BuildPlan:
    species: str
    version: str
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for step in self.steps:
            if not STEP_ID.fullmatch(step.id):
                raise ValueError(f"invalid step id '{step.id}'")
            if step.id in seen:
                raise ValueError(f"two steps have the id '{step.id}'")
            missing = [i for i in step.inputs if i not in seen]
            if missing:
                raise ValueError(f"step '{step.id}' reads {missing}, which no earlier step produces")
            seen.add(step.id)

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def downstream(self, step_id: str) -> list[str]:
        """Ids of the steps that read `step_id`'s output, directly or not, in plan order."""
        affected = {step_id}
        for step in self.steps:
            if affected.intersection(step.inputs):
                affected.add(step.id)
        return [s.id for s in self.steps if s.id in affected and s.id != step_id]

    def subset(self, targets: list[str]) -> BuildPlan:
        """The steps needed for `targets`: them and everything they read, in plan order."""
        needed = set(targets)
        for step in reversed(self.steps):
            if step.id in needed:
                needed.update(step.inputs)
        return BuildPlan(self.species, self.version, tuple(s for s in self.steps if s.id in needed))

    def to_dict(self) -> dict[str, Any]:
        return {"species": self.species, "version": self.version, "steps": [s.to_dict() for s in self.steps]}


@dataclass
class StepContext:
    """What a running step sees: its options, its inputs' output folders, its own output folder, a scratch
    folder removed before commit, and the project root its sources are relative to."""

    step: Step
    options: Any
    inputs: dict[str, Path]
    out: Path
    log_path: Path
    scratch: Path
    project_root: Path
    progress: Callable[[str], None] = lambda message: None
    digests: dict[str, str] = field(default_factory=dict)  # output path -> SHA-256 the step already computed

    def log(self, message: str) -> None:
        with self.log_path.open("a", encoding="utf-8") as stream:
            stream.write(message.rstrip("\n") + "\n")

    def source(self, path: str) -> Path:
        """A source file of the step, by its project-relative path."""
        return self.project_root / path


class StepKind:
    """A kind of step. Bump `version` whenever the code changes what the step produces."""

    name: ClassVar[str]
    version: ClassVar[int]
    Options: ClassVar[type]
    outputs: ClassVar[tuple[str, ...]] = ()
    tools: ClassVar[tuple[str, ...]] = ()

    def parse_options(self, options: Mapping[str, Any]) -> Any:
        return self.Options(**options)

    def run(self, ctx: StepContext) -> None:
        raise NotImplementedError(f"step kind {self.name} does not define run()")

    @classmethod
    def step(cls, step_id: str, options: Any, *, inputs: tuple[str, ...] = (),
             sources: tuple[SourceFile, ...] = (), description: str = "") -> Step:
        """A step of this kind; `options` must be an instance of `Options`."""
        if not isinstance(options, cls.Options):
            raise TypeError(f"{cls.name} takes {cls.Options.__name__} options")
        data = json.loads(canonical_json(options))
        return Step(step_id, cls.name, data, inputs, sources, cls.outputs, description)


STEP_KINDS: dict[str, type[StepKind]] = {}


def step_kind(cls: type[StepKind]) -> type[StepKind]:
    if cls.name in STEP_KINDS:
        raise ValueError(f"step kind {cls.name} registered twice")
    STEP_KINDS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class PlanSettings:
    """Choices made on the command line rather than in the profile."""

    buildroot: dict[str, Any] = field(default_factory=dict)  # a build root Recipe; empty: the embedded default
    source_date_epoch: int = 0  # the date written into packages and images
    release: bool = False  # take countersigned packages from controller batches instead of development signing
    batches: tuple[str, ...] = ()  # release: controller batch folders
    policy: str = ""  # release: trust policy file (default: the profile's signing.policy)


Planner = Callable[[Profile, Project, PlanSettings], list[Step]]
PLANNERS: list[Planner] = []


def planner(func: Planner) -> Planner:
    PLANNERS.append(func)
    return func


@dataclass(frozen=True)
class _ProfileOptions:
    profile: dict[str, Any] = field(default_factory=dict)


@step_kind
class ResolveProfile(StepKind):
    """Freeze the resolved profile as profile.json: what every later stage and the image manifest cite."""

    name = "resolve-profile"
    version = 1
    Options = _ProfileOptions
    outputs = ("profile.json",)

    def run(self, ctx: StepContext) -> None:
        text = json.dumps(ctx.options.profile, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (ctx.out / "profile.json").write_text(text, encoding="utf-8")


@planner
def plan_profile(profile: Profile, project: Project, settings: PlanSettings) -> list[Step]:
    data = profile.to_dict()
    data.pop("files")
    return [ResolveProfile.step("profile", _ProfileOptions(data),
                                description=f"resolved profile of {profile.species}")]


def compile_plan(profile: Profile, project: Project, settings: PlanSettings | None = None) -> BuildPlan:
    """The frozen plan for a species: every registered stage's steps, in pipeline order."""
    if profile.abstract:
        raise InputError(f"{profile.species} is abstract: it exists to be inherited, not built")
    from clipbuild.stages import pipeline as stages  # registers every stage's planner (imported late: stages import this module)

    steps: list[Step] = []
    for plan_stage in sorted(PLANNERS, key=lambda func: stages.position(func.__module__)):
        steps.extend(plan_stage(profile, project, settings or PlanSettings()))
    return BuildPlan(profile.species, profile.version, tuple(steps))


def required_tools(plan: BuildPlan, kinds: Mapping[str, type[StepKind]] = STEP_KINDS) -> list[str]:
    return sorted({tool for step in plan.steps for tool in kinds[step.kind].tools})
