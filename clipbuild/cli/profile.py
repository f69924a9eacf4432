"""The `profile` commands: list, show (as written or resolved, with origins) and validate species profiles."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click

from clipbuild.cli.context import Options, emit_json, json_option
from clipbuild.cli.show import format_resolved
from clipbuild.core.errors import EXIT_BAD_INPUT, ProfileError
from clipbuild.spec.profile import list_profiles, resolve, species_path, validate_paths
from clipbuild.spec.yamlnodes import load_file, read_text


@click.group("profile")
def profile_group() -> None:
    """List, show and validate species profiles.

    Profiles are YAML files in profiles/. A profile inherits its parents (`inherits: base`): mappings
    deep-merge, scalars override, lists append; `!remove ITEM` drops an inherited list item and
    `!replace` replaces an inherited value (docs/profiles.md).
    """


@profile_group.command("list")
@json_option
@click.pass_obj
def profile_list(opts: Options, as_json: bool) -> None:
    """List the species in profiles/ with what they inherit."""
    summaries = list_profiles(opts.project)
    if as_json:
        emit_json([asdict(s) for s in summaries])
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


@profile_group.command("show")
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
            node, issues = load_file(path, project.display(path))
            if node is None:
                raise ProfileError(issues)
            emit_json(node.plain())
        else:
            text, issues = read_text(path, project.display(path))
            if text is None:
                raise ProfileError(issues)
            click.echo(text, nl=False)
        return
    prof = resolve(project, species)
    if as_json:
        data = prof.to_dict()
        data["origins"] = {k: str(v) for k, v in sorted(prof.origins.items())}
        emit_json(data)
    else:
        click.echo(format_resolved(prof), nl=False)


@profile_group.command("validate")
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
        emit_json({name: [{"file": i.loc.file if i.loc else None, "line": i.loc.line if i.loc else None,
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


COMMANDS = (profile_group,)
