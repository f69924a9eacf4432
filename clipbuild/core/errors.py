"""The errors clipbuild raises, grouped by who must act on them, all declared here.

Every error carries data and formats its own message in one shape: a first line, then lines of detail
(indented by whoever raised it), then `  hint: ...` lines saying what to do. Only the CLI turns them into
text and exit codes: 2 for bad input (the user must fix a file or an argument), 1 for a run that failed (a
tool, a build step, a check).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clipbuild.core.sandbox import Sandbox

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class ClipbuildError(Exception):
    """Root of every error clipbuild reports without a traceback."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str = "", *, detail: Sequence[str] = (), hint: str | Sequence[str] = ""):
        self.detail = list(detail)
        self.hints = [hint] if isinstance(hint, str) else list(hint)
        super().__init__(message)

    @property
    def hint(self) -> str:
        return "\n".join(h for h in self.hints if h)

    def details(self) -> list[str]:
        """The lines between the message and the hints."""
        return self.detail

    def lines(self) -> list[str]:
        """The message, one entry per line, without the leading "error: "."""
        return [str(self), *self.details(), *self.hint_lines()]

    def hint_lines(self) -> list[str]:
        return [f"  hint: {hint}" for hint in self.hints if hint]


@dataclass(frozen=True)
class Location:
    """Where something was written: a file and a 1-based line (0 when unknown)."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Issue:
    """One problem in a user's input: where, which key, what is wrong, and how to fix it."""

    loc: Location | None
    key: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        parts = [str(self.loc)] if self.loc else []
        if self.key:
            parts.append(self.key)
        text = ": ".join([*parts, self.message])
        return f"{text} ({self.hint})" if self.hint else text


# -- bad input: exit code 2 ------------------------------------------------------------------------------------


class InputError(ClipbuildError):
    """Bad input the user must fix: exit code 2."""

    exit_code = EXIT_BAD_INPUT


class NotAFile(InputError):
    """A path where a regular file is expected holds a directory, a FIFO, a device, a link or nothing."""


class ProfileError(InputError):
    """One or more problems in species profiles, all reported at once."""

    def __init__(self, issues: list[Issue]):
        self.issues = sorted(issues, key=_issue_order)
        super().__init__("\n".join(str(i) for i in self.issues))

    def lines(self) -> list[str]:
        return [str(i) for i in self.issues]


def _issue_order(issue: Issue) -> tuple[str, int, str]:
    if issue.loc is None:
        return ("", 0, issue.key)
    return (issue.loc.file, issue.loc.line, issue.key)


class ProjectError(InputError):
    """The project tree (profiles/, jails/, overlays/ ...) is missing or malformed."""


# -- tools, steps, the cache -----------------------------------------------------------------------------------


class ToolError(ClipbuildError):
    """An external program is missing or failed: the command (ready to paste), its exit status, the tail of
    its error output, and the sandbox it ran in, if any."""

    def __init__(self, message: str, *, command: str = "", exit_status: int | None = None,
                 stderr_tail: str = "", hint: str = "", sandbox: Sandbox | None = None):
        self.command = command
        self.exit_status = exit_status
        self.stderr_tail = stderr_tail
        self.sandbox = sandbox
        super().__init__(message, hint=hint)

    def details(self) -> list[str]:
        out = [f"  command: {self.command}"] if self.command else []
        if self.exit_status is not None:
            out.append(f"  exit status: {self.exit_status}")
        if self.stderr_tail:
            out.append("  stderr (last lines):")
            out.extend(f"    {line}" for line in self.stderr_tail.splitlines())
        return out


