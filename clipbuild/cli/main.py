"""The clipbuild command line: parse, call one function, print. Exit codes: 0 success, 1 failed run, 2 bad input."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from clipbuild import __version__
from clipbuild.gentoo import buildroot
from clipbuild.gentoo import fetch
from clipbuild.stages import pipeline as stages  # noqa: F401 (importing stages registers every stage)
from clipbuild.stages.build import OVERLAY
from clipbuild.cli.distfiles import COMMANDS as DISTFILES_COMMANDS
from clipbuild.cli.image import COMMANDS as IMAGE_COMMANDS
from clipbuild.cli.jails import COMMANDS as JAIL_COMMANDS
from clipbuild.cli.signing import COMMANDS
from clipbuild.cli.update import COMMANDS as UPDATE_COMMANDS
from clipbuild.core.errors import EXIT_BAD_INPUT, EXIT_FAILED, ClipbuildError
from clipbuild.core.executor import Executor, Outcome
from clipbuild.core.paths import cache_dir
from clipbuild.core.plan import BuildPlan, PlanSettings
from clipbuild.stages.pipeline import compile_plan
from clipbuild.gentoo.portage_config import REPO_PATH
from clipbuild.spec.profile import list_profiles, resolve, species_path, validate_paths
from clipbuild.core.project import Project, find_project
from clipbuild.core.report import stderr_reporter
from clipbuild.cli.show import format_build_summary, format_plan, format_resolved
from clipbuild.spec.yamlnodes import load_file


@dataclass
class Options:
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
        executor = Executor(self.workdir, reporter=stderr_reporter(as_json), project_root=self.project.root)
        return executor, executor.run(plan)

    def fetch(self, species: str) -> tuple[int, int]:
        """Every distfile of the overlay, fetched when missing: (wanted, fetched now)."""
        project = self.project
        wanted = list(fetch.read_manifests(project.root / OVERLAY).values())
        mirrors = resolve(project, species).sources.mirrors
        return len(wanted), len(fetch.fetch(wanted, mirrors, project.root, say=_say))


_VERBOSITY = [0]  # -v count of the running command, for the last-resort error handler in main()


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str))


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="clipbuild")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("build"), show_default=True,
              envvar="CLIPBUILD_WORKDIR", help="Where build steps keep their cache and outputs.")
@click.option("--project", "project_dir", type=click.Path(path_type=Path, file_okay=False),
              envvar="CLIPBUILD_PROJECT",
              help="Project root holding profiles/ and jails/ [default: nearest above the current folder].")
@click.option("--sdk", metavar="KEY", envvar="CLIPBUILD_SDK",
              help="Build in this cached build root (clipbuild sdk info) [default: the embedded default].")
@click.option("-v", "--verbose", count=True, help="More output: -v shows commands run, -vv debug details.")
@click.pass_context
def cli(ctx: click.Context, workdir: Path, project_dir: Path | None, sdk: str | None, verbose: int) -> None:
    """Build hardened, multi-level OS images the CLIP OS 4 way.

    A species profile (profiles/SPECIES.yaml) says what goes into a system. clipbuild compiles it into a
    plan of steps (build root, Portage builds, signed .deb packages, jails, A/B disk image) and runs the
    steps whose inputs changed.

    \b
    Start with:
      clipbuild profile list              the species and what they inherit
      clipbuild profile show client --resolved
      clipbuild plan client --explain     what would run, and why
      clipbuild build client --explain    build every package, saying why each was (re)built
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = Options(workdir, project_dir, verbose, sdk)
    _VERBOSITY[0] = verbose


@cli.group()
def profile() -> None:
    """List, show and validate species profiles.

    Profiles are YAML files in profiles/. A profile inherits its parents (`inherits: base`): mappings
    deep-merge, scalars override, lists append; `!remove ITEM` drops an inherited list item and
    `!replace` replaces an inherited value (docs/profiles.md).
    """


@profile.command("list")
@json_option
@click.pass_obj
def profile_list(opts: Options, as_json: bool) -> None:
    """List the species in profiles/ with what they inherit."""
    summaries = list_profiles(opts.project)
    if as_json:
        _emit_json([asdict(s) for s in summaries])
        return
    width = max((len(s.species) for s in summaries), default=8)
    for s in summaries:
        notes = []
        if s.inherits:
            notes.append(f"inherits {', '.join(s.inherits)}")
        if s.abstract:
            notes.append("abstract")
        if s.problems:
            notes.append(f"{s.problems} problem(s): run clipbuild profile validate {s.path}")
        extra = f"  ({'; '.join(notes)})" if notes else ""
        click.echo(f"{s.species.ljust(width)}  {s.version or '-':8}  {s.description}{extra}")


