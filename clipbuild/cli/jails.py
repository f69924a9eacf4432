"""The `jails` commands: render, check, show."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click

from clipbuild.cli.context import Options, emit_json, json_option
from clipbuild.core.errors import EXIT_BAD_INPUT, ProfileError
from clipbuild.core.project import Project
from clipbuild.jails import definitions, realise, rules
from clipbuild.spec.profile import resolve


def checked(project: Project, species: str) -> tuple[list[definitions.Jail], list[rules.ExecException]]:
    """The species' jails, loaded and checked; raises ProfileError (exit 2) on any broken rule."""
    loaded = definitions.load_all(project, resolve(project, species).jails)
    issues, exceptions = rules.check(loaded, rules.load_policy(project))
    if issues:
        raise ProfileError(issues)
    return loaded, exceptions


@click.group("jails")
def jails_group() -> None:
    """Render the species' jails from jails/, check them against CLIP's isolation rules, inspect them."""


@jails_group.command("render")
@click.argument("species")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Where to write etc/jails/<name>/..., etc/conf.d/jail-net and the jail trees.")
@json_option
@click.pass_obj
def render_cmd(opts: Options, species: str, out: Path, as_json: bool) -> None:
    """Render every jail of SPECIES into OUT (checked first: nothing is written if a rule breaks)."""
    loaded, _ = checked(opts.project, species)
    rendered = definitions.render(opts.project, loaded, species)
    definitions.write(rendered, out)
    if as_json:
        emit_json({"files": list(rendered.files), "directories": list(rendered.directories)}, sort_keys=False)
    else:
        click.echo(f"{len(loaded)} jails, {len(rendered.files)} files rendered into {out}")


@jails_group.command("check")
@click.argument("species")
@json_option
@click.pass_obj
def check_cmd(opts: Options, species: str, as_json: bool) -> None:
    """Check SPECIES' jails; prints the writable-and-executable exceptions and every broken rule (exit 2)."""
    project = opts.project
    loaded = definitions.load_all(project, resolve(project, species).jails)
    issues, exceptions = rules.check(loaded, rules.load_policy(project))
    if as_json:
        emit_json({"ok": not issues, "jails": [j.name for j in loaded], "exceptions": [asdict(e) for e in exceptions],
                   "problems": [str(i) for i in issues]}, sort_keys=False)
    else:
        for exception in exceptions:
            click.echo(f"allowed: {exception}")
        if not issues:
            click.echo(f"ok: {len(loaded)} jails of {species} follow the isolation rules")
    if issues:
        if not as_json:
            for issue in issues:
                click.echo(f"error: {issue}", err=True)
        sys.exit(EXIT_BAD_INPUT)


@jails_group.command("show")
@click.argument("species")
@click.argument("name")
@json_option
@click.pass_obj
def show_cmd(opts: Options, species: str, name: str, as_json: bool) -> None:
    """Show jail NAME of SPECIES: its settings and its mounts with their flags, as a table."""
    loaded, _ = checked(opts.project, species)
    jail = next((j for j in loaded if j.name == name), None)
    if jail is None:
        raise click.BadParameter(f"{species} has no jail {name} ({', '.join(j.name for j in loaded)})")
    if as_json:
        emit_json(jail.to_dict())
        return
    click.echo(f"{jail.name}: {jail.description}")
    click.echo(f"  context {jail.context}  root {jail.root}  cmd {jail.cmd}  addr {' '.join(jail.addr)}")
    click.echo(f"  bcaps {' '.join(jail.bcaps) or '-'}")
    rows = [("source", "destination", "ro", "nosuid", "nodev", "noexec", "origin")]
    for index, mount in enumerate(jail.mounts):
        flags = ["yes" if flag in mount.flags.words() else "-" for flag in ("ro", "nosuid", "nodev", "noexec")]
        rows.append((mount.src, mount.dst, *flags, str(jail.origin(f"mounts[{index}]") or "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@jails_group.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("species")
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--userland", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="A tree to put in the jail's root (e.g. a built ROOT) [default: busybox-static].")
@click.pass_obj
def run_cmd(opts: Options, species: str, name: str, command: tuple[str, ...], userland: Path | None) -> None:
    """Run COMMAND in jail NAME of SPECIES, realised for real without root.

    Namespaces, the jail's fstab mounts with their ro/nosuid/nodev/noexec flags, its capability bounding set:
    clipbuild jails run client user -- sh -c 'grep CapBnd /proc/self/status'
    """
    loaded, _ = checked(opts.project, species)
    jail = next((j for j in loaded if j.name == name), None)
    if jail is None:
        raise click.BadParameter(f"{species} has no jail {name} ({', '.join(j.name for j in loaded)})")
    rendered = definitions.render(opts.project, loaded, species)
    result = realise.run_in_jail(jail, rendered, command, userland, capture=False)
    sys.exit(result.returncode)


COMMANDS = (jails_group,)
