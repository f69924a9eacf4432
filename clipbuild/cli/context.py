"""What every command shares: the typed context (`Options`, built from the global options), the --json
option, and the one way commands print JSON and progress."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from clipbuild.core.errors import ClipbuildError, StepError, ToolError
from clipbuild.core.executor import Executor, Outcome
from clipbuild.core.plan import BuildPlan, PlanSettings, Step
from clipbuild.core.project import OVERLAY, Project, find_project
from clipbuild.core.report import stderr_reporter
from clipbuild.core.run import run
from clipbuild.gentoo import buildroot, fetch
from clipbuild.gentoo.binhost import Remote
from clipbuild.gentoo.stepobjects import BinhostObjects
from clipbuild.spec.model import BOOTLOADERS
from clipbuild.spec.profile import resolve
from clipbuild.stages.pipeline import STEP_KINDS, compile_plan

BINHOST_ENV = "CLIPBUILD_BINHOST"  # a team binhost every build takes binpkgs from (site configuration, not keyed)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
release_option = click.option("--release", is_flag=True,
                              help="Build for a release: the trust store packaged (clip-update-keys) is the release "
                                   "policy's (--policy), not the development PKI's; an image takes only packages "
                                   "countersigned in controller batches (--batch).")
policy_option = click.option("--policy", type=click.Path(path_type=Path, dir_okay=False, exists=True),
                             help="Release trust policy [default: the profile's signing.policy].")
batch_option = click.option("--batch", "batches", multiple=True,
                            type=click.Path(path_type=Path, file_okay=False, exists=True),
                            help="A countersigned controller batch folder (repeatable; with --release).")


def trust_options(func: Any) -> Any:
    """--release and --policy: the commands that build packages (the trust store is the plan's policy's)."""
    return release_option(policy_option(func))


bootloader_option = click.option("--bootloader", type=click.Choice(BOOTLOADERS),
                                 help="The boot path for this run [default: the profile's boot.bootloader]: syslinux "
                                      "(BIOS) or systemd-boot (UEFI Secure Boot, signed UKIs, measured boot).")
secureboot_option = click.option("--secureboot-keys", "secureboot_keys",
                                 type=click.Path(path_type=Path, file_okay=False, exists=True),
                                 help="Release on the UEFI path: the Secure Boot key folder (PK.crt, KEK.crt, db.crt, "
                                      "owner.guid, db.key), outside every build tree. Development images use the "
                                      "development set.")


def signing_options(func: Any) -> Any:
    """--release, --batch, --policy, --bootloader and --secureboot-keys: the commands that make images."""
    return release_option(batch_option(policy_option(bootloader_option(secureboot_option(func)))))


def release_choices(release: bool, policy: Path | None, batches: tuple[Path, ...] = (), bootloader: str | None = None,
                    secureboot_keys: Path | None = None) -> dict[str, Any]:
    """The PlanSettings the trust and boot options choose."""
    if policy is not None and not release:
        raise click.UsageError("--policy goes with --release (a development build embeds the development PKI's "
                               "policy)")
    return {"release": release, "policy": str(policy) if policy else "", "batches": tuple(str(b) for b in batches),
            "bootloader": bootloader or "", "secureboot": str(secureboot_keys.resolve()) if secureboot_keys else ""}


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

    def execute(self, plan: BuildPlan, as_json: bool, *, debug_shell: bool = False,
                binhost: str = "") -> tuple[Executor, list[Outcome]]:
        """Run the plan in the work directory, progress on stderr; with `debug_shell`, a failed step opens a
        shell where its failed command ran. Builds take binpkgs from `binhost`, else $CLIPBUILD_BINHOST's."""
        binhost = binhost or os.environ.get(BINHOST_ENV, "")
        if binhost:
            Remote.parse(binhost)  # a malformed URL is bad input, said before anything runs
        executor = Executor(self.workdir, STEP_KINDS, reporter=stderr_reporter(as_json),
                            project_root=self.project.root, on_failure=open_debug_shell if debug_shell else None,
                            settings={"binhost": binhost} if binhost else {},
                            sources=[BinhostObjects(Remote.parse(binhost), say)] if binhost else [])
        return executor, executor.run(plan)

    def fetch(self, species: str) -> tuple[int, int]:
        """Every distfile of the overlay, fetched when missing: (wanted, fetched now)."""
        project = self.project
        wanted = list(fetch.read_manifests(project.root / OVERLAY).values())
        mirrors = resolve(project, species).sources.mirrors
        return len(wanted), len(fetch.fetch(wanted, mirrors, project.root, say=say))


debug_shell_option = click.option("--debug-shell", is_flag=True,
                                  help="When a step fails in the build root, open a shell there first: same mounts, "
                                       "environment and partial output; the run fails when it exits.")


def open_debug_shell(step: Step, error: ClipbuildError) -> None:
    """A shell in the sandbox the failed command of `step` ran in, its mounts and scratch still in place."""
    sandbox = error.sandbox if isinstance(error, ToolError | StepError) else None
    if sandbox is None:
        say(f"--debug-shell: step {step.id} failed outside the build root: no shell to open")
        return
    headline = str(error) if isinstance(error, StepError) else f"step {step.id} failed: {error.lines()[0]}"
    say(f"{headline}\n--debug-shell: a shell where it ran (the build root, the step's mounts); exit to end the run")
    run(["bash"], sandbox=sandbox, check=False, capture=False)
