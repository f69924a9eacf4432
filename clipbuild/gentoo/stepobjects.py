"""The executor's step objects on a binhost: content-addressed tars, verified on the way in.

`binhost export` also writes committed step objects (by default those of the `deb-set` and `sign-set` steps:
the .deb pools, built and signed) into the binhost folder:

    objects/<key>.tar           the object folder, a deterministic tar (clipbuild.formats.objtar)
    objects/index.json          key -> kind, step id, size, sha256 of the tar

and the Packages index's header records the SHA-256 of objects/index.json (CLIPBUILD_OBJECTS), so a URL pinning
the Packages index (`URL#sha256=HEX`) pins the objects too.

A build given a binhost asks it (`BinhostObjects`, an executor ObjectSource) for the object of every step whose
key is not cached locally: a tar the index lists under the key and kind is downloaded (bounded by its size, with
a timeout), checked against the index's size and SHA-256 and unpacked safely; the executor then checks the object
itself (clipbuild.core.executor.refused: its manifest's components hash to the key and are the step's own, its
outputs are the manifest's) before committing it. Anything else and the step runs here. As for binpkgs, the
download runs in clipbuild's own process.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipbuild.core.errors import BinhostError, ClipbuildError
from clipbuild.core.executor import MANIFEST
from clipbuild.core.plan import Step
from clipbuild.formats import objtar
from clipbuild.gentoo.binhost import Remote, Say, download_verified, read_index, read_small, write_atomically
from clipbuild.gentoo.fetch import digest_file

FOLDER = "objects"
OBJECTS_INDEX = f"{FOLDER}/index.json"
HEADER_FIELD = "CLIPBUILD_OBJECTS"  # in the Packages header: SHA-256 of objects/index.json
DEFAULT_KINDS = ("deb-set", "sign-set")
OBJECT_LIMIT = 16 << 30
_KEY = re.compile(r"[0-9a-f]{64}")


@dataclass
class ExportedObjects:
    written: list[str] = field(default_factory=list)  # keys tarred by this export
    kept: list[str] = field(default_factory=list)  # keys already there with the index's size and digest
    index_sha256: str = ""


def latest_objects(workdir: Path, species: Iterable[str], kinds: Iterable[str]) -> dict[str, Path]:
    """key -> object folder of every step of `kinds` whose latest run in `workdir` is committed, for `species`
    (every species there when empty)."""
    steps = workdir / "steps"
    roots = [steps / name for name in species] or [p for p in sorted(steps.glob("*")) if p.is_dir()]
    wanted = set(kinds)
    found = {}
    for link in (link for root in roots for link in sorted(root.rglob("*")) if link.is_symlink()):
        obj = link.resolve()
        manifest = _manifest(obj)
        if manifest and manifest.get("components", {}).get("kind") in wanted:
            found[obj.name] = obj
    return found


def _manifest(obj: Path) -> dict[str, Any] | None:
    try:
        return json.loads((obj / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def export(folder: Path, objects: dict[str, Path]) -> ExportedObjects:
    """Write `objects` (key -> object folder) into `folder`/objects/ and its index; an export only adds, a tar
    already there with the index's size and digest is kept, an index that would not change is not rewritten."""
    (folder / FOLDER).mkdir(parents=True, exist_ok=True)
    index_path = folder / OBJECTS_INDEX
    old = index_path.read_bytes() if index_path.is_file() else b""
    try:
        index: dict[str, dict[str, Any]] = json.loads(old)["objects"] if old else {}
    except (ValueError, KeyError, TypeError):
        raise BinhostError(f"{index_path} is not an objects index", hint="remove it to export anew") from None
    done = ExportedObjects()
    for key, obj in sorted(objects.items()):
        tar = folder / FOLDER / f"{key}.tar"
        if key in index and _intact(tar, index[key]):
            done.kept.append(key)
            continue
        objtar.write(obj, key, tar)
        manifest = _manifest(obj) or {}
        index[key] = {"kind": manifest.get("components", {}).get("kind", ""), "step": manifest.get("step", ""),
                      "size": tar.stat().st_size, "sha256": digest_file(tar, ["SHA256"])["SHA256"]}
        done.written.append(key)
    text = (json.dumps({"version": 1, "objects": index}, indent=2, sort_keys=True) + "\n").encode()
    if text != old:
        write_atomically(index_path, text)
    done.index_sha256 = hashlib.sha256(text).hexdigest()
    return done


def _intact(tar: Path, entry: dict[str, Any]) -> bool:
    return (tar.is_file() and tar.stat().st_size == entry.get("size")
            and digest_file(tar, ["SHA256"])["SHA256"] == entry.get("sha256"))


class BinhostObjects:
    """An executor ObjectSource: the step objects of a binhost. Its index is read once, on the first step asked
    for; an unreachable binhost or an index that is not the pinned one is said once and the steps run here."""

    def __init__(self, remote: Remote, say: Say):
        self.remote = remote
        self.where = f"the binhost {remote.base}"
        self.say = say
        self._index: dict[str, dict[str, Any]] | None = None

    def fetch(self, step: Step, key: str, into: Path, scratch: Path) -> bool:
        entry = self._entries(scratch).get(key)
        if entry is None:
            return False
        size, digest = entry.get("size"), entry.get("sha256", "")
        if entry.get("kind") != step.kind or not isinstance(size, int) or not 0 < size <= OBJECT_LIMIT \
                or not _KEY.fullmatch(digest):
            raise BinhostError(f"step {step.id}: the objects index's entry for {key} is not acceptable "
                               f"(kind {entry.get('kind')!r}, size {size!r}, sha256 {digest!r})")
        tar = scratch / f"{key}.tar"
        download_verified(self.remote, f"{FOLDER}/{key}.tar", size, {"SHA256": digest}, tar, f"step {step.id}")
        try:
            objtar.unpack(tar, key, into)
        except tarfile.TarError as exc:
            raise BinhostError(f"step {step.id}: {self.remote.url(f'{FOLDER}/{key}.tar')}: not a tar ({exc})") \
                from None
        return True

    def _entries(self, scratch: Path) -> dict[str, dict[str, Any]]:
        if self._index is None:
            try:
                self._index = read_objects_index(self.remote, scratch)
            except ClipbuildError as exc:
                self.say(f"{exc}: steps missing from the local cache run here")
                self._index = {}
        return self._index


def read_objects_index(remote: Remote, scratch: Path) -> dict[str, dict[str, Any]]:
    """The binhost's objects index, checked against the digest its Packages index (itself checked against the
    URL's pin, if any) records; {} when the binhost has no objects."""
    expected = read_index(remote, scratch).header.get(HEADER_FIELD, "")
    if not expected:
        return {}
    data = read_small(remote, OBJECTS_INDEX, scratch, "its objects index")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise BinhostError(f"binhost {remote.base}: {OBJECTS_INDEX} has SHA-256 {actual}, its Packages index "
                           f"says {expected}")
    try:
        objects = json.loads(data)["objects"]
    except (ValueError, KeyError, TypeError):
        raise BinhostError(f"binhost {remote.base}: {OBJECTS_INDEX} is not an objects index") from None
    return objects if isinstance(objects, dict) else {}

