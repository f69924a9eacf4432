"""Whole-tree checks of an installed slot: hardened ELF files, resolvable libraries, one owner per file.

Run on a tree right after `dpkg --root` (the clip core+apps tree before it is split, each RM tree), and read
back by `clipbuild inspect`. Every regular file starting with `\\x7fELF` is read with clipbuild.formats.elf and:

- ET_EXEC (not position-independent) is refused; ET_DYN with PT_INTERP is a PIE executable; ET_DYN with
  DF_1_PIE and no PT_INTERP a static-pie; any other ET_DYN a shared library; ET_REL (kernel modules, objects)
  is skipped with a note; an ELF file of another class or machine, or a malformed one, is refused;
- executables and libraries need full RELRO: a PT_GNU_RELRO segment and BIND_NOW (DF_BIND_NOW or DF_1_NOW);
- the stack protector: the file names `__stack_chk_fail`/`__stack_chk_fail_local`/`__stack_chk_guard` in its
  symbol tables, or its code reads the canary (`%fs:0x28`); a file with neither passes only when it has no
  function to protect, judged by two heuristics: no stack frame of 64 bytes or more (`sub $N,%rsp`), and
  no more than 4 KiB of code. (In a static binary the canary reads include the C library's own, so there the
  rule shows the canary is in use, not that every function of the program is protected; the profile's CFLAGS
  are what protect those.)
- each DT_NEEDED name resolves inside the slot that runs the file: DT_RPATH (when there is no DT_RUNPATH),
  DT_RUNPATH (absolute or `$ORIGIN`-relative entries only), then the loader's default directories (/lib,
  /usr/lib, /lib64, /usr/lib64; plus /usr/local/lib and /usr/local/lib64 for files of the apps part, under
  /usr/local). A core file may not find a library under /usr/local. ld.so.conf is not read: no ldconfig runs in
  the image, so the loader has no cache. PT_INTERP must be a file of the tree.
- no path is listed by two packages in the dpkg database (var/lib/dpkg/info/*.list), directories excepted.

Every path is resolved with clipbuild.core.beneath: a link inside the tree is followed, a link out refused.
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from clipbuild.core import beneath
from clipbuild.core.errors import ElfError, ImageError
from clipbuild.formats import elf

DEFAULT_LIBRARY_DIRS = ("lib", "usr/lib", "lib64", "usr/lib64")
APPS_LIBRARY_DIRS = ("usr/local/lib", "usr/local/lib64")
APPS = "usr/local"
SMALL_CODE = 4096  # bytes of code below which a file without large frames is taken to have nothing to protect
DPKG_INFO = "var/lib/dpkg/info"
NO_PACKAGE = "no package"


@dataclass(frozen=True)
class Failure:
    path: str  # in the tree, without a leading /
    rule: str
    message: str
    packages: tuple[str, ...] = ()

    def line(self) -> str:
        owner = ", ".join(self.packages) or NO_PACKAGE
        return f"/{self.path} ({owner}): {self.rule}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": f"/{self.path}", "rule": self.rule, "message": self.message, "packages": list(self.packages)}


@dataclass(frozen=True)
class Checked:
    """One ELF file of the tree and what it is."""

    path: str
    kind: str  # pie-executable, static-pie, shared-library, relocatable, other
    notes: tuple[str, ...] = ()


@dataclass
class TreeReport:
    name: str
    files: list[Checked] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    owners: dict[str, list[str]] = field(default_factory=dict)  # path -> packages listing it

    @property
    def ok(self) -> bool:
        return not self.failures

    def by_package(self) -> dict[str, dict[str, Any]]:
        """Per package: the ELF files it installs that were checked, and its failures."""
        out: dict[str, dict[str, Any]] = {}
        for item in self.files:
            for package in self.owners.get(item.path) or [NO_PACKAGE]:
                out.setdefault(package, {"elf_files": 0, "failures": []})["elf_files"] += 1
        for failure in self.failures:
            for package in failure.packages or (NO_PACKAGE,):
                out.setdefault(package, {"elf_files": 0, "failures": []})["failures"].append(failure.to_dict())
        return out

    def raise_failures(self) -> None:
        """An ImageError listing every failure, each with its file, owning package(s) and rule."""
        if self.failures:
            raise ImageError(
                f"{len(self.failures)} problem(s) in the {self.name} tree (ELF hardening, libraries, file "
                "owners): the image is not built", detail=[f"  {f.line()}" for f in self.failures],
                hint=["rebuild the named package with the profile's hardening flags (-fPIE -pie, "
                      "-Wl,-z,relro,-z,now, -fstack-protector-strong) and with every library it needs packaged "
                      "in the same slot", "docs/image.md, \"Whole-image checks\", lists the rules"])


def regular_files(tree: Path) -> Iterator[str]:
    """Every regular file of the tree, depth first in name order; links are never followed, so never walked out
    of it (iterative: a package's deep folders cannot exhaust Python's recursion limit)."""
    pending = [""]
    while pending:
        rel = pending.pop()
        folders = []
        for name, mode in beneath.entries(tree, rel or "."):
            child = f"{rel}/{name}" if rel else name
            if stat.S_ISDIR(mode):
                folders.append(child)
            elif stat.S_ISREG(mode):
                yield child
        pending += reversed(folders)


def read_owners(tree: Path) -> dict[str, list[str]]:
    """Path (relative) -> the packages whose dpkg .list names it."""
    owners: dict[str, list[str]] = {}
    if not beneath.is_dir(tree, DPKG_INFO):
        return owners
    for name, mode in beneath.entries(tree, DPKG_INFO):
        if not (stat.S_ISREG(mode) and name.endswith(".list")):
            continue
        package = name.removesuffix(".list").split(":")[0]
        for line in beneath.read_bytes(tree, f"{DPKG_INFO}/{name}").decode(errors="replace").splitlines():
            path = line.strip().lstrip("/")
            if path and path != ".":
                owners.setdefault(path, []).append(package)
    return owners


def shared_paths(tree: Path, owners: dict[str, list[str]]) -> list[Failure]:
    """A path (not a directory) that more than one package lists."""
    out = []
    for path, packages in sorted(owners.items()):
        if len(set(packages)) > 1 and not beneath.is_dir(tree, path):
            names = tuple(sorted(set(packages)))
            out.append(Failure(path, "one owner", f"listed by {len(names)} packages: {', '.join(names)}", names))
    return out


def read_elf(tree: Path, rel: str) -> elf.Elf | None:
    """The file's ELF facts, or None when it is not an ELF file; ElfError if it is one and cannot be read."""
    with beneath.opened(tree, rel, os.O_RDONLY | os.O_NONBLOCK) as fd:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size < 4 or os.pread(fd, 4, 0) != elf.MAGIC:
            return None
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as data:
            return elf.parse(data)


