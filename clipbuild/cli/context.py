"""What every command shares: the typed context (`Options`, built from the global options), the --json
option, and the one way commands print JSON and progress."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from clipbuild.core.executor import Executor, Outcome
from clipbuild.core.plan import BuildPlan, PlanSettings
from clipbuild.core.project import OVERLAY, Project, find_project
from clipbuild.core.report import stderr_reporter
from clipbuild.gentoo import buildroot, fetch
from clipbuild.spec.profile import resolve
from clipbuild.stages.pipeline import STEP_KINDS, compile_plan

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def emit_json(data: Any, *, sort_keys: bool = True) -> None:
    """Print `data` as indented JSON on stdout (keys sorted unless the order is part of the answer)."""
    click.echo(json.dumps(data, indent=2, sort_keys=sort_keys, ensure_ascii=False, default=str))


def say(message: str) -> None:
    """A progress line, on stderr."""
    click.echo(message, err=True)


@dataclass
class Options:
    """The global options (--workdir, --project, --sdk, -v), and what commands do with them."""

    workdir: Path
    project_dir: Path | None
    verbose: int
    sdk: str | None = None

    @property
    def project(self) -> Project:
        return find_project(self.project_dir)

    def plan(self, species: str, **choices: Any) -> BuildPlan:
        """The plan of `species`, built in the chosen build root; `choices` are more PlanSettings."""
        settings = PlanSettings(asdict(buildroot.by_key(self.sdk).recipe) if self.sdk else {},
                                self.project.source_date_epoch(), **choices)
        return compile_plan(resolve(self.project, species), self.project, settings)

    def execute(self, plan: BuildPlan, as_json: bool) -> tuple[Executor, list[Outcome]]:
        """Run the plan in the work directory, progress on stderr."""
        executor = Executor(self.workdir, STEP_KINDS, reporter=stderr_reporter(as_json),
                            project_root=self.project.root)
        return executor, executor.run(plan)

    def fetch(self, species: str) -> tuple[int, int]:
        """Every distfile of the overlay, fetched when missing: (wanted, fetched now)."""
        project = self.project
        wanted = list(fetch.read_manifests(project.root / OVERLAY).values())
        mirrors = resolve(project, species).sources.mirrors
        return len(wanted), len(fetch.fetch(wanted, mirrors, project.root, say=say))
