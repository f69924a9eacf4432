"""The one place clipbuild runs external programs.

Every other module calls `run()` (a test enforces that no other module imports subprocess). It logs the
command, runs it with a clean C locale, and turns failures into a ToolError that prints the exact command
(ready to paste, sandbox wrapper included), the exit status and the tail of stderr. A program that is not
installed is reported with the Debian package that provides it, read from host-tools.tsv, the same list
`make setup` and CI install from.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shlex
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from clipbuild.core.errors import ToolError
from clipbuild.core.sandbox import Sandbox

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20


@dataclass(frozen=True)
class HostTool:
    program: str  # "-" for a package that provides files rather than a program
    package: str
    purpose: str


@cache
def host_tools() -> tuple[HostTool, ...]:
    """The host-tools.tsv table: program, Debian package, what for."""
    text = resources.files("clipbuild").joinpath("host-tools.tsv").read_text(encoding="utf-8")
    tools = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        program, package, purpose = [*line.split("\t"), "", ""][:3]
        tools.append(HostTool(program, package, purpose))
    return tuple(tools)


def debian_package_for(program: str) -> str | None:
    name = Path(program).name
    for tool in host_tools():
        if tool.program == name:
            return tool.package
    return None


def missing_tool_error(program: str) -> ToolError:
    package = debian_package_for(program)
    hint = (f"install it with: apt-get install {package}" if package
            else "install it, or add it to clipbuild/host-tools.tsv with the Debian package providing it")
    return ToolError(f"required program '{program}' is not installed", hint=hint)


def require(*programs: str) -> None:
    """Fail early, naming the Debian packages, when any of `programs` is missing."""
    missing = [p for p in programs if shutil.which(p) is None]
    if not missing:
        return
    if len(missing) == 1:
        raise missing_tool_error(missing[0])
    packages = sorted({debian_package_for(p) or p for p in missing})
    raise ToolError(f"required programs are not installed: {', '.join(missing)}",
                    hint=f"install them with: apt-get install {' '.join(packages)}")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment with a fixed C locale, plus `extra`."""
    env = dict(os.environ)
    env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
    env.pop("LANGUAGE", None)
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def format_command(args: Sequence[str], env: Mapping[str, str] | None = None,
                   cwd: Path | str | None = None) -> str:
    """The command as a shell line a user can paste: `cd DIR && VAR=x prog args`."""
    words = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    words += [shlex.quote(str(a)) for a in args]
    line = " ".join(words)
    return f"cd {shlex.quote(str(cwd))} && {line}" if cwd else line


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass(frozen=True)
class _Command:
    """A command about to run: the program's own argv, the full one (sandbox included), the shell line a user
    can paste, and the environment."""

    argv: tuple[str, ...]
    full: tuple[str, ...]
    shown: str
    env: dict[str, str]
    sandbox: Sandbox | None

    def failed(self, output: str) -> str:
        return self.sandbox.failed(self.argv, output) if self.sandbox else f"{Path(self.argv[0]).name} failed"


def _prepare(args: Sequence[str | os.PathLike[str]], sandbox: Sandbox | None, env: Mapping[str, str] | None,
             cwd: Path | str | None, *, replace_env: bool = False) -> _Command:
    """Check the program is installed (the sandbox's wrapper, for a sandboxed one) and log the command."""
    argv = tuple(str(a) for a in args)
    if not argv:
        raise ValueError("run() needs a program")
    full = sandbox.command(argv) if sandbox else argv
    full_env = dict(env or {}) if replace_env else clean_env(env)
    shown = format_command(full, env, cwd)
    log.info("run: %s", shown)
    if shutil.which(full[0], path=full_env.get("PATH")) is None and not os.path.isfile(full[0]):
        raise missing_tool_error(full[0])
    return _Command(argv, full, shown, full_env, sandbox)


def run(args: Sequence[str | os.PathLike[str]], *, sandbox: Sandbox | None = None, cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None, input: str | None = None, check: bool = True,
        capture: bool = True, timeout: float | None = None, replace_env: bool = False) -> Result:
    """Run a program and wait for it.

    `sandbox` runs it isolated (in a build root). `env` adds to a clean copy of the environment (or replaces
    it with `replace_env=True`); a sandbox sets the program's own environment. With `capture`, stdout and
    stderr are returned as text; without it they go to the terminal (for interactive shells). With `check`,
    a non-zero exit raises ToolError.
    """
    cmd = _prepare(args, sandbox, env, cwd, replace_env=replace_env)
    try:
        proc = subprocess.run(cmd.full, cwd=cwd, env=cmd.env, input=input, text=True, timeout=timeout,
                              capture_output=capture, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{cmd.argv[0]} did not finish within {timeout:g} s", command=cmd.shown,
                        stderr_tail=_tail(_as_text(exc.stderr)), sandbox=sandbox) from None
    except OSError as exc:
        raise ToolError(f"cannot run {cmd.full[0]}: {exc.strerror}", command=cmd.shown) from None
    result = Result(cmd.full, proc.returncode, proc.stdout or "", proc.stderr or "")
    if check and proc.returncode != 0:
        raise ToolError(cmd.failed(result.stderr), command=cmd.shown, exit_status=proc.returncode,
                        stderr_tail=_tail(result.stderr or result.stdout), sandbox=sandbox)
    return result