def kind_of(found: elf.Elf) -> str:
    if found.type == elf.ET_REL:
        return "relocatable"
    if found.type == elf.ET_EXEC:
        return "executable (not PIE)"
    if found.type != elf.ET_DYN:
        return "other"
    if found.interp is not None:
        return "pie-executable"
    return "static-pie" if found.pie_flag and not found.needed else "shared-library"


def hardening(found: elf.Elf, kind: str) -> tuple[list[str], list[str]]:
    """(failures as 'rule: message', notes) of the hardening rules for one executable or library."""
    failures, notes = [], []
    if kind == "executable (not PIE)":
        failures.append("PIE: an ET_EXEC executable, not position-independent (link with -pie)")
    if not found.relro:
        failures.append("full RELRO: no PT_GNU_RELRO segment (link with -Wl,-z,relro)")
    if not found.bind_now:
        failures.append("full RELRO: lazy binding, neither DF_BIND_NOW nor DF_1_NOW (link with -Wl,-z,now)")
    if found.stack_symbols or found.canary_reads:
        if kind == "static-pie":
            notes.append(f"static: {found.canary_reads} canary reads, the C library's included")
    elif found.big_frames or found.code_size > SMALL_CODE:
        why = (f"{found.big_frames} stack frame(s) of {elf.FRAME_BYTES} bytes or more" if found.big_frames
               else f"{found.code_size} bytes of code")
        failures.append(f"stack protector: no __stack_chk_fail and no canary read, with {why} "
                        "(compile with -fstack-protector-strong)")
    else:
        notes.append(f"no stack protector needed: {found.code_size} bytes of code, no large stack frame")
    return failures, notes


