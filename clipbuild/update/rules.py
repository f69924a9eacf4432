"""CLIP's update rules, read from the image they govern (clipos4.md §3).

The running root, verity-checked, carries them where CLIP kept them:

    /etc/admin/clip_download/clip_download_clip.conf   reject_too_old_configuration=yes|no, maximum_age=DAYS
    /etc/admin/clip_install/clip_install_clip_core.conf option_install_high_impact_packages=yes|no
    /etc/admin/clip_install/clip_install_clip_apps.conf option_install_high_impact_packages=yes|no

Each file is `key=value` lines, `#` comments and blank lines. Parsing is strict: an unknown key, a key given
twice or a bad value is an error naming the file, the line and the key. A missing file means CLIP's default
for its keys, said in a note. `update apply --max-age` and `--allow-high-impact` override them on a development
image only: a release image's rules are its own.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipbuild.core import beneath
from clipbuild.core.errors import ImageError, InputError, Issue, Location

DOWNLOAD = "etc/admin/clip_download/clip_download_clip.conf"
INSTALL = {"clip-core": "etc/admin/clip_install/clip_install_clip_core.conf",
           "clip-apps": "etc/admin/clip_install/clip_install_clip_apps.conf"}
PARTS = ("clip-core", "clip-apps", "rm-core", "rm-apps")
MAX_FILE = 64 << 10
DEFAULT_AGE = 90  # CLIP's maximum_age
_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(\S*)")


def _yes_no(text: str) -> bool | None:
    return {"yes": True, "no": False}.get(text)


def _days(text: str) -> int | None:
    return int(text) if re.fullmatch(r"[0-9]{1,5}", text) else None


# key -> (reader, what a good value is)
DOWNLOAD_KEYS: dict[str, tuple[Callable[[str], Any], str]] = {
    "reject_too_old_configuration": (_yes_no, "yes or no"),
    "maximum_age": (_days, "a whole number of days, 0 to 99999 (0: no limit)"),
}
INSTALL_KEYS: dict[str, tuple[Callable[[str], Any], str]] = {
    "option_install_high_impact_packages": (_yes_no, "yes or no"),
}


@dataclass(frozen=True)
class Rules:
    """CLIP's download checks (clip_download_<jail>.conf, clip_install_<dist>_<part>.conf), with where each
    value came from (`origins`: setting -> file:line, a note's default, or a command-line option)."""

    maximum_age_days: int = DEFAULT_AGE  # reject_too_old_configuration with maximum_age; 0: no limit
    high_impact: frozenset[str] = frozenset()  # the parts ("clip-core" ...) taking Impact 2 or more
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    origins: Mapping[str, str] = field(default_factory=dict)

    def allows_high_impact(self, part: str) -> bool:
        return part in self.high_impact

    def to_dict(self) -> dict[str, Any]:
        high = {part: {"allowed": part in self.high_impact, "from": self.origins.get(part, "default")}
                for part in PARTS}
        return {"maximum_age_days": {"value": self.maximum_age_days,
                                     "from": self.origins.get("maximum_age", "default")},
                "install_high_impact_packages": high}

    def summary(self) -> str:
        """One line for people: each rule and where it came from."""
        age = f"{self.maximum_age_days} days" if self.maximum_age_days else "no limit"
        high = "; ".join(f"{part} {'yes' if part in self.high_impact else 'no'} "
                         f"({self.origins.get(part, 'default')})" for part in PARTS[:2])
        return f"maximum age {age} ({self.origins.get('maximum_age', 'default')}); high-impact packages: {high}"


@dataclass(frozen=True)
class Overrides:
    """`update apply --max-age N` and `--allow-high-impact`: None when not given."""

    max_age: int | None = None
    allow_high_impact: bool | None = None

    def given(self) -> list[str]:
        return [option for option, value in (("--max-age", self.max_age),
                                             ("--allow-high-impact", self.allow_high_impact)) if value is not None]


def parse(text: str, where: str, keys: Mapping[str, tuple[Callable[[str], Any], str]]) -> dict[str, tuple[Any, int]]:
    """`key=value` lines of one rules file: key -> (value, line). `where` names the file in errors."""
    out: dict[str, tuple[Any, int]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            named = line.partition("=")[0].strip() if "=" in line else ""
            raise _error(where, number, named[:40], f"'{line[:60]}' is not key=value",
                         "one key=value per line, no spaces in the value, comments on lines of their own")
        key, value = match.groups()
        if key not in keys:
            raise _error(where, number, key, "unknown key", f"the keys here are {', '.join(sorted(keys))}")
        if key in out:
            raise _error(where, number, key, f"given twice (first on line {out[key][1]})", "keep one")
        reader, good = keys[key]
        if (read := reader(value)) is None:
            raise _error(where, number, key, f"'{value}' is not {good}", f"write {key}=<{good}>")
        out[key] = (read, number)
    return out


def _error(where: str, line: int, key: str, message: str, hint: str) -> ImageError:
    return ImageError(str(Issue(Location(where, line), key, message)), hint=hint)


def _read(tree: Path, rel: str, keys: Mapping[str, tuple[Callable[[str], Any], str]],
          image: str) -> dict[str, tuple[Any, int]] | None:
    """The file's settings, or None when the root has no such file."""
    where = f"/{rel}"
    if not beneath.exists(tree, rel):
        return None
    data = beneath.read_bytes(tree, rel)
    if len(data) > MAX_FILE:
        raise ImageError(f"{where}: {len(data)} bytes in the root of {image}; a rules file is at most {MAX_FILE}")
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ImageError(f"{where}: not UTF-8 text (byte {exc.start}) in the root of {image}") from None
    try:
        return parse(text, where, keys)
    except ImageError as exc:
        exc.hints.append(f"in the root of {image}: the package that installs it (baselayout-clip) must be fixed "
                         "and released")
        raise


def from_root(tree: Path, image: str, now: dt.datetime | None = None) -> tuple[Rules, list[str]]:
    """The rules the root extracted in `tree` carries, and notes for the files it lacks (CLIP's defaults)."""
    notes: list[str] = []
    origins: dict[str, str] = {}
    download = _read(tree, DOWNLOAD, DOWNLOAD_KEYS, image)
    age = DEFAULT_AGE
    if download is None:
        notes.append(f"/{DOWNLOAD}: not in the image's root; CLIP's default applies (maximum_age={DEFAULT_AGE})")
        origins["maximum_age"] = f"default: no /{DOWNLOAD}"
    else:
        on, on_line = download.get("reject_too_old_configuration", (True, 0))
        age, line = download.get("maximum_age", (DEFAULT_AGE, 0))
        if not on:
            age, line = 0, on_line
        origins["maximum_age"] = f"/{DOWNLOAD}:{line}" if line else f"/{DOWNLOAD} (no maximum_age: CLIP's default)"
    high: set[str] = set()
    for part, rel in INSTALL.items():
        install = _read(tree, rel, INSTALL_KEYS, image)
        if install is None:
            notes.append(f"/{rel}: not in the image's root; CLIP's default applies "
                         "(option_install_high_impact_packages=no)")
            origins[part] = f"default: no /{rel}"
            continue
        allowed, line = install.get("option_install_high_impact_packages", (False, 0))
        origins[part] = f"/{rel}:{line}" if line else f"/{rel} (no option_install_high_impact_packages: CLIP's default)"
        if allowed:
            high.add(part)
    return Rules(age, frozenset(high), now or dt.datetime.now(dt.UTC), origins), notes


def overridden(rules: Rules, overrides: Overrides, development: bool) -> Rules:
    """The image's rules with the command line's overrides: a development image's only."""
    refuse_on_release(overrides, development)
    origins = dict(rules.origins)
    age, high = rules.maximum_age_days, rules.high_impact
    if overrides.max_age is not None:
        age, origins["maximum_age"] = overrides.max_age, "--max-age on a development image"
    if overrides.allow_high_impact:
        high = frozenset(PARTS)
        origins.update({part: "--allow-high-impact on a development image" for part in PARTS})
    return Rules(age, high, rules.now, origins)


def _refusal(given: list[str]) -> InputError:
    files = {"--max-age": f"/{DOWNLOAD}", "--allow-high-impact": ", ".join(f"/{rel}" for rel in INSTALL.values())}
    lines = [f"the rules of a release image are its own: {files[option]}; {option} is for development images"
             for option in given]
    return InputError(lines[0], detail=[f"  {line}" for line in lines[1:]],
                      hint=f"leave out {' and '.join(given)}; to change a release image's rules, release a "
                           "core whose package installs other ones")


def refuse_on_release(overrides: Overrides, development: bool) -> None:
    """Before any work: the overrides refused on a release image (the manifest's signing mode)."""
    if (given := overrides.given()) and not development:
        raise _refusal(given)
