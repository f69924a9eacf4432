"""The clipbuild command line: parse, call one function, print. Exit codes: 0 success, 1 failed run, 2 bad input."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from clipbuild import __version__
from clipbuild.errors import EXIT_BAD_INPUT, EXIT_FAILED, ClipbuildError
from clipbuild.executor import Executor
from clipbuild.plan import compile_plan
from clipbuild.profile import list_profiles, resolve, species_path, validate_paths
from clipbuild.project import Project, find_project
from clipbuild.report import stderr_reporter
from clipbuild.show import format_plan, format_resolved
from clipbuild.yamlnodes import load_file


@dataclass
class Options:
    workdir: Path
    project_dir: Path | None
    verbose: int

    @property
    def project(self) -> Project:
        return find_project(self.project_dir)


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
@click.option("-v", "--verbose", count=True, help="More output: -v shows commands run, -vv debug details.")
@click.pass_context
def cli(ctx: click.Context, workdir: Path, project_dir: Path | None, verbose: int) -> None:
    """Build hardened, multi-level OS images the CLIP OS 4 way.

    A species profile (profiles/SPECIES.yaml) says what goes into a system. clipbuild compiles it into a
    plan of steps (build root, Portage builds, signed .deb packages, jails, A/B disk image) and runs the
    steps whose inputs changed.

    \b
    Start with:
      clipbuild profile list              the species and what they inherit
      clipbuild profile show client --resolved
      clipbuild plan client --explain     what would run, and why
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = Options(workdir, project_dir, verbose)


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
    project = opts.project
    plan = compile_plan(resolve(project, species), project)
    statuses = Executor(opts.workdir).status(plan) if explain else None
    if as_json:
        data = plan.to_dict()
        if statuses is not None:
            data["status"] = [asdict(s) for s in statuses]
        _emit_json(data)
    else:
        click.echo(format_plan(plan, statuses), nl=False)


@cli.command("run")
@click.argument("species")
@json_option
@click.pass_obj
def run_cmd(opts: Options, species: str, as_json: bool) -> None:
    """Run the plan of SPECIES: every step whose cache key changed, each with the reason it re-ran.

    Steps whose inputs did not change are reused from the work directory (--workdir). Progress goes to
    stderr, one line per step (--json: one JSON object per line).
    """
    project = opts.project
    plan = compile_plan(resolve(project, species), project)
    Executor(opts.workdir, reporter=stderr_reporter(as_json)).run(plan)


def main(argv: list[str] | None = None) -> None:
    """Entry point: known errors become `error: ...` lines and an exit code, unknown ones a traceback."""
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
    sys.exit(0)