def run_bytes(args: Sequence[str | os.PathLike[str]], data: bytes, *, timeout: float | None = None) -> bytes:
    """Run a filter program on binary data: `data` in, its standard output back."""
    argv = tuple(str(a) for a in args)
    shown = format_command(argv)
    log.info("run: %s", shown)
    if shutil.which(argv[0]) is None:
        raise missing_tool_error(argv[0])
    proc = subprocess.run(argv, input=data, capture_output=True, env=clean_env(), timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ToolError(f"{Path(argv[0]).name} failed", command=shown, exit_status=proc.returncode,
                        stderr_tail=_tail(proc.stderr.decode(errors="replace")))
    return proc.stdout


def alive(pid: int) -> bool:
    """Whether process `pid` exists (one we may not signal counts; so does a pid too large to ask about)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def spawn(args: Sequence[str | os.PathLike[str]], log_path: Path, *, env: Mapping[str, str] | None = None) -> int:
    """Start a program in the background, in its own session, its output appended to `log_path`; its pid.
    The caller owns it from then on (it outlives clipbuild): give it a bounded life (e.g. under timeout(1))."""
    cmd = _prepare(args, None, env, None)
    try:
        with log_path.open("ab") as out:
            proc = subprocess.Popen(cmd.full, env=cmd.env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        raise ToolError(f"cannot run {cmd.full[0]}: {exc.strerror}", command=cmd.shown) from None
    return proc.pid


def run_streaming(args: Sequence[str | os.PathLike[str]], on_line: Callable[[str], None], *,
                  sandbox: Sandbox | None = None, env: Mapping[str, str] | None = None,
                  cwd: Path | str | None = None, tail_lines: int = STDERR_TAIL_LINES) -> Result:
    """Run a program (in `sandbox`, if given), handing each line of its merged stdout and stderr to `on_line`
    as it comes.

    Raises ToolError with the last `tail_lines` lines when it fails. The returned Result holds the tail only.
    """
    cmd = _prepare(args, sandbox, env, cwd)
    tail: deque[str] = deque(maxlen=tail_lines)
    with subprocess.Popen(cmd.full, cwd=cwd, env=cmd.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            on_line(line)
        status = proc.wait()
    result = Result(cmd.full, status, "\n".join(tail), "")
    if status != 0:
        raise ToolError(cmd.failed(result.stdout), command=cmd.shown, exit_status=status, stderr_tail=result.stdout,
                        sandbox=sandbox)
    return result


def run_watch(args: Sequence[str | os.PathLike[str]], on_line: Callable[[str], bool], *, timeout: float,
              env: Mapping[str, str] | None = None,
              keys: Callable[[bytes], bytes | None] | None = None) -> tuple[str, int | None]:
    """Run a program, handing each line of its merged output to `on_line` until `on_line` returns True.

    Then the program is terminated. Returns ("stopped", None), ("exited", status) or ("timeout", None); a
    program still running at the end is terminated, then killed. With `keys`, the output since the last complete
    line is shown to it as it comes, and what it returns is typed on the program's standard input (a
    console prompt answered as a user would).
    """
    argv = tuple(str(a) for a in args)
    full_env = clean_env(env)
    log.info("run: %s", format_command(argv, env))
    if shutil.which(argv[0], path=full_env.get("PATH")) is None and not os.path.isfile(argv[0]):
        raise missing_tool_error(argv[0])
    deadline = time.monotonic() + timeout
    stdin = subprocess.PIPE if keys else subprocess.DEVNULL
    with subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=stdin) as proc:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        outcome: tuple[str, int | None] = ("timeout", None)
        pending = b""
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if not selector.select(timeout=min(left, 1.0)):
                    continue
                chunk = proc.stdout.read() or b""
                if not chunk:
                    outcome = ("exited", proc.wait())
                    break
                if keys and proc.stdin and (typed := keys(pending + chunk)):
                    # Unbuffered, so nothing is left for close() to flush into a closed pipe; a program that
                    # stopped reading (or exited) has nothing more to be answered.
                    with contextlib.suppress(BrokenPipeError):
                        os.write(proc.stdin.fileno(), typed)
                *lines, pending = (pending + chunk).split(b"\n")
                if any(on_line(line.decode(errors="replace").rstrip("\r")) for line in lines):
                    outcome = ("stopped", None)
                    break
        if pending and outcome[0] != "stopped":
            on_line(pending.decode(errors="replace").rstrip("\r"))
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return outcome


def _as_text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
