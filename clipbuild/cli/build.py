"""The commands that run the pipeline, or part of it: plan (and why a step would run), run, fetch, build,
package; and cache check, on the work directory they fill."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import click

from clipbuild.cli.context import (
    BINHOST_ENV,
    Options,
    debug_shell_option,
    emit_json,
    json_option,
    release_choices,
    signing_options,
    trust_options,
)
from clipbuild.cli.show import build_origins, format_build_summary, format_plan
from clipbuild.core.errors import EXIT_FAILED
from clipbuild.core.executor import Executor
from clipbuild.gentoo import fetch, scaleout
from clipbuild.stages.build import COMPILES
from clipbuild.stages.pipeline import STEP_KINDS


@click.command("plan")
@click.argument("species")
@click.option("--explain", is_flag=True, help="Say for each step whether it is cached, and why it would run.")
@signing_options
@json_option
@click.pass_obj
def plan_cmd(opts: Options, species: str, explain: bool, release: bool, batches: tuple[Path, ...],
             policy: Path | None, bootloader: str | None, secureboot_keys: Path | None, as_json: bool) -> None:
    """Print the frozen build plan of SPECIES: its steps, their options, inputs and outputs.

    With --explain, compare each step's cache key with the work directory and say what changed since the
    step last ran (an option, an input, a source file, the step's code). --release [--policy FILE]
    [--batch DIR...]: the plan of a release (see clipbuild image).
    """
    plan = opts.plan(species, **release_choices(release, policy, batches, bootloader, secureboot_keys))
    statuses = Executor(opts.workdir, STEP_KINDS, project_root=opts.project.root).status(plan) if explain else None
    if as_json:
        data = plan.to_dict()
        if statuses is not None:
            data["status"] = [asdict(s) for s in statuses]
        emit_json(data)
    else:
        click.echo(format_plan(plan, statuses), nl=False)


@click.command("run")
@click.argument("species")
@click.option("--step", "steps", multiple=True, metavar="ID",
              help="Run only this step and what it reads (repeatable); see clipbuild plan SPECIES.")
@signing_options
@debug_shell_option
@json_option
@click.pass_obj
def run_cmd(opts: Options, species: str, steps: tuple[str, ...], release: bool, batches: tuple[Path, ...],
            policy: Path | None, bootloader: str | None, secureboot_keys: Path | None, debug_shell: bool,
            as_json: bool) -> None:
    """Run the plan of SPECIES: every step whose cache key changed, each with the reason it re-ran.

    Steps whose inputs did not change are reused from the work directory (--workdir). Progress goes to
    stderr, one line per step (--json: one JSON object per line). --release [--policy FILE] [--batch DIR...]:
    the plan of a release (see clipbuild image).
    """
    plan = opts.plan(species, **release_choices(release, policy, batches, bootloader, secureboot_keys))
    unknown = [s for s in steps if s not in {step.id for step in plan.steps}]
    if unknown:
        raise click.BadParameter(f"no step {', '.join(unknown)} in the plan of {species}", param_hint="--step")
    opts.execute(plan.subset(list(steps)) if steps else plan, as_json, debug_shell=debug_shell)


@click.group("cache")
def cache_group() -> None:
    """Check the work directory's object store.

    A run already checks each object it reuses (outputs present, sizes as committed, small outputs
    re-hashed) and re-runs a step whose object is damaged; `cache check` re-hashes everything.
    """


@cache_group.command("check")
@json_option
@click.pass_obj
def cache_check(opts: Options, as_json: bool) -> None:
    """Re-hash every committed object in WORKDIR/objects and say which steps would re-run.

    Exits 1 when an object is damaged; the next run of its species rebuilds it by itself.
    """
    results = Executor(opts.workdir, STEP_KINDS).check_store()
    bad = [(key, problem, users) for key, problem, users in results if problem]
    if as_json:
        emit_json({"objects": len(results), "damaged": [{"key": k, "problem": p, "steps": u}
                                                         for k, p, u in bad]})
    else:
        for key, problem, users in bad:
            click.echo(f"damaged {key[:16]}: {problem}; would re-run: {', '.join(users) or 'nothing (unused)'}")
        click.echo(f"{len(results)} objects checked in {opts.workdir / 'objects'}, {len(bad)} damaged")
    if bad:
        sys.exit(EXIT_FAILED)


@click.command("fetch")
@click.argument("species")
@click.pass_obj
def fetch_cmd(opts: Options, species: str) -> None:
    """Download every distfile of the overlay from SPECIES' mirrors and check it against its Manifest.

    Distfiles are kept in ~/.cache/clipbuild/distfiles; builds only read them there, without network.
    """
    wanted, fetched = opts.fetch(species)
    click.echo(f"{wanted} distfiles verified, {fetched} fetched now: {fetch.store_dir()}")


@click.command("build")
@click.argument("species")
@click.option("--explain", is_flag=True, help="List every package with why it was built or that it was reused.")
@click.option("--offline", is_flag=True, help="Do not fetch missing distfiles first; fail instead.")
@click.option("--binhost", metavar="URL", default="", envvar=BINHOST_ENV, show_envvar=True,
              help="Take the binpkgs the local package store lacks from this binhost (clipbuild binhost export): "
                   "http(s)://HOST/PATH/, file:///PATH or a folder, optionally #sha256=<index digest>.")
@click.option("--distcc", "distcc_hosts", multiple=True, metavar="HOST[:PORT][/JOBS]",
              help="Compile on this distcc host too (repeatable; default port 3632, 2 jobs). Env: "
                   f"{scaleout.ENV_DISTCC}.")
@click.option("--ccache-remote", metavar="URL[|read-only]",
              help=f"ccache's HTTP remote storage for the kernel build. Env: {scaleout.ENV_CCACHE_REMOTE}.")
@trust_options
@debug_shell_option
@json_option
@click.pass_obj
def build_cmd(opts: Options, species: str, explain: bool, offline: bool, binhost: str,
              distcc_hosts: tuple[str, ...], ccache_remote: str | None, release: bool, policy: Path | None,
              debug_shell: bool, as_json: bool) -> None:
    """Build every package set of SPECIES from source with emerge, each into its own ROOT.

    First, missing distfiles are fetched (as clipbuild fetch does; --offline skips it); then the builds run
    with no network at all. Unchanged sets are cached; inside a set, a package whose inputs did not change is
    installed from the package store instead of being rebuilt. With --binhost, a package the local store lacks
    is first looked up by its key in the binhost's index, downloaded, verified and installed (docs/scale-out.md).
    The last line says how many packages were compiled here, came from the local store or from the binhost.

    \b
    The core set packages the device's trust store (clip-conf/clip-update-keys: etc/clip_update/keys/), the
    trust policy the image verifies packages with: the development PKI's by default; with --release, the
    release policy (--policy FILE, else the profile's signing.policy). Build the packages a controller will
    countersign for a release with --release:
      clipbuild build client --release --policy release/policy.yaml

    \b
    --distcc and --ccache-remote change how fast, never what: they enter no key (docs/scale-out.md). The sandbox
    reaches those hosts only, through a relay:
      clipbuild build client --distcc 10.0.0.5/8 --distcc 10.0.0.6:3632/8 --ccache-remote http://cache:8080/
    """
    os.environ.update(scaleout.from_options(distcc_hosts, ccache_remote).to_env())
    plan = opts.plan(species, **release_choices(release, policy))
    if not offline:
        opts.fetch(species)
    build_ids = [s.id for s in plan.steps if s.kind == "emerge-set"]
    executor, outcomes = opts.execute(plan.subset(build_ids), as_json, debug_shell=debug_shell, binhost=binhost)
    sets = []
    for outcome in outcomes:
        if outcome.step_id in build_ids:
            rows = json.loads((executor.output(species, outcome.step_id) / "packages.json").read_text())
            compiles = executor.output(species, outcome.step_id) / COMPILES
            sets.append({"step": outcome.step_id, "status": outcome.status, "packages": rows,
                         **({"compiles": json.loads(compiles.read_text())} if compiles.is_file() else {})})
    if as_json:
        emit_json({"species": species, "sets": sets, "origins": build_origins(sets)})
        return
    click.echo(format_build_summary(species, sets, explain), nl=False)


@click.command("package")
@click.argument("species")
@trust_options
@json_option
@click.pass_obj
def package_cmd(opts: Options, species: str, release: bool, policy: Path | None, as_json: bool) -> None:
    """Build SPECIES (as clipbuild build does) and wrap every binpkg as a CLIP .deb, unsigned.

    Prints each package set's folder of .debs. Sign them with clipbuild sign --role developer, then hand a
    batch to a controller (clipbuild countersign). For a release, build them with --release [--policy FILE]
    (the trust store packaged is the release policy's).
    """
    plan = opts.plan(species, **release_choices(release, policy))
    opts.fetch(species)
    ids = [s.id for s in plan.steps if s.kind == "deb-set"]
    executor, _ = opts.execute(plan.subset(ids), as_json)
    executor.output(species, ids[0])  # raises if the step left no output
    folders = {step_id: opts.workdir / "steps" / species / step_id / "out" / "debs" for step_id in ids}
    if as_json:
        emit_json({step_id: sorted(p.name for p in folder.glob("*.deb")) for step_id, folder in folders.items()})
    else:
        for step_id, folder in folders.items():
            click.echo(f"{step_id}: {len(list(folder.glob('*.deb')))} packages in {folder}")


COMMANDS = (plan_cmd, run_cmd, cache_group, fetch_cmd, build_cmd, package_cmd)
