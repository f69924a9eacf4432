"""Hostile images: crafted GPTs, manifests, boot files and file types. Each is refused with an ImageError (or
NotAFile) naming the file and the rule, never a traceback or a hang, and the image's bytes are unchanged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from clipbuild.core.errors import ImageError, NotAFile
from clipbuild.image import bootloader, gpt, inspection
from clipbuild.image.manifest import check_shape
from tests.unit.image.gptcraft import MIB, Gpt, entry


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(path: Path, match: str) -> None:
    before = _digest(path)
    with pytest.raises(ImageError, match=match) as exc:
        gpt.read_gpt(path)
    assert str(path) in str(exc.value)
    assert _digest(path) == before


def test_a_well_formed_crafted_gpt_reads(tmp_path):
    table = gpt.read_gpt(Gpt().write(tmp_path / "disk.img"))
    assert [(e.label, e.start, e.size) for e in table.entries] == [("boot", MIB, MIB), ("root_a", 2 * MIB, 2 * MIB)]
    assert len(table.digest) == 64


GPTS = {
    "entry size 0": (Gpt(entry_size=0), "entry size 0 is not"),
    "entry size 16": (Gpt(entry_size=16), "entry size 16 is not"),
    "entry size not a multiple of 8": (Gpt(entry_size=130), "entry size 130"),
    "header size 8": (Gpt(header_size=8), "header size 8 is outside"),
    "header size past its sector": (Gpt(header_size=600), "header size 600"),
    "huge entry count": (Gpt(count=2**31), "2147483648 GPT entries"),
    "entries past the end of the file": (Gpt(entries_lba=30, first_usable=40, file_size=30 * 512 + 100),
                                         "truncated"),
    "areas out of order": (Gpt(entries_lba=4000), "out of order"),
    "bad UTF-16 label": (Gpt(entries=[entry(2048, 4095, b"\x00\xd8A\x00")]), "not valid UTF-16"),
    "partition ends before it starts": (Gpt(entries=[entry(4095, 2048)]), "ends .* before it starts"),
    "overlapping partitions": (Gpt(entries=[entry(2048, 8191, "root_a"), entry(4096, 6143, "root_b")]), "overlap"),
    "partition outside the disk": (Gpt(entries=[entry(2048, 10**9)]), "outside the disk's usable area"),
    "partition in the GPT's own sectors": (Gpt(entries=[entry(1, 2048)]), "outside the disk's usable area"),
    "unaligned partition": (Gpt(entries=[entry(2049, 4096)]), "not aligned"),
    "two partitions with one label": (Gpt(entries=[entry(2048, 4095, "x"), entry(4096, 6143, "x")]),
                                      "labelled 'x'"),
    "truncated file": (Gpt(file_size=6 * MIB), "truncated"),
    "backup header past the end": (Gpt(backup_lba=10**7), "truncated"),
}


@pytest.mark.parametrize("case", sorted(GPTS))
def test_crafted_gpts_are_refused_by_name(tmp_path, case):
    table, reason = GPTS[case]
    _refused(table.write(tmp_path / "disk.img"), reason)


def test_a_damaged_crc_is_refused(tmp_path):
    image = Gpt().write(tmp_path / "disk.img")
    with image.open("r+b") as stream:
        stream.seek(2 * 512 + 60)
        stream.write(b"\x01")
    _refused(image, "entries' checksum")


def test_no_gpt_at_all(tmp_path):
    image = tmp_path / "zero.img"
    image.write_bytes(bytes(4096))
    _refused(image, "no GPT")
    short = tmp_path / "short.img"
    short.write_bytes(b"x" * 600)
    _refused(short, "no GPT")


@pytest.mark.parametrize("kind", ["directory", "dangling link", "FIFO"])
def test_what_is_not_a_file_is_refused_never_opened_blocking(tmp_path, kind):
    path = tmp_path / "disk.img"
    if kind == "directory":
        path.mkdir()
    elif kind == "dangling link":
        path.symlink_to(tmp_path / "nowhere")
    else:
        os.mkfifo(path)
    with pytest.raises(NotAFile, match="a regular file is expected") as exc:
        inspection.read(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("kind", ["directory", "FIFO", "dangling link"])
def test_the_cli_says_one_error_line(tmp_path, clipbuild, kind):
    path = tmp_path / "disk.img"
    {"directory": path.mkdir, "FIFO": lambda: os.mkfifo(path),
     "dangling link": lambda: path.symlink_to(tmp_path / "nowhere")}[kind]()
    result = clipbuild("inspect", str(path))
    assert result.code in (1, 2)
    lines = result.err.strip().splitlines()
    assert lines[0].startswith(f"error: {path}:") and "Traceback" not in result.err


def test_the_cli_refuses_a_crafted_gpt_in_one_line(tmp_path, clipbuild):
    image = Gpt(entry_size=16).write(tmp_path / "disk.img")
    before = _digest(image)
    result = clipbuild("inspect", str(image))
    assert result.code in (1, 2) and result.err.startswith(f"error: {image}: GPT entry size 16")
    assert "Traceback" not in result.err and _digest(image) == before


# -- manifests of the wrong shape -----------------------------------------------------------------------


def good_manifest() -> dict:
    part = {"number": 1, "label": "boot", "name": "boot", "slot": "", "role": "data", "fs": "vfat",
            "mount": "/boot", "options": [], "start": MIB, "size": MIB, "type_guid": "X", "guid": "Y"}
    slot = {"version": "4.5.0", "fs": "squashfs", "root_partition": "root_a", "verity_partition": "root_a_verity",
            "root_hash": "a" * 64, "salt": "b" * 64, "data_blocks": 10}
    package = {"set": "clip-core", "package": "busybox", "version": "1.0", "file": "busybox_1.0_amd64.deb",
               "sha256": "c" * 64}
    return {"species": "client", "version": "4.5.0", "release": "r", "signing": "development",
            "source_date_epoch": 0, "partitions": [part], "slots": {"a": slot}, "packages": [package],
            "signers": []}


def _edit(path: str, value: object) -> dict:
    data = good_manifest()
    keys = path.split(".")
    target: object = data
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]  # type: ignore[index]
    target[int(keys[-1]) if isinstance(target, list) else keys[-1]] = value  # type: ignore[index]
    return data


MANIFESTS = {
    "a list": ([], "the manifest: a mapping is expected"),
    "slots as a list": (_edit("slots", ["a"]), "slots: a mapping is expected"),
    "data_blocks a string": (_edit("slots.a.data_blocks", "10"), "slots.a.data_blocks: '10' is not int"),
    "data_blocks a bool": (_edit("slots.a.data_blocks", True), "is not int"),
    "a package file leaving the mirror": (_edit("packages.0.file", "../../etc/passwd"), "packages\\[0\\].file"),
    "a set with a slash": (_edit("packages.0.set", "clip/../x"), "packages\\[0\\].set"),
    "a root hash that is not hex": (_edit("slots.a.root_hash", "z" * 64), "root_hash"),
    "a slot named like a path": ({**good_manifest(), "slots": {"../a": good_manifest()["slots"]["a"]}},
                                 "slot name"),
    "start missing": ({**good_manifest(), "partitions": [{"label": "boot"}]}, "partitions\\[0\\].number: missing"),
    "species null": (_edit("species", None), "species"),
    # The UEFI path's keys: a boot loader clipbuild does not make, a UKI path out of EFI/Linux, a PCR that is not
    # a SHA-256 digest, a db fingerprint that is not hex.
    "a foreign boot loader": ({**good_manifest(), "boot": {"loader": "grub"}}, "boot.loader"),
    "a UKI path leaving EFI/Linux": (_edit("slots.a", {**good_manifest()["slots"]["a"],
                                                      "uki": "EFI/Linux/../../BOOT/BOOTX64.EFI"}), "slots.a.uki"),
    "a PCR that is not a digest": (_edit("slots.a", {**good_manifest()["slots"]["a"], "pcrs": {"4": "00"}}),
                                   "slots.a.pcrs.4"),
    "a db fingerprint that is not hex": ({**good_manifest(), "boot": {"loader": "systemd-boot", "secure_boot": {
        "owner": "x", "PK": {"subject": "s", "sha256": "0" * 64}, "KEK": {"subject": "s", "sha256": "0" * 64},
        "db": {"subject": "s", "sha256": "not hex"}}}}, "boot.secure_boot.db.sha256"),
}


@pytest.mark.parametrize("case", sorted(MANIFESTS))
def test_manifests_of_the_wrong_shape_are_refused(case):
    data, reason = MANIFESTS[case]
    with pytest.raises(ImageError, match=reason) as exc:
        check_shape(data, "disk.img: clip/manifest.json")
    assert str(exc.value).startswith("disk.img: clip/manifest.json: not a clipbuild manifest")


def test_a_good_manifest_passes():
    assert check_shape(good_manifest(), "x") == good_manifest()


@pytest.mark.parametrize("text", ["", "{", "[" * 100000 + "]" * 100000, "\"x\"", "NaN"])
def test_manifest_text_that_is_not_json_or_a_dict_is_refused(tmp_path, text):
    with pytest.raises(ImageError, match=r"clip/manifest\.json"):
        inspection._manifest(tmp_path / "disk.img", text)


def test_a_binary_boot_file_is_refused(tmp_path, monkeypatch):
    def fake_read(image: str, name: str, out: Path) -> None:
        out.write_bytes(b"include \xff\xfe extlinux_a.conf\n")

    monkeypatch.setattr(inspection.fsimage, "vfat_read", fake_read)
    with pytest.raises(ImageError, match=r"syslinux/extlinux\.conf on the boot partition is not UTF-8"):
        inspection.read_boot_file(tmp_path / "disk.img", MIB, bootloader.SWITCH, tmp_path)


@pytest.mark.parametrize("text", ["include extlinux_../../x.conf", "include extlinux_.conf", "include a b",
                                  "include extlinux_A.conf", "", "\0\0"])
def test_a_switch_naming_no_plain_slot_selects_none(text):
    assert bootloader.active_slot(text) is None


def test_slices_take_their_offsets_from_the_gpt_and_edits_are_refused(tmp_path):
    image = Gpt().write(tmp_path / "disk.img")
    table = gpt.read_gpt(image)
    manifest = good_manifest()
    root = {**manifest["partitions"][0], "number": 2, "label": "root_a", "name": "root", "slot": "a", "mount": "/",
            "start": 0, "size": 8 * MIB, "guid": "EDITED"}  # an edit pointing the root at the GPT itself
    manifest["partitions"] = [{**manifest["partitions"][0], "guid": table.entries[0].guid}, root]
    found = inspection.Inspection(image, table.disk_guid, table.entries, manifest, "a", {}, table.digest)
    assert [(s.label, s.start, s.size) for s in found.slices()] == [("boot", MIB, MIB), ("root_a", 2 * MIB, 2 * MIB)]
    with pytest.raises(ImageError, match="partition root_a: the manifest on the boot partition disagrees"):
        found.check_writable()


def test_a_switch_naming_a_missing_slot_is_refused_before_any_write(tmp_path):
    labels = ("root_a", "root_a_verity", "mounts_a")
    image = Gpt(entries=[entry(2048 * (i + 1), 2048 * (i + 2) - 1, label) for i, label in enumerate(labels)]).write(
        tmp_path / "disk.img")
    table = gpt.read_gpt(image)
    manifest = {**good_manifest(), "partitions": []}
    found = inspection.Inspection(image, table.disk_guid, table.entries, manifest, "c", {}, table.digest)
    with pytest.raises(ImageError, match=r"extlinux\.conf selects slot 'c', which the image does not have"):
        found.check_writable()
    found.active_slot = "a"
    assert found.check_writable() == "a"
    found.manifest["slots"]["a"]["data_blocks"] = 10**6  # a root larger than its partition
    with pytest.raises(ImageError, match="do not fit partition root_a"):
        found.check_writable()


def test_a_relative_image_name_is_a_file_not_a_species(tmp_path, clipbuild, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Gpt(entry_size=16).write(tmp_path / "c.img")
    result = clipbuild("inspect", "c.img")
    assert result.code == 1 and result.err.startswith("error: c.img: GPT entry size 16"), result.err
    os.mkfifo(tmp_path / "f.img")
    assert clipbuild("inspect", "f.img").err.startswith("error: f.img: it is a FIFO")
