"""clipbuild binhost export: the package store served to other machines as a Portage binhost
(clipbuild.gentoo.binhost; docs/scale-out.md)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import click

from clipbuild.cli.context import Options, emit_json, json_option, say
from clipbuild.core.errors import CacheError, InputError
from clipbuild.core.executor import Executor
from clipbuild.gentoo import binhost, binpkgs, stepobjects
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
@click.option("--objects", "kinds", default=",".join(stepobjects.DEFAULT_KINDS), show_default=True,
              metavar="KIND,...", help="Also export the committed step objects of these step kinds, from the latest "
                                       "runs of the species (every species of the work directory without --species).")
@click.option("--no-objects", is_flag=True, help="Export binpkgs only, no step objects.")
@json_option
@click.pass_obj
def export_cmd(opts: Options, folder: Path, species: tuple[str, ...], kinds: str, no_objects: bool,
               as_json: bool) -> None:
    """Write packages of the store into FOLDER as a Portage binhost: CAT/PN/PF-N.gpkg.tar and a Packages index
    (Portage's format, with each package's clipbuild key and SHA256/BLAKE2B digests).

    An export adds to what FOLDER holds: binpkgs already there with the index's digests are not copied again,
    and every file is written under a temporary name, then renamed, so a binhost being served is never seen
    half-written. Prints the index's SHA-256: a consumer pinning it (--binhost URL#sha256=HEX) takes nothing
    but this index.
    """
    keys = _species_keys(opts, species) if species else binpkgs.all_keys()
    objects = stepobjects.ExportedObjects()
    if not no_objects:
        wanted = [kind for kind in kinds.split(",") if kind]
        if unknown := sorted(set(wanted) - set(STEP_KINDS)):
            raise InputError(f"--objects: no step kind {', '.join(unknown)}", hint=f"kinds: {', '.join(STEP_KINDS)}")
        objects = stepobjects.export(folder, stepobjects.latest_objects(opts.workdir, species, wanted))
    header = {stepobjects.HEADER_FIELD: objects.index_sha256} if objects.index_sha256 else {}
    done = binhost.export(folder, dict.fromkeys(keys), say if opts.verbose else lambda message: None, header)
    if as_json:
        emit_json({"folder": str(folder), "packages": done.packages, "written": done.written, "kept": done.kept,
                   "index_sha256": done.index_sha256, "index_changed": done.index_changed,
                   "objects": {"written": objects.written, "kept": objects.kept,
                               "index_sha256": objects.index_sha256}})
        return
    click.echo(f"{folder}: {done.packages} packages in the index ({len(done.written)} written now, "
               f"{len(done.kept)} already there); index SHA-256 {done.index_sha256}")
    if objects.index_sha256:
        click.echo(f"  step objects: {len(objects.written)} written now, {len(objects.kept)} already there")
    click.echo(f"  serve it over HTTP and build with --binhost http://HOST/PATH/#sha256={done.index_sha256}")


@binhost_group.command("serve")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--listen", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on (0: any free port).")
def serve_cmd(folder: Path, listen: str, port: int) -> None:
    """Serve FOLDER over plain HTTP until interrupted (Python's http.server): for trying a binhost out or a
    LAN lab. A team serves its binhost with its usual web server (any static file server will do)."""
    with binhost.served(folder, listen, port) as url:
        click.echo(f"serving {folder} at {url} (Ctrl-C stops)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            click.echo("stopped")


def _species_keys(opts: Options, species: tuple[str, ...]) -> list[str]:
    """The keys of every package the latest build of each species used, from its sets' packages.json (sets
    never built in this work directory left out: `clipbuild run SPECIES --step build/rm-core` exports one)."""
    executor = Executor(opts.workdir, STEP_KINDS)
    keys = []
    for name in species:
        built = []
        for step in opts.plan(name).steps:
            if step.kind == "emerge-set":
                try:
                    built.append(executor.output(name, step.id))
                except CacheError:  # never built here
                    continue
        if not built:
            raise InputError(f"no package set of {name} was built in {opts.workdir}",
                             hint=f"run clipbuild build {name} first (or give --workdir)")
        keys += [row["key"] for out in built for row in json.loads((out / "packages.json").read_text())]
    return keys


COMMANDS = (binhost_group,)
