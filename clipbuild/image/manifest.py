"""The image manifest: what an image holds (its disk and partitions, each slot with its root hash and
packages, every package with its signers), written beside the image and embedded on its boot partition; and
the image's file name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipbuild.core.digest import sha256_file
from clipbuild.image import gpt, install
from clipbuild.signing.devpki import DEVELOPMENT
from clipbuild.signing.trust import Verdict

MANIFEST = "manifest.json"
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
