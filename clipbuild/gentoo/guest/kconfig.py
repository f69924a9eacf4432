"""Kernel configuration fragments, and the check that olddefconfig kept every one of their values.

olddefconfig drops options silently: an option whose dependencies are off, one that does not exist in this
kernel (renamed: SPECULATION_MITIGATIONS became CPU_MITIGATIONS within 6.1.y and silently took every CPU
mitigation away from an old fragment), one that needs tooling the build lacks. After olddefconfig, every value
a fragment asked for is compared with the final .config; each difference is an error naming the option, what
was asked, what was obtained and, read from the tree's Kconfig files, why: the `depends on` it does not meet,
or that no Kconfig defines it. `CONFIG_X=n` lines are the must-be-n list.

This module is standard-library only: the kernel ebuild runs it inside the build root (`python3 kconfig.py
check ...`), and clipbuild's tests import it.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
_CONFIG = re.compile(r"^(?:menu)?config\s+([A-Za-z0-9_]+)\s*$")
_DEPENDS = re.compile(r"^\s*depends on\s+(.+?)\s*$")


@dataclass(frozen=True)
class Request:
    option: str  # CONFIG_FOO
    value: str  # y, m, n, or a literal such as "quoted" or 42
    source: str  # fragment:line


def read_values(text: str) -> dict[str, str]:
    """A .config or fragment as option -> value ('n' for '# CONFIG_X is not set')."""
    values = {}
    for line in text.splitlines():
        if match := _SET.match(line.strip()):
            values[match[1]] = match[2]
        elif match := _UNSET.match(line.strip()):
            values[match[1]] = "n"
    return values


def read_fragments(paths: list[Path]) -> list[Request]:
    """Every request of the fragments, later fragments overriding earlier ones."""
    requests: dict[str, Request] = {}
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if not stripped or (stripped.startswith("#") and not _UNSET.match(stripped)):
                continue
            match = _SET.match(stripped) or _UNSET.match(stripped)
            if not match:
                raise ValueError(f"{path}:{number}: not a configuration line: {line!r}")
            value = match[2] if match.re is _SET else "n"
            requests[match[1]] = Request(match[1], value, f"{path.name}:{number}")
    return list(requests.values())


def merged_fragment(requests: list[Request]) -> str:
    """One fragment for merge_config.sh or `make ... KCONFIG_ALLCONFIG`."""
    lines = []
    for request in requests:
        lines.append(f"# {request.option} is not set" if request.value == "n" else
                     f"{request.option}={request.value}")
    return "\n".join(lines) + "\n"


# Block keywords start their line (help texts are indented and may begin with "if ..." or "menu").
_SOURCE = re.compile(r'^o?source\s+"([^"]+)"')
_IF = re.compile(r"^if\s+(.+?)\s*$")


def definitions(tree: Path, arch: str = "x86") -> dict[str, list[str]]:
    """Symbol -> the conditions it depends on: its own `depends on` lines and those of the `if` blocks and
    menus around it, following `source` from the top-level Kconfig as kconfig does for `arch`."""
    found: dict[str, list[str]] = {}
    seen: set[Path] = set()

    def parse(path: Path, outer: list[str]) -> None:
        if path in seen or not path.is_file():
            return
        seen.add(path)
        blocks: list[list[str]] = []  # one list of conditions per open if / menu / choice
        current: list[str] | None = None
        for line in path.read_text(errors="replace").splitlines():
            conditions = outer + [c for block in blocks for c in block]
            if match := _SOURCE.match(line):
                parse(tree / match[1].replace("$(SRCARCH)", arch), conditions)
            elif match := _IF.match(line):
                blocks.append([match[1]])
                current = None
            elif re.match(r"^(menu\s|choice\b)", line):
                blocks.append([])
                current = blocks[-1]
            elif re.match(r"^(endif|endmenu|endchoice)\b", line):
                if blocks:
                    blocks.pop()
                current = None
            elif match := _CONFIG.match(line):
                current = found.setdefault(match[1], list(conditions))
            elif current is not None and (match := _DEPENDS.match(line)):
                current.append(match[1])

    parse(tree / "Kconfig", [])
    return found


@dataclass(frozen=True)
class Problem:
    request: Request
    obtained: str
    why: str

    def __str__(self) -> str:
        return (f"{self.request.option}={self.request.value} ({self.request.source}) became "
                f"{self.obtained}: {self.why}")


def check(requests: list[Request], config: dict[str, str], tree: Path) -> list[Problem]:
    """Requests the final configuration does not honour, each with its reason."""
    symbols: dict[str, list[str]] | None = None
    problems = []
    for request in requests:
        obtained = config.get(request.option, "n")
        if obtained == request.value:
            continue
        if symbols is None:
            symbols = definitions(tree)
        name = request.option.removeprefix("CONFIG_")
        if name not in symbols:
            why = "no Kconfig of this kernel defines it (renamed or removed?)"
        elif request.value == "n":
            why = "must be n: something selects it or it is not optional here"
        elif symbols[name]:
            unmet = [d for d in symbols[name] if not _met(d, config)]
            why = ("unmet dependency: depends on " + " && ".join(f"({d})" for d in unmet or symbols[name]))
        else:
            why = "it cannot be set on its own here (a choice, or selected/limited by another option)"
        problems.append(Problem(request, obtained, why))
    return problems


_TOKEN = re.compile(r"\s*(&&|\|\||!=|[!()=]|[A-Za-z0-9_]+|\"[^\"]*\")")


def _met(expression: str, config: dict[str, str]) -> bool:
    """Whether a `depends on` expression holds under `config` (Kconfig's tristate logic, read as booleans:
    only to name the likely culprit). An expression this reader does not follow counts as unmet."""
    tokens = _TOKEN.findall(expression)
    if "".join(tokens).replace(" ", "") != expression.replace(" ", ""):
        return False
    position = 0

    def value(token: str) -> str:
        if token in ("y", "m", "n"):
            return token
        if token.startswith('"'):
            return token.strip('"')
        return config.get(f"CONFIG_{token}", "n").strip('"')

    def peek() -> str:
        return tokens[position] if position < len(tokens) else ""

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def primary() -> bool:
        token = take()
        if token == "!":
            return not primary()
        if token == "(":
            result = disjunction()
            if take() != ")":
                raise ValueError(expression)
            return result
        if peek() in ("=", "!="):
            equal = take() == "="
            return (value(token) == value(take())) == equal
        return value(token) in ("y", "m")

    def conjunction() -> bool:
        result = primary()
        while peek() == "&&":
            take()
            result = primary() and result
        return result

    def disjunction() -> bool:
        result = conjunction()
        while peek() == "||":
            take()
            result = conjunction() or result
        return result

    try:
        result = disjunction()
    except (ValueError, IndexError):
        return False
    return result and position == len(tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kernel configuration fragments")
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="print the fragments merged into one")
    merge.add_argument("fragments", nargs="+", type=Path)
    verify = sub.add_parser("check", help="compare the fragments with a final .config")
    verify.add_argument("--tree", type=Path, required=True)
    verify.add_argument("--config", type=Path, required=True)
    verify.add_argument("fragments", nargs="+", type=Path)
    args = parser.parse_args(argv)
    requests = read_fragments(args.fragments)
    if args.command == "merge":
        sys.stdout.write(merged_fragment(requests))
        return 0
    problems = check(requests, read_values(args.config.read_text()), args.tree)
    for problem in problems:
        print(f"kernel config: {problem}", file=sys.stderr)
    if problems:
        print(f"kernel config: {len(problems)} requested value(s) not honoured; fix the fragments",
              file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