class StepError(ClipbuildError):
    """A build step failed; names the step, the cause, and where its log and partial output are. `sandbox` is
    the one the failing command ran in, when it ran in the build root."""

    def __init__(self, step_id: str, message: str, *, detail: Sequence[str] = (), hint: str | Sequence[str] = "",
                 log: str = "", kept: str = "", output_log: str = "", sandbox: Sandbox | None = None):
        self.step_id = step_id
        self.sandbox = sandbox
        self.log = log
        self.kept = kept
        self.output_log = output_log  # a log inside the step's output folder, relative to it
        super().__init__(f"step {step_id} failed: {message}", detail=detail, hint=hint)

    def lines(self) -> list[str]:
        out = super().lines()
        if self.output_log:
            out.append(f"  package log: {self.kept}/{self.output_log}" if self.kept else
                       f"  package log: {self.output_log} (in the step's output)")
        if self.log:
            out.append(f"  log: {self.log}")
        if self.kept:
            out.append(f"  partial output kept for inspection: {self.kept}")
        return out


class CacheError(ClipbuildError):
    """The work directory or object cache cannot be used (locked, corrupt, unwritable)."""


# -- Portage builds ---------------------------------------------------------------------------------------------


class BuildRootError(ClipbuildError):
    """The build root cannot be made or used."""


class PinGone(ClipbuildError):
    """The pinned Debian version is no longer offered by the archive; says what it offers now."""

    def __init__(self, package: str, version: str, offered: Sequence[str]):
        self.offered = list(offered)
        super().__init__(f"{package} {version} is no longer offered (see below)")


class FetchError(ClipbuildError):
    """Distfiles no mirror could provide, each with what every mirror said. Exit 2 when a pin must move."""

    def __init__(self, message: str, *, detail: Sequence[str] = (), hint: str | Sequence[str] = "",
                 pin_gone: bool = False):
        if pin_gone:
            self.exit_code = EXIT_BAD_INPUT
        super().__init__(message, detail=detail, hint=hint)


class BinhostError(ClipbuildError):
    """A binhost whose index cannot be read, or a binary package that is not what its index says (size,
    digests, package): the build says so and compiles the package instead."""


# -- packages and signatures ------------------------------------------------------------------------------------


class UnsafeArchive(ClipbuildError):
    """An archive member would escape or corrupt the tree it is extracted into."""


class PackagingError(ClipbuildError):
    """A binpkg cannot become a CLIP package; the message names the package and the rule."""


class SigningError(ClipbuildError):
    """A package cannot be signed as asked; the message says why."""


class AppendRecordRefused(ClipbuildError):
    """A record of an interrupted append beside a file is not clipbuild's or does not match the file: nothing
    was changed; the message says what does not match."""


class BatchRefused(ClipbuildError):
    """A controller batch fails the developer check: nothing was countersigned; each package says why."""


class RepositoryError(ClipbuildError):
    """Packages cannot be published as asked; the message lists each problem."""


# -- images and updates -----------------------------------------------------------------------------------------


class ImageError(ClipbuildError):
    """A disk image cannot be assembled, read or trusted as asked; says what to change."""


class VmCheckError(ClipbuildError):
    """A booted image did not reach its marker: says what the console showed and where the log is."""


class UpdateRefused(ClipbuildError):
    """The repository cannot be applied; every reason is listed and nothing was written."""


class AppsUpdateFailed(ClipbuildError):
    """dpkg failed; the apps were rolled back and the image was not written."""


# -- malformed data inside pure parsers (caught and turned into one of the errors above) -----------------------


class SizeError(ValueError):
    """A size a user wrote cannot be read; `hint` says how to write it."""

    def __init__(self, message: str, hint: str = "use a whole number with a binary unit: 512MiB, 2GiB"):
        super().__init__(message)
        self.hint = hint


class ArError(ClipbuildError, ValueError):
    """A malformed archive; the message says what and where."""


class ElfError(ClipbuildError, ValueError):
    """A file that starts as an ELF file but cannot be read as one (truncated, an offset or size out of the file,
    a malformed table); the message says which part and where."""


class LayoutError(ClipbuildError, ValueError):
    """The package is not laid out as a CLIP package; the message says which rule failed."""
