"""The `sdk` commands: create, list, use and remove build roots."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from clipbuild.cli.context import Options, emit_json, json_option, say
from clipbuild.core.paths import cache_dir
from clipbuild.core.project import OVERLAY
from clipbuild.gentoo import buildroot, distcc, fetch
from clipbuild.gentoo.buildroot import Mount
from clipbuild.gentoo.portage_config import REPO_PATH


@click.group("sdk")
def sdk_group() -> None:
    """Create, inspect, use and remove build roots.

    The embedded default is a minimal Debian root (mmdebstrap) with a pinned Portage; --stage3 imports a
    Gentoo stage3 tarball instead. Build roots are cached under ~/.cache/clipbuild/sdk and shared by every
    work directory. Commands run in bubblewrap with the root read-only and the network off.
    """


@sdk_group.command("create")
@click.option("--stage3", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A Gentoo (Hardened) stage3 tarball to use instead of the embedded default.")
@click.option("--digest", help="The stage3's expected digest, sha512:HEX (required with --stage3).")
def sdk_create(stage3: Path | None, digest: str | None) -> None:
    """Make the build root (or find it cached) and print where it is."""
    if stage3 is not None:
        if not digest:
            raise click.UsageError("--stage3 needs --digest sha512:HEX: clipbuild checks it before unpacking")
        root = buildroot.import_stage3(stage3, digest, say=say)
    else:
        root = buildroot.ensure(say=say)
    click.echo(f"{root.key}  {root.path}")


@sdk_group.command("info")
@json_option
def sdk_info(as_json: bool) -> None:
    """List the cached build roots: key, kind, Portage version, size of the package list."""
    roots = buildroot.installed()
    if as_json:
        emit_json([{**r.info, "path": str(r.path)} for r in roots])
        return
    if not roots:
        click.echo("no build root yet: clipbuild sdk create")
    for root in roots:
        default = "  (default)" if root.recipe == buildroot.DEFAULT_RECIPE else ""
        click.echo(f"{root.key}  {root.recipe.kind:7} {root.info.get('portage', '?').split(' (')[0]}  "
                   f"{len(root.info.get('packages', []))} packages  {root.path}{default}")


def _project_mounts(opts: Options) -> list[Mount]:
    fetch.store_dir().mkdir(parents=True, exist_ok=True)
    return [Mount(opts.project.root / OVERLAY, REPO_PATH),
            Mount(fetch.store_dir(), "/var/cache/distfiles")]


@sdk_group.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--network", is_flag=True, help="Share the host's network (off by default).")
@click.pass_obj
def sdk_run(opts: Options, command: tuple[str, ...], network: bool) -> None:
    """Run COMMAND in the default build root: clipbuild sdk run -- emerge --info

    The overlay is mounted read-only at /var/db/repos/clip and the distfiles at /var/cache/distfiles.
    """
    root = buildroot.ensure(say=say)
    result = root.run(list(command), _project_mounts(opts), network=network, check=False, capture=False)
    sys.exit(result.returncode)


@sdk_group.command("shell")
@click.option("--network", is_flag=True, help="Share the host's network (off by default).")
@click.pass_obj
def sdk_shell(opts: Options, network: bool) -> None:
    """An interactive shell in the default build root (read-only; /tmp is writable)."""
    root = buildroot.ensure(say=say)
    result = root.run(["bash", "-l"], _project_mounts(opts), {"PS1": "(clipbuild sdk) \\w# "},
                      network=network, check=False, capture=False)
    sys.exit(result.returncode)


@sdk_group.command("destroy")
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


COMMANDS = (sdk_group,)


def _stop_on_sigterm() -> None:
    """SIGTERM stops as Ctrl-C does: the foreground program is killed and the sandbox goes with it."""
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)


@sdk_group.command("distccd")
@click.option("--listen", default="127.0.0.1", show_default=True, help="The address distccd listens on.")
@click.option("--port", type=click.IntRange(1, 65535), default=3632, show_default=True)
@click.option("--jobs", type=click.IntRange(1), default=2, show_default=True, help="Compiles at once.")
@click.option("--allow", multiple=True, metavar="ADDR[/BITS]",
              help="Clients served (repeatable); 127.0.0.1 by default when listening on loopback.")
@click.option("--lifetime", type=click.IntRange(1), help="Stop after this many seconds.")
@click.option("--stats-port", type=click.IntRange(1, 65535), help="Serve distccd's statistics on this port.")
@click.option("--log", type=click.Path(path_type=Path, dir_okay=False),
              help="distccd's log (default: ~/.cache/clipbuild/logs/distccd-PORT.log).")
def sdk_distccd(listen: str, port: int, jobs: int, allow: tuple[str, ...], lifetime: int | None,
                stats_port: int | None, log: Path | None) -> None:
    """Run a distcc helper from the default build root, in the foreground (Ctrl-C or SIGTERM stop it).

    The helper compiles with the build root's own gcc, so every helper runs the identical compiler. Builders
    name it with clipbuild build SPECIES --distcc HOST:PORT/JOBS. On one machine, for tests:

      clipbuild sdk distccd --listen 127.0.0.1 --port 3700 --jobs 2 --lifetime 3600
    """
    root = buildroot.ensure(say=say)
    helper = distcc.Helper(listen, port, jobs, allow, lifetime, stats_port,
                           (log or cache_dir() / "logs" / f"distccd-{port}.log").absolute())
    _stop_on_sigterm()
    try:
        status = distcc.serve(root, helper, say)
    except KeyboardInterrupt:
        say(f"distccd {listen}:{port} stopped; its log: {helper.log}")
        status = 0
    sys.exit(status)
