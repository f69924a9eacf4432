"""Driving emerge in a build root: resolve a package set, read package metadata, build with live progress,
and turn a failure into the package, the phase, its log and the log's last lines."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from portage.dep import Atom, match_from_list, use_reduce

from clipbuild.core.errors import ToolError
from clipbuild.core.run import run_streaming
from clipbuild.gentoo.buildroot import BuildRoot, Mount
from clipbuild.gentoo.guest import PKGINFO_HELPER

LOG_TAIL = 30
# A package with a sub-slot shows it between the CPV and the repository: sys-libs/zlib-1.2.13:0/1::clip.
_MERGE_LINE = re.compile(r"^\[(?P<type>ebuild|binary)\s[^\]]*\]\s+(?P<cpv>[^\s:]+)(?::[^\s:]+)?::(?P<repo>\S+)"
                         r"(?:\s+to\s+\S+)?(?:\s+USE=\"(?P<use>[^\"]*)\")?")
_PROGRESS = re.compile(r"^>>> (?P<what>Emerging|Emerging binary|Installing|Completed) \((?P<n>\d+) of "
                       r"(?P<total>\d+)\) (?P<cpv>[^\s:]+)")
_FAILED = re.compile(r"^>>> Failed to emerge (?P<cpv>[^\s,]+)")
_LOG_FILE = re.compile(r"^>>>\s+'(?P<log>/var/log/portage/[^']+)'")
_PHASE = re.compile(r"ERROR: (?P<cpv>[^\s:]+)(?:::\S+)? failed \((?P<phase>\w+) phase\)")
_BUILD_LOG = re.compile(r"The complete build log is located at '(?P<log>/var/log/portage/[^']+)'")
OUTPUT_TAIL = 300  # lines of emerge's output kept to find which package failed


@dataclass(frozen=True)
class MergeItem:
    cpv: str
    use: tuple[str, ...]  # enabled flags


@dataclass
class Emerge:
    """emerge in one build root with one set of mounts and environment."""

    sdk: BuildRoot
    mounts: Sequence[Mount]
    env: Mapping[str, str]
    usr_lib: Mapping[str, Path] = field(default_factory=dict)  # entries added to /usr/lib (distcc's masquerade)
    prefix: Sequence[str] = ()  # put before emerge when building (the sandbox's relay: clipbuild.gentoo.offload)

    def merge_list(self, atoms: Sequence[str]) -> list[MergeItem]:
        """What `emerge --emptytree` would build for `atoms`, in order, with each package's enabled USE."""
        result = self.sdk.run([self.sdk.emerge, "--pretend", "--emptytree", "--verbose", "--color=n",
                               "--nospinner", "--usepkg=n", *atoms], self.mounts, self.env)
        items = []
        for line in result.stdout.splitlines():
            match = _MERGE_LINE.match(line)
            if match:
                items.append(MergeItem(match["cpv"], tuple(_enabled(match["use"] or ""))))
        return items

    def metadata(self, cpvs: Sequence[str]) -> dict[str, dict]:
        """DEPEND, BDEPEND, INHERITED of each package, read by the build root's own Portage."""
        python = "/opt/portage/bin/python3" if self.sdk.recipe.kind == "debian" else "python3"
        mounts = [*self.mounts, Mount(PKGINFO_HELPER, "/build/src/pkginfo_helper.py")]
        result = self.sdk.run(["sh", "-c", f"echo '{json.dumps(list(cpvs))}' | {python} "
                               "/build/src/pkginfo_helper.py"], mounts, self.env)
        return json.loads(result.stdout)

    def build(self, atoms: Sequence[str], on_event: Callable[[str, int, int, str], None],
              log: Callable[[str], None]) -> None:
        """emerge --buildpkg --usepkg; calls on_event(what, n, total, cpv) for each package as it goes."""

        def line(text: str) -> None:
            log(text)
            match = _PROGRESS.match(text)
            if match:
                on_event(match["what"], int(match["n"]), int(match["total"]), match["cpv"])

        run_streaming([*self.prefix, self.sdk.emerge, "--buildpkg", "--usepkg", "--binpkg-respect-use=y",
                       "--binpkg-changed-deps=n", "--color=n", "--nospinner", "--quiet-build=y", "--oneshot",
                       *atoms], line,
                      sandbox=self.sdk.sandbox(self.mounts, self.env, usr_lib=self.usr_lib), tail_lines=OUTPUT_TAIL)


def _enabled(use: str) -> list[str]:
    flags = []
    for token in use.split():
        token = token.strip("()").rstrip("*%")
        if token and not token.startswith("-"):
            flags.append(token)
    return flags


def build_deps(meta: Mapping[str, str], use: Sequence[str], candidates: Sequence[str]) -> list[str]:
    """The CPVs among `candidates` a package builds against (DEPEND and BDEPEND under its USE)."""
    text = f"{meta.get('depend', '')} {meta.get('bdepend', '')}"
    deps = []
    for token in use_reduce(text, uselist=list(use), flat=True):
        if not isinstance(token, str) or token == "||":
            continue
        atom = Atom(token) if not isinstance(token, Atom) else token
        if atom.blocker:
            continue
        deps += [c for c in match_from_list(atom, list(candidates)) if c not in deps]
    return deps


@dataclass(frozen=True)
class Failure:
    cpv: str
    phase: str
    log: str  # path inside the build root (/var/log/portage/...)


def parse_failure(error: ToolError) -> Failure | None:
    """The package emerge failed on, its phase and its log, from the tail of emerge's output."""
    cpv = log = phase = ""
    lines = error.stderr_tail.splitlines()
    for index, text in enumerate(lines):
        if match := _FAILED.match(text):
            cpv = match["cpv"]
            for follow in lines[index + 1:index + 3]:
                if found := _LOG_FILE.match(follow):
                    log = found["log"]
        if match := _PHASE.search(text):
            cpv, phase = cpv or match["cpv"], match["phase"]
        if match := _BUILD_LOG.search(text):
            log = log or match["log"]
    return Failure(cpv, phase or "unknown", log) if cpv else None


def log_tail(path: Path, lines: int = LOG_TAIL) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in text.rstrip().splitlines()[-lines:]]
