"""Package self-tests at boot: which ones a slot ships, and what the booted system reported.

A package ships its self-test as /usr/libexec/clip-selftest/<package> (overlays/clip/eclass/clip-selftest.eclass);
at boot, clip-selftest runs each one and prints `CLIP_SELFTEST <name> ok|FAILED <seconds>s: <first line>` on the
console, then clip-sysinfo --check refuses the boot marker if any failed. The image manifest lists each slot's
self-tests (`selftests`), so the host can require every one of them to report "ok": a test that vanished or
never ran is a failure too, not an absence of news.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

SELFTEST_DIR = "usr/libexec/clip-selftest"
LINE = re.compile(r"CLIP_SELFTEST (?P<name>[A-Za-z0-9][A-Za-z0-9._+-]*) (?P<result>ok|FAILED) (?P<seconds>\d+)s: "
                  r"?(?P<output>.*)$")


@dataclass(frozen=True)
class Outcome:
    name: str
    ok: bool
    seconds: int
    output: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def shipped(root: Path) -> list[str]:
    """The self-tests installed in a slot's root tree, by name (the package's)."""
    folder = root / SELFTEST_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.is_symlink())


def parse(line: str) -> Outcome | None:
    """One console line as a self-test outcome, or None if it is not one."""
    found = LINE.search(line)
    if not found:
        return None
    return Outcome(found["name"], found["result"] == "ok", int(found["seconds"]), found["output"].strip())


def missing(expected: Iterable[str], outcomes: Iterable[Outcome]) -> list[str]:
    """What keeps the expected self-tests from counting as passed, one phrase each (empty: all passed)."""
    seen = {o.name: o for o in outcomes}
    problems = []
    for name in expected:
        outcome = seen.get(name)
        if outcome is None:
            problems.append(f"self-test {name} did not report")
        elif not outcome.ok:
            problems.append(f"self-test {name} failed: {outcome.output}")
    return problems