@profile.command("show")
@click.argument("species")
@click.option("--resolved", is_flag=True,
              help="Show the profile merged with everything it inherits, each value with its origin.")
@json_option
@click.pass_obj
def profile_show(opts: Options, species: str, resolved: bool, as_json: bool) -> None:
    """Show the profile of SPECIES, as written or (--resolved) after inheritance."""
    project = opts.project
    if not resolved:
        path = species_path(project, species)
        if as_json:
            node, _ = load_file(path, project.display(path))
            _emit_json(node.plain() if node else None)
        else:
            click.echo(path.read_text(encoding="utf-8"), nl=False)
        return
    prof = resolve(project, species)
    if as_json:
        data = prof.to_dict()
        data["origins"] = {k: str(v) for k, v in sorted(prof.origins.items())}
        _emit_json(data)
    else:
        click.echo(format_resolved(prof), nl=False)


@profile.command("validate")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@json_option
@click.pass_obj
def profile_validate(opts: Options, files: tuple[Path, ...], as_json: bool) -> None:
    """Check profiles (default: every file in profiles/) and report every problem at once.

    Each problem names the file, the line and the key: FILE:LINE: KEY: what is wrong (how to fix it).
    Exits 2 if any file has a problem.
    """
    project = opts.project
    results = validate_paths(project, list(files) or project.species_files())
    if as_json:
        _emit_json({name: [{"file": i.loc.file if i.loc else None, "line": i.loc.line if i.loc else None,
                            "key": i.key, "message": i.message, "hint": i.hint} for i in issues]
                    for name, issues in results.items()})
    else:
        for name, issues in results.items():
            if not issues:
                click.echo(f"ok  {name}")
            for issue in issues:
                click.echo(f"error: {issue}", err=True)
    if any(results.values()):
        sys.exit(EXIT_BAD_INPUT)


@cli.command("plan")
@click.argument("species")
@click.option("--explain", is_flag=True, help="Say for each step whether it is cached, and why it would run.")
@json_option
@click.pass_obj
def plan_cmd(opts: Options, species: str, explain: bool, as_json: bool) -> None:
    """Print the frozen build plan of SPECIES: its steps, their options, inputs and outputs.

    With --explain, compare each step's cache key with the work directory and say what changed since the
    step last ran (an option, an input, a source file, the step's code).
    """
    plan = opts.plan(species)
    statuses = Executor(opts.workdir, project_root=opts.project.root).status(plan) if explain else None
    if as_json:
        data = plan.to_dict()
        if statuses is not None:
            data["status"] = [asdict(s) for s in statuses]
        _emit_json(data)
    else:
        click.echo(format_plan(plan, statuses), nl=False)


@cli.command("run")
@click.argument("species")
@click.option("--step", "steps", multiple=True, metavar="ID",
              help="Run only this step and what it reads (repeatable); see clipbuild plan SPECIES.")
@json_option
@click.pass_obj
def run_cmd(opts: Options, species: str, steps: tuple[str, ...], as_json: bool) -> None:
    """Run the plan of SPECIES: every step whose cache key changed, each with the reason it re-ran.

    Steps whose inputs did not change are reused from the work directory (--workdir). Progress goes to
    stderr, one line per step (--json: one JSON object per line).
    """
    plan = opts.plan(species)
    unknown = [s for s in steps if s not in {step.id for step in plan.steps}]
    if unknown:
        raise click.BadParameter(f"no step {', '.join(unknown)} in the plan of {species}", param_hint="--step")
    opts.execute(plan.subset(list(steps)) if steps else plan, as_json)


@cli.group()
def sdk() -> None:
    """Create, inspect, use and remove build roots.

    The embedded default is a minimal Debian root (mmdebstrap) with a pinned Portage; --stage3 imports a
    Gentoo stage3 tarball instead. Build roots are cached under ~/.cache/clipbuild/sdk and shared by every
    work directory. Commands run in bubblewrap with the root read-only and the network off.
    """


