"""Mount options and jail paths in the form the kernel applies them, so the rules check what will happen.

mount(8) reads an option list left to right and the last of each exclusive pair wins (`ro,rw` mounts
read-write); `defaults` stands for `rw,suid,dev,exec,auto,nouser,async`, and `user`/`users` imply `noexec,
nosuid,nodev`, `owner`/`group` imply `nosuid,nodev`. `effective` applies those semantics; `contradictions`
names every pair a list states both sides of, which the rules refuse outright: a jail file saying `[ro, rw]`
is an error, not a puzzle. `normal_path` is the one spelling of an absolute path (`/.`, `//`, `/a/./b`,
trailing slashes are other spellings of the same place); `..` and relative paths are refused.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from clipbuild.core.errors import InputError

# Mutually exclusive options: the first word of each group is the kernel's default.
EXCLUSIVE = (
    ("rw", "ro"), ("exec", "noexec"), ("suid", "nosuid"), ("dev", "nodev"), ("symfollow", "nosymfollow"),
    ("atime", "noatime"), ("diratime", "nodiratime"), ("norelatime", "relatime"),
    ("nostrictatime", "strictatime"), ("nolazytime", "lazytime"), ("noiversion", "iversion"),
    ("nomand", "mand"), ("async", "sync"), ("auto", "noauto"), ("nouser", "user", "users"),
    ("lock", "nolock"), ("bind", "rbind"),
    ("private", "shared", "slave", "unbindable", "rprivate", "rshared", "rslave", "runbindable"),
)
# Options that stand for others (mount(8), FILESYSTEM-INDEPENDENT MOUNT OPTIONS).
IMPLIES = {
    "defaults": ("rw", "suid", "dev", "exec", "auto", "nouser", "async"),
    "user": ("user", "noexec", "nosuid", "nodev"),
    "users": ("users", "noexec", "nosuid", "nodev"),
    "owner": ("owner", "nosuid", "nodev"),
    "group": ("group", "nosuid", "nodev"),
}
GROUP_OF = {word: group for group in EXCLUSIVE for word in group}


@dataclass(frozen=True)
class Flags:
    """The security-relevant result of an option list, as the kernel applies it."""

    read_only: bool = False
    noexec: bool = False
    nosuid: bool = False
    nodev: bool = False
    nosymfollow: bool = False

    def words(self) -> list[str]:
        """The flags as mount options, e.g. for `mount -o remount,bind,...`."""
        return ["ro" if self.read_only else "rw"] + [
            name for name in ("nosuid", "nodev", "noexec", "nosymfollow") if getattr(self, name)]


def expanded(options: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """(word as mount applies it, option it came from), with `defaults`, `user`... expanded in place."""
    return [(word, option) for option in options for word in IMPLIES.get(option, (option,))]


def effective(options: tuple[str, ...] | list[str]) -> Flags:
    """What the kernel applies for `options`: for each exclusive group the last word stated, else the default."""
    chosen = {group: group[0] for group in EXCLUSIVE}
    for word, _ in expanded(options):
        if word in GROUP_OF:
            chosen[GROUP_OF[word]] = word
    words = set(chosen.values())
    return Flags(read_only="ro" in words, noexec="noexec" in words, nosuid="nosuid" in words,
                 nodev="nodev" in words, nosymfollow="nosymfollow" in words)


def contradictions(options: tuple[str, ...] | list[str]) -> list[str]:
    """Each exclusive group the list states two sides of, as "`rw` (from defaults) after `ro`"."""
    first: dict[tuple[str, ...], tuple[str, str]] = {}
    found = []
    for word, option in expanded(options):
        group = GROUP_OF.get(word)
        if group is None:
            continue
        if group in first and first[group][0] != word:
            earlier, source = first[group]
            found.append(f"{_said(word, option)} contradicts {_said(earlier, source)}")
        first.setdefault(group, (word, option))
    return found


def _said(word: str, option: str) -> str:
    return word if word == option else f"{word} (from {option})"


def require_consistent(options: tuple[str, ...] | list[str]) -> Flags:
    """The effective flags of a list that states no contradiction; raises InputError otherwise."""
    found = contradictions(options)
    if found:
        raise InputError(f"options [{', '.join(options)}]: {'; '.join(found)}")
    return effective(options)


def normal_path(path: str) -> str:
    """The one spelling of an absolute path; raises InputError for a relative path or one holding `..`."""
    if not path.startswith("/"):
        raise InputError(f"{path!r} is not an absolute path")
    if ".." in path.split("/"):
        raise InputError(f"{path!r} holds '..'")
    if "\0" in path:
        raise InputError(f"{path!r} holds a NUL byte")
    return "/" + posixpath.normpath(path).lstrip("/")


def inside(path: str, tree: str) -> bool:
    """Whether normalised `path` is `tree` or lies below it."""
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def overlap(one: str, other: str) -> bool:
    """Whether two normalised trees share anything (one holds the other)."""
    return inside(one, other) or inside(other, one)
