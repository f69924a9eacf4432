"""The frozen build plan: typed steps with their options, inputs and outputs.

A profile compiles into a `BuildPlan` once (clipbuild.stages.pipeline.compile_plan); nothing after planning
reads the YAML again. Each stage module declares its step kinds (`StepKind` subclasses: code version, options
dataclass, outputs, host tools) and one planner; the pipeline lists them in order. The executor
(clipbuild.core.executor) runs a plan; it knows nothing of Portage or disks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from clipbuild.core.digest import canonical_json, sha256_file

STEP_ID = re.compile(r"[a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)*")


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
    # How this run may go faster, never what it makes, so not keyed: "binhost" (a URL the emerge-set steps take
    # binpkgs from; clipbuild.gentoo.binhost). Empty unless --binhost or $CLIPBUILD_BINHOST says.
    settings: Mapping[str, str] = field(default_factory=dict)

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


@dataclass(frozen=True)
class PlanSettings:
    """Choices made on the command line rather than in the profile."""

    buildroot: dict[str, Any] = field(default_factory=dict)  # a build root Recipe; empty: the embedded default
    source_date_epoch: int = 0  # the date written into packages and images
    release: bool = False  # take countersigned packages from controller batches instead of development signing
    batches: tuple[str, ...] = ()  # release: controller batch folders
    policy: str = ""  # release: trust policy file (default: the profile's signing.policy)
    bootloader: str = ""  # the profile's boot.bootloader, chosen for this run
    secureboot: str = ""  # release, UEFI path: the Secure Boot key folder (certificates and db.key)


def required_tools(plan: BuildPlan, kinds: Mapping[str, type[StepKind]]) -> list[str]:
    return sorted({tool for step in plan.steps for tool in kinds[step.kind].tools})