@sdk.command("create")
@click.option("--stage3", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A Gentoo (Hardened) stage3 tarball to use instead of the embedded default.")
@click.option("--digest", help="The stage3's expected digest, sha512:HEX (required with --stage3).")
def sdk_create(stage3: Path | None, digest: str | None) -> None:
    """Make the build root (or find it cached) and print where it is."""
    if stage3 is not None:
        if not digest:
            raise click.UsageError("--stage3 needs --digest sha512:HEX: clipbuild checks it before unpacking")
        root = buildroot.import_stage3(stage3, digest, say=_say)
    else:
        root = buildroot.ensure(say=_say)
    click.echo(f"{root.key}  {root.path}")


def _say(message: str) -> None:
    click.echo(message, err=True)


@sdk.command("info")
@json_option
def sdk_info(as_json: bool) -> None:
    """List the cached build roots: key, kind, Portage version, size of the package list."""
    roots = buildroot.installed()
    if as_json:
        _emit_json([{**r.info, "path": str(r.path)} for r in roots])
        return
    if not roots:
        click.echo("no build root yet: clipbuild sdk create")
    for root in roots:
        default = "  (default)" if root.recipe == buildroot.DEFAULT_RECIPE else ""
        click.echo(f"{root.key}  {root.recipe.kind:7} {root.info.get('portage', '?').split(' (')[0]}  "
                   f"{len(root.info.get('packages', []))} packages  {root.path}{default}")


def _project_mounts(opts: Options) -> list[buildroot.Mount]:
    fetch.store_dir().mkdir(parents=True, exist_ok=True)
    return [buildroot.Mount(opts.project.root / OVERLAY, REPO_PATH),
            buildroot.Mount(fetch.store_dir(), "/var/cache/distfiles")]


@sdk.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--network", is_flag=True, help="Share the host's network (off by default).")
@click.pass_obj
def sdk_run(opts: Options, command: tuple[str, ...], network: bool) -> None:
    """Run COMMAND in the default build root: clipbuild sdk run -- emerge --info

    The overlay is mounted read-only at /var/db/repos/clip and the distfiles at /var/cache/distfiles.
    """
    root = buildroot.ensure(say=_say)
    result = root.run(list(command), _project_mounts(opts), network=network, check=False, capture=False)
    sys.exit(result.returncode)


@sdk.command("shell")
@click.option("--network", is_flag=True, help="Share the host's network (off by default).")
@click.pass_obj
def sdk_shell(opts: Options, network: bool) -> None:
    """An interactive shell in the default build root (read-only; /tmp is writable)."""
    root = buildroot.ensure(say=_say)
    result = root.run(["bash", "-l"], _project_mounts(opts), {"PS1": "(clipbuild sdk) \\w# "},
                      network=network, check=False, capture=False)
    sys.exit(result.returncode)


@sdk.command("destroy")
@click.argument("keys", nargs=-1)
def sdk_destroy(keys: tuple[str, ...]) -> None:
    """Remove cached build roots: the ones named by KEY, or all of them."""
    roots = [r for r in buildroot.installed() if not keys or r.key in keys]
    unknown = set(keys) - {r.key for r in roots}
    if unknown:
        raise click.BadParameter(f"no build root {', '.join(sorted(unknown))} (see clipbuild sdk info)")
    for root in roots:
        buildroot.destroy(root)
        click.echo(f"removed {root.key}  {root.path}")


@cli.group()
def cache() -> None:
    """Check the work directory's object store.

    A run already checks each object it reuses (outputs present, sizes as committed, small outputs
    re-hashed) and re-runs a step whose object is damaged; `cache check` re-hashes everything.
    """


@cache.command("check")
@json_option
@click.pass_obj
def cache_check(opts: Options, as_json: bool) -> None:
    """Re-hash every committed object in WORKDIR/objects and say which steps would re-run.

    Exits 1 when an object is damaged; the next run of its species rebuilds it by itself.
    """
    results = Executor(opts.workdir).check_store()
    bad = [(key, problem, users) for key, problem, users in results if problem]
    if as_json:
        _emit_json({"objects": len(results), "damaged": [{"key": k, "problem": p, "steps": u}
                                                         for k, p, u in bad]})
    else:
        for key, problem, users in bad:
            click.echo(f"damaged {key[:16]}: {problem}; would re-run: {', '.join(users) or 'nothing (unused)'}")
        click.echo(f"{len(results)} objects checked in {opts.workdir / 'objects'}, {len(bad)} damaged")
    if bad:
        sys.exit(EXIT_FAILED)


@cli.command("fetch")
@click.argument("species")
@click.pass_obj
def fetch_cmd(opts: Options, species: str) -> None:
    """Download every distfile of the overlay from SPECIES' mirrors and check it against its Manifest.

    Distfiles are kept in ~/.cache/clipbuild/distfiles; builds only read them there, without network.
    """
    wanted, fetched = opts.fetch(species)
    click.echo(f"{wanted} distfiles verified, {fetched} fetched now: {fetch.store_dir()}")


@cli.command("build")
@click.argument("species")
@click.option("--explain", is_flag=True, help="List every package with why it was built or that it was reused.")
@click.option("--offline", is_flag=True, help="Do not fetch missing distfiles first; fail instead.")
@json_option
@click.pass_obj
def build_cmd(opts: Options, species: str, explain: bool, offline: bool, as_json: bool) -> None:
    """Build every package set of SPECIES from source with emerge, each into its own ROOT.

    First, missing distfiles are fetched (as clipbuild fetch does; --offline skips it); then the builds run
    with no network at all. Unchanged sets are cached; inside a set, a package whose inputs did not change is
    installed from the package store instead of being rebuilt.
    """
    plan = opts.plan(species)
    if not offline:
        opts.fetch(species)
    build_ids = [s.id for s in plan.steps if s.kind == "emerge-set"]
    executor, outcomes = opts.execute(plan.subset(build_ids), as_json)
    sets = []
    for outcome in outcomes:
        if outcome.step_id in build_ids:
            rows = json.loads((executor.output(species, outcome.step_id) / "packages.json").read_text())
            sets.append({"step": outcome.step_id, "status": outcome.status, "packages": rows})
    if as_json:
        _emit_json({"species": species, "sets": sets})
        return
    click.echo(format_build_summary(species, sets, explain), nl=False)


for _command in (*COMMANDS, *DISTFILES_COMMANDS, *JAIL_COMMANDS, *IMAGE_COMMANDS, *UPDATE_COMMANDS):
    cli.add_command(_command)


@cli.command("package")
@click.argument("species")
@json_option
@click.pass_obj
def package_cmd(opts: Options, species: str, as_json: bool) -> None:
    """Build SPECIES (as clipbuild build does) and wrap every binpkg as a CLIP .deb, unsigned.

    Prints each package set's folder of .debs. Sign them with clipbuild sign --role developer, then hand a
    batch to a controller (clipbuild countersign).
    """
    plan = opts.plan(species)
    opts.fetch(species)
    ids = [s.id for s in plan.steps if s.kind == "deb-set"]
    executor, _ = opts.execute(plan.subset(ids), as_json)
    executor.output(species, ids[0])  # raises if the step left no output
    folders = {step_id: opts.workdir / "steps" / species / step_id / "out" / "debs" for step_id in ids}
    if as_json:
        _emit_json({step_id: sorted(p.name for p in folder.glob("*.deb")) for step_id, folder in folders.items()})
    else:
        for step_id, folder in folders.items():
            click.echo(f"{step_id}: {len(list(folder.glob('*.deb')))} packages in {folder}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: known errors become `error: ...` lines and an exit code, unknown ones a traceback."""
    _VERBOSITY[0] = 0
    try:
        cli.main(args=argv, prog_name="clipbuild", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILED)
    except ClipbuildError as exc:
        for line in exc.lines():
            click.echo(f"error: {line}" if not line.startswith(" ") else line, err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug or an unforeseen state: one line here, the traceback in a log
        click.echo(f"error: unexpected {type(exc).__name__}: {exc}", err=True)
        click.echo(f"  traceback: {_crash_log()} (printed here with -vv); please report it", err=True)
        if _VERBOSITY[0] >= 2:
            traceback.print_exc()
        sys.exit(EXIT_FAILED)
    sys.exit(0)


def _crash_log() -> str:
    """Write the current exception's traceback under the cache's logs/ folder; its path (or why not)."""
    folder = cache_dir() / "logs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text(f"clipbuild {__version__}: {' '.join(sys.argv)}\n{traceback.format_exc()}", encoding="utf-8")
    except OSError as exc:
        return f"not written ({exc.strerror})"
    return str(path)