def library_dirs(tree: Path, path: str, found: elf.Elf) -> tuple[list[str], list[str]]:
    """(directories searched for DT_NEEDED, in order; failures 'rule: message' of its run paths)."""
    apps = path.startswith(f"{APPS}/")
    origin = PurePosixPath(path).parent.as_posix()
    dirs, failures = [], []
    for tag, entries in (("DT_RPATH", () if found.runpath else found.rpath), ("DT_RUNPATH", found.runpath)):
        for entry in entries:
            expanded = entry.replace("${ORIGIN}", "$ORIGIN").replace("$ORIGIN", f"/{origin}")
            if not expanded.startswith("/") or "$" in expanded:
                failures.append(f"{tag}: '{entry}' is neither absolute nor $ORIGIN-relative")
                continue
            rel = os.path.normpath(expanded).lstrip("/")
            if rel.startswith("..") or (not apps and (rel == APPS or rel.startswith(f"{APPS}/"))):
                failures.append(f"{tag}: '{entry}' points outside the slot that runs this file")
                continue
            dirs.append(rel)
    dirs += DEFAULT_LIBRARY_DIRS + (APPS_LIBRARY_DIRS if apps else ())
    return dirs, failures


def _found_file(tree: Path, rel: str) -> str:
    """'' when `rel` is a regular file of the tree (in-tree links followed), else why not."""
    try:
        with beneath.opened(tree, rel, os.O_PATH) as fd:
            return "" if stat.S_ISREG(os.fstat(fd).st_mode) else "not a regular file"
    except FileNotFoundError:
        return "missing"
    except beneath.TreeEscape:
        return "leads out of the tree through a link"
    except beneath.TreeError as exc:
        return str(exc)


def resolution(tree: Path, path: str, found: elf.Elf) -> list[str]:
    """Failures ('rule: message') of DT_NEEDED and PT_INTERP resolution inside the tree."""
    failures = []
    if found.interp is not None:
        why = _found_file(tree, found.interp.lstrip("/")) if found.interp.startswith("/") else "not absolute"
        if why:
            failures.append(f"PT_INTERP: the interpreter {found.interp} is not in the slot: {why}")
    if not found.needed:
        return failures
    dirs, failures_dirs = library_dirs(tree, path, found)
    failures += failures_dirs
    for name in found.needed:
        if "/" in name:
            failures.append(f"DT_NEEDED: '{name}' is a path, not a library name")
            continue
        why = {}
        for directory in dirs:
            why[directory] = _found_file(tree, f"{directory}/{name}")
            if not why[directory]:
                break
        else:
            odd = [f"/{d}/{name} {w}" for d, w in why.items() if w != "missing"]
            failures.append(f"DT_NEEDED: {name} is in none of /{', /'.join(dirs)}"
                            + (f" ({'; '.join(odd)})" if odd else ""))
    return failures


def check_file(tree: Path, path: str) -> tuple[Checked | None, list[str]]:
    """One regular file: (what it is if ELF, else None; failures 'rule: message')."""
    try:
        found = read_elf(tree, path)
    except elf.ElfUnsupported as exc:
        return Checked(path, "other"), [f"ELF: {exc}: clipbuild checks only ELF64 x86-64 files"]
    except ElfError as exc:
        return Checked(path, "other"), [f"ELF: malformed: {exc}"]
    if found is None:
        return None, []
    kind = kind_of(found)
    if kind in ("relocatable", "other"):
        return Checked(path, kind, (f"ELF type {found.type}: not run, not checked",)), []
    failures, notes = hardening(found, kind)
    return Checked(path, kind, tuple(notes)), failures + resolution(tree, path, found)


def check_tree(tree: Path, name: str) -> TreeReport:
    """Every check of the module's docstring on one installed tree (dpkg's database in it)."""
    report = TreeReport(name, owners=read_owners(tree))
    report.failures += shared_paths(tree, report.owners)
    for path in regular_files(tree):
        checked, failures = check_file(tree, path)
        if checked is None:
            continue
        report.files.append(checked)
        packages = tuple(sorted(set(report.owners.get(path, []))))
        for failure in failures:
            rule, _, message = failure.partition(": ")
            report.failures.append(Failure(path, rule, message, packages))
    return report
