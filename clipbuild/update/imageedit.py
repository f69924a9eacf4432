"""Editing an image file in place, without root or mounts: the primitives updates are made of.

An ext4 partition read with debugfs, a partition's content replaced (old blocks punched out first), a file of
the boot partition rewritten with mtools, the manifest's view of what a slot holds, and the update journal
beside the image (CLIP's clip_install_boot.lck) with the test hook that kills an update at a given state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from clipbuild.core.digest import sha256_file
from clipbuild.core.run import run
from clipbuild.image import fsimage, gpt, inspection
from clipbuild.update.repository import read_package

JOURNAL_SUFFIX = ".clipbuild-update.json"


def journal_path(image: Path) -> Path:
    return image.with_name(image.name + JOURNAL_SUFFIX)


class Journal:
    """`<image>.clipbuild-update.json`: the update under way and how far it got (CLIP's clip_install_boot.lck)."""

    def __init__(self, image: Path, target: str, version: str):
        self.path, self.data = journal_path(image), {"target": target, "version": version, "state": ""}

    def step(self, state: str) -> None:
        self.data["state"] = state
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data) + "\n")
        os.replace(tmp, self.path)
        if os.environ.get("CLIPBUILD_UPDATE_FAULT") == state:  # tests: die here, as a power cut would
            os._exit(9)

    def done(self) -> None:
        self.path.unlink(missing_ok=True)


class Ext4:
    """An ext4 partition of the image, copied out once (sparse), read with debugfs: no mount, no root."""

    def __init__(self, found: inspection.Inspection, label: str, scratch: Path):
        entry = found.entry(label)
        self.file, self.scratch, self.count = scratch / f"{label}.img", scratch, 0
        gpt.copy_out(found.image, entry.start, entry.size, self.file)

    def copy(self, path: str) -> Path:
        """The file or folder at `path` copied out; the returned path does not exist when it is absent."""
        self.count += 1
        out = self.scratch / f"copy-{self.count}"
        out.mkdir()
        run(["debugfs", "-R", f"rdump {path} {out}", self.file])
        return out / Path(path).name


def installed(manifest: dict[str, Any], slot_name: str) -> dict[str, dict[str, str]]:
    """Per set, package -> version installed in a slot (from the manifest on the boot partition)."""
    out: dict[str, dict[str, str]] = {}
    for entry in inspection.slot_packages(manifest, slot_name):
        out.setdefault(entry["set"], {})[entry["package"]] = entry["version"]
    return out


def package_entries(pool: dict[str, list[Path]]) -> list[dict[str, str]]:
    out = []
    for set_name, debs in pool.items():
        for deb in debs:
            fields = read_package(deb).fields
            out.append({"set": set_name, "package": fields["Package"], "version": fields["Version"],
                        "file": deb.name, "sha256": sha256_file(deb)})
    return out


def drop_partition(image: Path, part: gpt.Slice) -> None:
    """The partition's content dropped: a hole, reading as zeros."""
    run(["fallocate", "--punch-hole", "--keep-size", "--offset", str(part.start), "--length", str(part.size),
         image])


def replace_partition(image: Path, part: gpt.Slice, source: Path) -> None:
    """The partition's old content dropped, then the new filesystem copied in."""
    drop_partition(image, part)
    gpt.copy_into(image, part, source)


def write_boot_file(boot: str, target: str, text: str, scratch: Path, date: int) -> None:
    source = scratch / Path(target).name
    source.write_text(text)
    fsimage.vfat_replace(boot, target, source, date)


def write_manifest(found: inspection.Inspection, manifest: dict[str, Any], scratch: Path) -> None:
    """The manifest on the boot partition (clip/manifest.json), rewritten."""
    data = {k: v for k, v in manifest.items() if k != "image"}
    write_boot_file(found.mtools(), "clip/manifest.json", json.dumps(data, indent=2, sort_keys=True) + "\n", scratch,
                    manifest["source_date_epoch"])
