"""The isolation a command runs in, as clipbuild.core.run takes it (`run(argv, sandbox=...)`) and errors keep
it (so a shell can be opened where a command failed: `--debug-shell`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sandbox:
    """The isolation a program runs in: the wrapper program and its options (bubblewrap, as the build root
    sets it up: root, mounts, environment, network), put before the program's own command line.

    A failure is the program's (its name and exit status), and the command shown is the whole sandboxed one,
    ready to paste. Only the wrapper itself must be installed on the host."""

    wrapper: tuple[str, ...]

    def command(self, argv: Sequence[str]) -> tuple[str, ...]:
        return (*self.wrapper, *argv)

    def failed(self, argv: Sequence[str], output: str) -> str:
        """What failed: the program, or the wrapper when it could not set the sandbox up (bwrap then says
        so on stderr, as "bwrap: ...")."""
        wrapper = Path(self.wrapper[0]).name
        if any(line.startswith(f"{wrapper}: ") for line in output.splitlines()[-3:]):
            return f"{wrapper} failed to start {Path(argv[0]).name} in its sandbox"
        return f"{Path(argv[0]).name} failed"
