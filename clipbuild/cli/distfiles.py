"""The distfiles commands: list (what is needed, pinned, present), mirror (fill a team mirror), pin (move a
Debian pin to a version the archive offers now)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from clipbuild.cli.context import Options, emit_json, json_option, say
from clipbuild.core.project import OVERLAY, Project
from clipbuild.gentoo import fetch, pinmove
from clipbuild.gentoo.pins import Pin
from clipbuild.spec.profile import resolve


@click.group("distfiles")
def distfiles() -> None:
    """Distfiles: list them, fill a mirror for a team or an offline network, move a Debian pin.

    Every distfile is pinned by its Manifest (size and digests) and, when it comes from Debian's archive, by
    the exact Debian package and version in the package's Pins file (docs/building.md).

    \b
      clipbuild distfiles list client               name, size, pin, where it came from, present or missing
      clipbuild distfiles mirror /srv/distfiles     every distfile, verified, ready to serve over HTTP
      clipbuild distfiles pin sys-kernel/clip-kernel   take the version Debian offers now
    """


@distfiles.command("list")
@click.argument("species", required=False)
@json_option
@click.pass_obj
def distfiles_list(opts: Options, species: str | None, as_json: bool) -> None:
    """Every distfile of the overlay: name, size, package, Debian pin, mirror it came from, state.

    SPECIES only checks that its profile resolves; every species builds from the same overlay.
    """
    project: Project = opts.project
    if species:
        resolve(project, species)
    origins = fetch.origins()
    rows = [{"name": d.name, "size": d.size, "package": d.package, "manifest": d.manifest,
             "pin": _pin_dict(d.pin), "origin": origins.get(d.name), "state": fetch.state_of(d)}
            for d in fetch.read_manifests(project.root / OVERLAY).values()]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        pin = f"{row['pin']['package']}={row['pin']['version']} ({row['pin']['kind']})" if row["pin"] else "-"
        click.echo(f"{row['name']}  {row['size']}  {row['package']}  pin {pin}  "
                   f"from {row['origin'] or '-'}  {row['state']}")


def _pin_dict(pin: Pin | None) -> dict[str, str] | None:
    return None if pin is None else {"kind": pin.kind, "package": pin.package, "version": pin.version,
                                     "where": pin.where}


@distfiles.command("mirror")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.argument("species", nargs=-1)
@click.pass_obj
def distfiles_mirror(opts: Options, folder: Path, species: tuple[str, ...]) -> None:
    """Fill FOLDER with every distfile the species need (default: client), verified.

    Missing ones are fetched first from each species' mirrors. Serve FOLDER over HTTP (any static web
    server) and list it first in sources.mirrors as http://HOST/PATH/, or carry it into an offline network
    and use it as dir:PATH.
    """
    project: Project = opts.project
    for name in species or ("client",):
        opts.fetch(name)
    wanted = list(fetch.read_manifests(project.root / OVERLAY).values())
    written = fetch.copy_to_mirror(wanted, folder)
    click.echo(f"{len(wanted)} distfiles in {folder} ({len(written)} written now, all verified)")


@distfiles.command("pin")
@click.argument("package")
@click.option("--version", "version", metavar="VERSION",
              help="The Debian version to pin [default: the newest the archive offers].")
@json_option
@click.pass_obj
def distfiles_pin(opts: Options, package: str, version: str | None, as_json: bool) -> None:
    """Move the Debian pins of PACKAGE (CATEGORY/PN) to a version the archive offers now.

    Downloads the new version, checks it, then rewrites the package's Manifest and Pins (and, when the
    upstream version changed, renames the ebuild and updates exact =CATEGORY/PN-VERSION atoms). Prints the
    old and new digests and what will rebuild. Nothing is written if anything fails.
    """
    project: Project = opts.project
    overlay = project.root / OVERLAY
    profiles = {path.stem: resolve(project, path.stem) for path in project.species_files()}
    suites = _debian_suites(p.sources.mirrors for p in profiles.values() if not p.abstract)
    result = pinmove.move_pins(overlay, package, suites, version, say)
    result.rebuilds = list(dict.fromkeys(
        name for moved in (package, *result.shared) for name in pinmove.reverse_dependencies(overlay, moved)))
    result.species = sorted(name for name, prof in profiles.items() if not prof.abstract and any(
        pinmove.atom_package(atom) in result.rebuilds for _, _, pset in prof.packages.sets() for atom in pset.atoms))
    if as_json:
        emit_json({"package": package, "moves": [{"distfile": m.distfile, "old": str(m.old), "new": str(m.new),
                                              "old_manifest": m.old_line, "new_manifest": m.new_line}
                                             for m in result.moves],
               "shared": result.shared, "renamed": result.renamed, "rewritten": result.rewritten,
               "rebuilds": result.rebuilds,
               "species": result.species})
        return
    if not result.moves:
        click.echo(f"{package}: nothing to move")
        return
    for move in result.moves:
        click.echo(f"{move.distfile}: {move.old} -> {move.new}")
        click.echo(f"  old: {move.old_line}")
        click.echo(f"  new: {move.new_line}")
    for other in result.shared:
        click.echo(f"moved along: {other} (its Manifest declares the same distfile)")
    for old, new in result.renamed:
        click.echo(f"renamed {old} -> {new}")
    for ebuild in result.rewritten:
        click.echo(f"updated the exact atoms in {ebuild}")
    click.echo(f"will rebuild: {', '.join(result.rebuilds)}")
    click.echo(f"species affected: {', '.join(result.species) or 'none'}")


def _debian_suites(mirror_lists: Any) -> list[str]:
    suites: list[str] = []
    for mirrors in mirror_lists:
        for mirror in mirrors:
            kind, _, where = mirror.partition(":")
            if kind in fetch.DEBIAN_KINDS and where not in suites:
                suites.append(where)
    return suites


COMMANDS = (distfiles,)
