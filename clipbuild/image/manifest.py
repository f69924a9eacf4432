"""The image manifest: what an image holds (its disk and partitions, each slot with its root hash and
packages, every package with its signers), written beside the image and embedded on its boot partition; and
the image's file name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from clipbuild.core.digest import sha256_file
from clipbuild.core.errors import ImageError
from clipbuild.image import gpt, install
from clipbuild.signing.devpki import DEVELOPMENT
from clipbuild.signing.trust import Verdict

MANIFEST = "manifest.json"
SYSTEMD_BOOT = "systemd-boot"  # the UEFI path's boot loader (docs/boot.md); the BIOS path's is syslinux
EMBEDDED_MANIFEST = "clip/manifest.json"  # on the boot partition
MANIFEST_FORMAT = 1


def image_name(species: str, version: str, mode: str) -> str:
    """`<species>-<version>.img` for a release, `<species>-<version>-dev.img` for a development image, so the
    two can never be taken for each other."""
    return f"{species}-{version}{'-dev' if mode == DEVELOPMENT else ''}.img"


def describe(pool: dict[str, list[tuple[Path, Verdict]]], slots: dict[str, dict[str, Any]],
             slices: list[gpt.Slice], release: str, *, species: str, version: str, description: str, signing: str,
             date: int, disk_size: int) -> dict[str, Any]:
    """The manifest of an image being assembled from the verified `pool` (packages by set); each slot's entry
    in `slots` gets the packages and the release too."""
    packages, signers = [], {}
    for set_name, entries in pool.items():
        for deb, verdict in entries:
            fields = install.control_fields(deb)
            packages.append({"set": set_name, "package": fields["Package"], "version": fields["Version"],
                             "file": deb.name, "sha256": sha256_file(deb),
                             "signers": {s.role: s.fingerprint for s in verdict.signers}})
            for s in verdict.signers:
                signers[s.fingerprint] = {"role": s.role, "subject": s.subject, "fingerprint": s.fingerprint,
                                          "digest": s.digest}
    for info in slots.values():  # what each slot holds; an update changes one slot's entry
        info["packages"] = packages
        info["release"] = release
    return {
        "format": MANIFEST_FORMAT, "species": species, "version": version,
        "release": release, "description": description, "signing": signing,
        "source_date_epoch": date, "active_slot": sorted(slots)[0],
        "disk": {"size": disk_size, "guid": gpt.stable_guid(species, "disk")},
        "partitions": [s.to_dict() for s in slices], "slots": slots, "packages": packages,
        "signers": sorted(signers.values(), key=lambda s: (s["role"], s["fingerprint"])),
    }


# -- the shape of a manifest read back from an image -------------------------------------------------------
# A manifest read from a boot partition is input like any other: its shape is checked before any of it is
# used. A key ending in "?" is optional; {"*": X} maps names to X; [X] is a list of X.

HEX64 = re.compile(r"[0-9a-f]{64}")
PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]*")  # a file or set name: no folder, never . or ..
SLOT_NAME = re.compile(r"[a-z][a-z0-9]{0,7}")
_PACKAGE = {"set": PLAIN, "package": str, "version": str, "file": PLAIN, "sha256": HEX64}
_PARTITION = {"number": int, "label": PLAIN, "name": str, "slot": str, "role": str, "fs": str,
              "mount": (str, type(None)), "options": [str], "start": int, "size": int, "type_guid": str,
              "guid": str}
_SLOT = {"version": str, "fs": str, "root_partition": PLAIN, "verity_partition": PLAIN, "root_hash": HEX64,
         "salt": re.compile(r"[0-9a-f]{1,256}"), "data_blocks": int, "kernel_sha256?": HEX64,
         "packages?": [_PACKAGE], "release?": str, "cmdline?": str, "selftests?": [PLAIN],
         "jails?": [{"name": PLAIN, "start": bool, "nsopts": [str], "idle": str}],
         "uki?": re.compile(r"EFI/Linux/clip-[a-z][a-z0-9]{0,7}(\+\d{1,3}(-\d{1,3})?)?\.efi"), "uki_sha256?": HEX64,
         "pcrs?": {"*": HEX64}}
_KEY = {"subject": str, "sha256": HEX64}
_BOOT = {"loader": re.compile(r"syslinux|systemd-boot"),
         "secure_boot?": {"owner": str, "PK": _KEY, "KEK": _KEY, "db": _KEY}}
SHAPE = {"species": PLAIN, "version": str, "release": str, "signing": str, "source_date_epoch": int,
         "partitions": [_PARTITION], "slots": {"*": _SLOT}, "packages": [_PACKAGE], "signers": [dict],
         "boot?": _BOOT}


def boot_loader(manifest: dict[str, Any]) -> str:
    """The image's boot path: its manifest's boot.loader; syslinux for a manifest from before the UEFI path."""
    return (manifest.get("boot") or {}).get("loader", "syslinux")


def check_shape(data: Any, where: str) -> dict[str, Any]:
    """`data` if it has the manifest's shape (types, names, digests); else an ImageError naming the key."""
    problem = _shape(data, SHAPE, "")
    if problem is None and not all(SLOT_NAME.fullmatch(name) for name in data["slots"]):
        problem = "slots: a slot name is not a short lower-case name"
    if problem:
        raise ImageError(f"{where}: not a clipbuild manifest: {problem}",
                         hint="the boot partition was changed or damaged; rebuild or restore the image")
    return data


def _shape(value: Any, spec: Any, path: str) -> str | None:
    if isinstance(spec, re.Pattern):
        ok = isinstance(value, str) and spec.fullmatch(value) is not None
        return None if ok else f"{path or 'value'}: {_short(value)} is not of the expected form"
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{path}: a list is expected"
        return next((p for i, item in enumerate(value) if (p := _shape(item, spec[0], f"{path}[{i}]"))), None)
    if isinstance(spec, dict) and "*" in spec:
        if not isinstance(value, dict):
            return f"{path}: a mapping is expected"
        return next((p for k, v in value.items() if (p := _shape(v, spec["*"], f"{path}.{k}"))), None)
    if isinstance(spec, dict):
        return _record(value, spec, path)
    types = spec if isinstance(spec, tuple) else (spec,)
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        return f"{path}: {_short(value)} is not {' or '.join(t.__name__ for t in types)}"
    return None


def _record(value: Any, spec: dict[str, Any], path: str) -> str | None:
    if not isinstance(value, dict):
        return f"{path or 'the manifest'}: a mapping is expected"
    for key, sub in spec.items():
        name = key.rstrip("?")
        if name not in value:
            if key.endswith("?"):
                continue
            return f"{path}.{name}: missing".lstrip(".")
        if problem := _shape(value[name], sub, f"{path}.{name}".lstrip(".")):
            return problem
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
