"""Hostile update state: journals planted, edited, damaged or taken from another image, backups swapped,
scratch folders left by killed updates. A journal is acted on only when it is clipbuild's own for this image;
anything else is refused with its reason, and neither the image nor any other file changes."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from clipbuild.core.digest import sha256_file
from clipbuild.core.errors import ImageError
from clipbuild.core.run import run
from clipbuild.image import gpt, inspection
from clipbuild.update import apply, apps, imageedit
from tests.unit.image.gptcraft import MIB, Gpt, entry

LABELS = ("boot", "root_a", "root_a_verity", "mounts_a", "root_b", "root_b_verity", "mounts_b")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPBUILD_CACHE", str(tmp_path / "cache"))


def _image(path: Path) -> inspection.Inspection:
    """A small A/B disk: its GPT crafted, each partition 1 MiB, the manifest agreeing with it."""
    Gpt(disk_size=16 * MIB, entries=[entry(2048 * (i + 1), 2048 * (i + 2) - 1, label)
                                     for i, label in enumerate(LABELS)]).write(path)
    with path.open("r+b") as stream:
        for i in range(len(LABELS)):
            stream.seek(MIB * (i + 1))
            stream.write(bytes([i + 1]) * 4096)
    table = gpt.read_gpt(path)
    partitions = [{"number": e.number, "label": e.label, "name": e.label.split("_")[0], "slot": "", "role": "data",
                   "fs": "ext4", "mount": None, "options": [], "start": e.start, "size": e.size, "type_guid": "T",
                   "guid": e.guid} for e in table.entries]
    slot = {"version": "4.5.0", "fs": "squashfs", "root_hash": "a" * 64, "salt": "b" * 64, "data_blocks": 1}
    slots = {s: {**slot, "root_partition": f"root_{s}", "verity_partition": f"root_{s}_verity"} for s in "ab"}
    manifest = {"partitions": partitions, "slots": slots, "version": "4.5.0"}
    return inspection.Inspection(path, table.disk_guid, table.entries, manifest, "a", {}, table.digest)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(found: inspection.Inspection, reason: str) -> None:
    before = _sha(found.image)
    with pytest.raises(ImageError, match=reason) as exc:
        apps.recover(found)
    assert "update journal refused" in str(exc.value) or "backup" in str(exc.value)
    assert _sha(found.image) == before
    assert imageedit.journal_path(found.image).exists() or imageedit.journal_path(found.image).is_symlink()


def test_no_journal_nothing_to_do(tmp_path):
    assert apps.recover(_image(tmp_path / "disk.img")) is None


def test_a_planted_journal_naming_a_victim_is_refused_and_the_victim_kept(tmp_path):
    """The attack of issue P10: a journal beside the image named a backup that was written over the
    partition, then deleted."""
    found = _image(tmp_path / "disk.img")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious" * 1000)
    imageedit.journal_path(found.image).write_text(json.dumps({"target": "a", "version": "1", "state": "x",
                                                               "backup": str(victim)}))
    _refused(found, "not in the shape clipbuild writes")
    assert victim.read_bytes() == b"precious" * 1000


def _genuine(found: inspection.Inspection) -> Path:
    """A journal as an apps update killed while writing mounts_a leaves it, with its backup."""
    backup = imageedit.backup_path(found.image, "mounts_a")
    part = found.slice("mounts_a")
    gpt.copy_out(found.image, part.start, part.size, backup)
    journal = imageedit.Journal(found, "a", "4.5.0", sha256_file(backup))
    journal.step(apps.WRITING)
    imageedit.drop_partition(found.image, part)
    return backup


def test_a_genuine_journal_rolls_the_partition_back(tmp_path):
    found = _image(tmp_path / "disk.img")
    original = _sha(found.image)
    backup = _genuine(found)
    assert _sha(found.image) != original
    assert "rolled back from its backup" in (apps.recover(found) or "")
    assert _sha(found.image) == original
    assert not backup.exists() and not imageedit.journal_path(found.image).exists()


def _rewrite(found: inspection.Inspection, **changes: object) -> None:
    path = imageedit.journal_path(found.image)
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(("change", "reason"), [
    ({"target": "b"}, "authentication code does not match"),
    ({"state": "apps: written"}, "authentication code does not match"),
    ({"backup_sha256": "0" * 64}, "authentication code does not match"),
    ({"mac": "0" * 64}, "authentication code does not match"),
    ({"backup": "/etc/passwd"}, "not in the shape"),
    ({"format": 2}, "not in the shape"),
])
def test_an_edited_journal_is_refused(tmp_path, change, reason):
    found = _image(tmp_path / "disk.img")
    _genuine(found)
    _rewrite(found, **change)
    _refused(found, reason)


def test_a_journal_of_another_image_is_refused(tmp_path):
    one, two = _image(tmp_path / "one.img"), _image(tmp_path / "two.img")  # fresh GUIDs: other GPT digests
    _genuine(one)
    os.replace(imageedit.journal_path(one.image), imageedit.journal_path(two.image))
    os.replace(imageedit.backup_path(one.image, "mounts_a"), imageedit.backup_path(two.image, "mounts_a"))
    _refused(two, "written for another image")


def test_a_journal_made_with_another_key_is_refused(tmp_path, monkeypatch):
    found = _image(tmp_path / "disk.img")
    _genuine(found)
    monkeypatch.setenv("CLIPBUILD_CACHE", str(tmp_path / "other-cache"))
    _refused(found, "authentication code does not match")


def test_a_swapped_backup_is_refused(tmp_path):
    found = _image(tmp_path / "disk.img")
    backup = _genuine(found)
    with backup.open("r+b") as stream:
        stream.write(b"evil")
    _refused(found, "not the backup the update journal recorded")


def test_a_backup_replaced_by_a_link_is_refused(tmp_path):
    found = _image(tmp_path / "disk.img")
    backup = _genuine(found)
    copy = tmp_path / "elsewhere"
    os.replace(backup, copy)
    backup.symlink_to(copy)
    _refused(found, "left no usable backup")


@pytest.mark.parametrize("kind", ["garbage", "not UTF-8", "a list", "deep", "directory", "FIFO", "dangling link"])
def test_a_damaged_journal_is_refused_never_a_traceback_or_a_hang(tmp_path, kind):
    found = _image(tmp_path / "disk.img")
    path = imageedit.journal_path(found.image)
    makers = {"garbage": lambda: path.write_text("{not json"), "not UTF-8": lambda: path.write_bytes(b"\xff\xfe"),
              "a list": lambda: path.write_text("[]"), "deep": lambda: path.write_text("[" * 100000),
              "directory": path.mkdir, "FIFO": lambda: os.mkfifo(path),
              "dangling link": lambda: path.symlink_to(tmp_path / "nowhere")}
    makers[kind]()
    _refused(found, "update journal refused")


def test_the_journal_key_is_private_and_stable(tmp_path):
    key = imageedit.journal_key()
    path = tmp_path / "cache" / imageedit.JOURNAL_KEY
    assert len(key) == 32 and path.stat().st_mode & 0o077 == 0 and imageedit.journal_key() == key
    path.write_bytes(b"short")
    with pytest.raises(ImageError, match="not a clipbuild journal key"):
        imageedit.journal_key()


# -- scratch folders of killed updates -------------------------------------------------------------------


def test_scratch_left_by_a_killed_run_is_removed_by_the_next(tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    script = ("import os, sys; from pathlib import Path; from clipbuild.update import imageedit\n"
              "with imageedit.scratch(Path(sys.argv[1])) as tmp:\n"
              "    (tmp / 'root.img').write_bytes(b'x' * 4096)\n"
              "    os._exit(9)\n")
    result = run([sys.executable, "-c", script, image], check=False)
    assert result.returncode == 9
    left = [p for p in tmp_path.iterdir() if imageedit.SCRATCH_MARK in p.name]
    assert len(left) == 1 and (left[0] / "root.img").exists()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept")
    link = tmp_path / f".disk.img{imageedit.SCRATCH_MARK}1-link"
    link.symlink_to(outside)  # a planted link named like a scratch folder: never followed
    with imageedit.scratch(image) as tmp:
        assert tmp.parent == tmp_path and tmp.is_dir() and str(os.getpid()) in tmp.name
        assert not left[0].exists()
    assert not tmp.exists() and (outside / "keep").read_text() == "kept" and link.is_symlink()


def test_scratch_of_a_live_run_is_kept(tmp_path):
    image = tmp_path / "disk.img"
    live = tmp_path / f".disk.img{imageedit.SCRATCH_MARK}{os.getpid()}-abc"
    live.mkdir()
    assert imageedit.clean_scratch(image) == [] and live.is_dir()


# -- boot facts read from the boot partition ------------------------------------------------------------


@pytest.mark.parametrize(("extra", "reason"), [("init=/bin/sh", "overrides what clipbuild sets"),
                                               ("rw", "overrides what clipbuild sets|weaken|not among"),
                                               ("dm_verity.error_behavior=0", "dm-verity")])
def test_kernel_arguments_planted_in_the_manifest_are_refused(extra, reason):
    table = 'dm-mod.create="root,,,ro,0 8 verity 1 a b 4096 4096 1 1 sha256 x y 1 panic_on_corruption"'
    manifest = {"slots": {"a": {"cmdline": f"{table} dm-mod.waitfor=x root=/dev/dm-0 ro clip.slot=a "
                                           f"console=ttyS0 {extra}"}}}
    with pytest.raises(ImageError, match=reason):
        apply._extra(manifest, "a")
    manifest["slots"]["a"]["cmdline"] = manifest["slots"]["a"]["cmdline"].replace(extra, "")
    assert apply._extra(manifest, "a") == ("console=ttyS0",)


@pytest.mark.parametrize("text", ["TIMEOUT abc\n", "TIMEOUT \n", "TIMEOUT 99999999999\n", ""])
def test_a_junk_timeout_falls_back(tmp_path, monkeypatch, text):
    monkeypatch.setattr(apply.inspection, "read_boot_file", lambda *args: text)
    found = _image(tmp_path / "disk.img")
    found.manifest["partitions"][0]["mount"] = "/boot"
    assert apply._timeout(found, "a", tmp_path) == 30


def test_apps_lists_follow_the_manifest_only_when_it_agrees_with_the_signed_pins():
    kept = apply._Kept({"clip-apps": {"clip-apps-conf": "4.5.0", "vim": "9.0"}}, policy=None)
    entry = {"set": "clip-apps", "package": "clip-apps-conf", "version": "4.5.0", "file": "f", "sha256": "0" * 64}
    good = [entry, {**entry, "package": "vim", "version": "9.0"}]
    kept.agrees({"slots": {"a": {"packages": good}}}, "a", "clip-apps")
    for edited in ([entry], [*good, {**entry, "package": "extra"}], [entry, {**entry, "package": "vim",
                                                                            "version": "8.0"}]):
        with pytest.raises(ImageError, match="are not the ones the running slot's signed conf package pins"):
            kept.agrees({"slots": {"a": {"packages": edited}}}, "a", "clip-apps")
