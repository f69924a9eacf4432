"""The clipbuild command line: parse, call one function, print. Exit codes: 0 success, 1 failed run, 2 bad input.

The root command and its global options; every command group lives in its own module of this package and
receives the typed context (clipbuild.cli.context.Options). Only this module turns errors into text and exit
codes."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path

import click

from clipbuild import __version__
from clipbuild.cli import (
    binhost,
    build,
    distfiles,
    image,
    ipsec,
    jails,
    lab,
    measurements,
    profile,
    sdk,
    signing,
    update,
)
from clipbuild.cli.context import Options
from clipbuild.core.errors import EXIT_FAILED, ClipbuildError
from clipbuild.core.paths import cache_dir

_VERBOSITY = [0]  # -v count of the running command, for the last-resort error handler in main()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="clipbuild")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("build"), show_default=True,
              envvar="CLIPBUILD_WORKDIR", help="Where build steps keep their cache and outputs.")
@click.option("--project", "project_dir", type=click.Path(path_type=Path, file_okay=False),
              envvar="CLIPBUILD_PROJECT",
              help="Project root holding profiles/ and jails/ [default: nearest above the current folder].")
@click.option("--sdk", "sdk_key", metavar="KEY", envvar="CLIPBUILD_SDK",
              help="Build in this cached build root (clipbuild sdk info) [default: the embedded default].")
@click.option("-v", "--verbose", count=True, help="More output: -v shows commands run, -vv debug details.")
@click.pass_context
def cli(ctx: click.Context, workdir: Path, project_dir: Path | None, sdk_key: str | None, verbose: int) -> None:
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
    ctx.obj = Options(workdir, project_dir, verbose, sdk_key)
    _VERBOSITY[0] = verbose


for _group in (profile, build, binhost, sdk, signing, ipsec, distfiles, jails, image, measurements, update, lab):
    for _command in _group.COMMANDS:
        cli.add_command(_command)
signing.pki_group.add_command(ipsec.ipsec_group)


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
