"""clipbuild binhost export: the package store served to other machines as a Portage binhost
(clipbuild.gentoo.binhost; docs/scale-out.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from clipbuild.cli.context import Options, emit_json, json_option, say
from clipbuild.core.executor import Executor
from clipbuild.gentoo import binhost, binpkgs
from clipbuild.stages.pipeline import STEP_KINDS


@click.group("binhost")
def binhost_group() -> None:
    """Share built packages with other machines: a Portage binhost made of the package store.

    \b
    On the machine that builds (a team's builder, a CI job):
      clipbuild build client && clipbuild build gateway
      clipbuild binhost export /srv/binhost --species client --species gateway
    then serve /srv/binhost over HTTP; on the others:
      clipbuild build client --binhost http://builder/binhost/     (or CLIPBUILD_BINHOST=URL)
    """


@binhost_group.command("export")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.option("--species", "species", multiple=True, metavar="SPECIES",
              help="Export the packages of this species' latest build in the work directory (repeatable) "
                   "[default: every package of the store].")
@json_option
@click.pass_obj
def export_cmd(opts: Options, folder: Path, species: tuple[str, ...], as_json: bool) -> None:
    """Write packages of the store into FOLDER as a Portage binhost: CAT/PN/PF-N.gpkg.tar and a Packages index
    (Portage's format, with each package's clipbuild key and SHA256/BLAKE2B digests).

    An export adds to what FOLDER holds: binpkgs already there with the index's digests are not copied again,
    and every file is written under a temporary name, then renamed, so a binhost being served is never seen
    half-written. Prints the index's SHA-256: a consumer pinning it (--binhost URL#sha256=HEX) takes nothing
    but this index.
    """
    keys = _species_keys(opts, species) if species else binpkgs.all_keys()
    done = binhost.export(folder, dict.fromkeys(keys), say if opts.verbose else lambda message: None)
    if as_json:
        emit_json({"folder": str(folder), "packages": done.packages, "written": done.written, "kept": done.kept,
                   "index_sha256": done.index_sha256, "index_changed": done.index_changed})
        return
    click.echo(f"{folder}: {done.packages} packages in the index ({len(done.written)} written now, "
               f"{len(done.kept)} already there); index SHA-256 {done.index_sha256}")
    click.echo(f"  serve it over HTTP and build with --binhost http://HOST/PATH/#sha256={done.index_sha256}")


def _species_keys(opts: Options, species: tuple[str, ...]) -> list[str]:
    """The keys of every package the latest build of each species used, from its sets' packages.json."""
    executor = Executor(opts.workdir, STEP_KINDS)
    keys = []
    for name in species:
        for step in opts.plan(name).steps:
            if step.kind == "emerge-set":
                rows = json.loads((executor.output(name, step.id) / "packages.json").read_text())
                keys += [row["key"] for row in rows]
    return keys


COMMANDS = (binhost_group,)
