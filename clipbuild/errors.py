"""The errors clipbuild raises, grouped by who must act on them.

Every error carries data (file, line, key, command, exit code, hint) and formats its own message. Only the CLI
turns them into text and exit codes: 2 for bad input (the user must fix a file or an argument), 1 for a run that
failed (a tool, a build step, a check).
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class ClipbuildError(Exception):
    """Root of every error clipbuild reports without a traceback."""

    exit_code = EXIT_FAILED

    def lines(self) -> list[str]:
        """The message, one entry per line, without the leading "error: "."""
        return [str(self)]


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


class InputError(ClipbuildError):
    """Bad input the user must fix: exit code 2."""

    exit_code = EXIT_BAD_INPUT


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


class ToolError(ClipbuildError):
    """An external program is missing or failed."""

    def __init__(self, message: str, *, command: str = "", exit_status: int | None = None,
                 stderr_tail: str = "", hint: str = ""):
        self.command = command
        self.exit_status = exit_status
        self.stderr_tail = stderr_tail
        self.hint = hint
        super().__init__(message)

    def lines(self) -> list[str]:
        out = [str(self.args[0])]
        if self.command:
            out.append(f"  command: {self.command}")
        if self.exit_status is not None:
            out.append(f"  exit status: {self.exit_status}")
        if self.stderr_tail:
            out.append("  stderr (last lines):")
            out.extend(f"    {line}" for line in self.stderr_tail.splitlines())
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return out


class StepError(ClipbuildError):
    """A build step failed; names the step, the cause, and where its log and partial output are."""

    def __init__(self, step_id: str, message: str, *, detail: list[str] | None = None, log: str = "",
                 kept: str = "", output_log: str = ""):
        self.step_id = step_id
        self.detail = detail or []
        self.log = log
        self.kept = kept
        self.output_log = output_log  # a log inside the step's output folder, relative to it
        super().__init__(f"step {step_id} failed: {message}")

    def lines(self) -> list[str]:
        out = [str(self), *self.detail]
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


class ImageError(ClipbuildError):
    """A disk image cannot be assembled, read or trusted as asked; says what to change."""

    def __init__(self, message: str, *, hint: str = ""):
        self.hint = hint
        super().__init__(message)

    def lines(self) -> list[str]:
        return [str(self), *([f"  hint: {self.hint}"] if self.hint else [])]


class VmCheckError(ClipbuildError):
    """A booted image did not reach its marker: says what the console showed and where the log is."""
