"""Apps updated in place, on the running slot's mounts partition, with CLIP's journal (clipos4.md §3).

CLIP::Pkg::Install wrote the lists `pending`, `installing`, `upgrading` and `removing` before acting, and its
recovery undid a half-done transaction from them. Here the running system is an image file, so:

1. the running slot's root (squashfs) and mounts partition are copied out and joined as the device sees them
   (/mounts/var on /var, /mounts/usr on /usr/local), and the four lists are written to /var/pkg;
2. dpkg installs the new apps and removes the dropped ones in that tree. If it fails, CLIP's recovery runs
   from the lists in the same tree (new packages removed, upgraded ones downgraded and removed ones reinstalled
   from the local mirror's old packages) and the image is left as it was: the apps roll back;
3. on success the lists are emptied, the mounts filesystem is rebuilt, and written over the partition with a
   backup of the old partition beside the image and a journal: an update killed during that write is
   rolled back (the backup written back) by the next `update apply` or `update rollback`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from clipbuild.core import beneath, safefile
from clipbuild.core.digest import sha256_file
from clipbuild.core.errors import AppsUpdateFailed, ClipbuildError, ImageError
from clipbuild.core.run import run
from clipbuild.image import fsimage, gpt, inspection, install, slot
from clipbuild.update import imageedit
from clipbuild.update.releasemeta import RECORD_MOUNTS as RECORD
from clipbuild.update.repository import Package

LISTS = ("pending", "installing", "upgrading", "removing")
WRITING, EMPTIED = "apps: writing the mounts partition", "apps: old mounts partition content dropped"


def apply_apps(found: inspection.Inspection, members: tuple[Package, ...], scratch: Path,
               progress: Callable[[str], None], allow: Mapping[str, Collection[str]] | None = None, *,
               record: bytes = b"") -> dict[str, Any]:
    """Install `members` (clip-apps-conf and what it pins) on the active slot; returns the slot's new entry.
    `record`, the release metadata that was accepted, is kept on the slot's mounts partition."""
    manifest, image = found.manifest, found.image
    active = found.active_slot or ""
    info = manifest["slots"][active]
    if info["fs"] != "squashfs":
        raise ImageError(f"apps updates read the running root as squashfs; slot {active} is {info['fs']}")
    install.check_packages([p.path for p in members], allow)  # before anything is unpacked or written
    stage = _stage(found, active, info, scratch)
    installed = inspection.slot_packages(manifest, active)
    old = {e["package"]: e for e in installed if e["set"] == "clip-apps"}
    new = {p.name: p for p in members}
    lists = {"pending": sorted(p.path.name for p in members),
             "installing": sorted(n for n in new if n not in old),
             "upgrading": sorted(f"{n} {old[n]['version']} {new[n].version}" for n in new
                                 if n in old and old[n]["version"] != new[n].version),
             "removing": sorted(n for n in old if n not in new)}
    _write_lists(stage, lists)
    progress(f"apps: {len(lists['installing'])} new, {len(lists['upgrading'])} upgraded, "
             f"{len(lists['removing'])} removed")
    mirror = "var/pkg/mirrors/clip"
    try:
        _dpkg(stage, ["-i", *(p.path for p in members)], scratch)
        if lists["removing"]:
            _dpkg(stage, ["--purge", *lists["removing"]], scratch)
    except ClipbuildError as exc:
        _recover(stage, lists, old, mirror, scratch)
        raise AppsUpdateFailed(f"the apps update failed and was rolled back; {image.name} was not written "
                               f"({exc.lines()[0]})") from exc
    _write_lists(stage, {name: [] for name in LISTS})
    for member in members:
        beneath.copy_in(member.path, stage, f"{mirror}/{member.path.name}")
    if record:
        beneath.mkdir(stage, PurePosixPath(RECORD).parent)
        beneath.write_bytes(stage, RECORD, record)
    _write_back(found, active, stage, scratch, progress)
    entries = [e for e in installed if e["set"] != "clip-apps"]
    entries += imageedit.package_entries({"clip-apps": [p.path for p in members]})
    return {**info, "packages": entries}


def recover(found: inspection.Inspection) -> str | None:
    """An apps update killed while writing the partition: the backup written back, once the journal proved
    to be clipbuild's own for this image and the backup the one it recorded. Returns what was done."""
    data = imageedit.read_journal(found)
    if data is None or not data["backup_sha256"]:
        return None
    image, label = found.image, f"mounts_{data['target']}"
    part = found.slice(label)  # where it is: from the GPT
    backup = imageedit.backup_path(image, label)
    try:
        os.close(safefile.open_regular(backup, follow=False))
    except ClipbuildError as exc:
        raise ImageError(f"{imageedit.journal_path(image)}: the apps update it records left no usable backup "
                         f"({exc.lines()[0]}); nothing was done", hint="restore the image from a copy") from None
    if os.stat(backup, follow_symlinks=False).st_size != part.size or sha256_file(backup) != data["backup_sha256"]:
        raise ImageError(f"{backup}: not the backup the update journal recorded (size or SHA-256 differs); "
                         "nothing was done", hint="restore the image from a copy")
    imageedit.replace_partition(image, part, backup)
    backup.unlink()
    imageedit.journal_path(image).unlink()
    return f"an apps update was killed while writing {label}; the partition was rolled back from its backup"


def _stage(found: inspection.Inspection, active: str, info: dict[str, Any], scratch: Path) -> Path:
    """The running system as dpkg sees it: the root, with the mounts partition's var/ and usr/ bound in."""
    root = found.entry(info["root_partition"])
    squash = scratch / "root.squashfs"
    gpt.copy_out(found.image, root.start, info["data_blocks"] * fsimage.VERITY_BLOCK, squash)
    stage = scratch / "stage"
    run(["unsquashfs", "-no-progress", "-quiet", "-d", stage, squash])
    squash.unlink()
    mounts = imageedit.Ext4(found, f"mounts_{active}", scratch).copy("/")
    beneath.remove_tree(mounts, "lost+found")
    beneath.remove_tree(stage, "mounts")  # an empty mount point on the device
    beneath.replace(mounts.parent, mounts.name, stage, "mounts")
    for where, target in (("var", "mounts/var"), ("usr/local", "../mounts/usr")):  # the device's binds
        beneath.remove_tree(stage, where)  # mount points, hidden on the device by the binds
        parent, _, name = where.rpartition("/")
        with beneath.opened(stage, parent or ".", os.O_PATH | os.O_DIRECTORY) as parent_fd:
            os.symlink(target, name, dir_fd=parent_fd)
    return stage


def _write_lists(stage: Path, lists: dict[str, list[str]]) -> None:
    beneath.mkdir(stage, "var/pkg")
    for name in LISTS:
        beneath.write_text(stage, f"var/pkg/{name}", "".join(f"{line}\n" for line in lists[name]))


def _dpkg(stage: Path, args: list[Any], scratch: Path) -> None:
    run(["dpkg", f"--root={stage}", f"--log={scratch / 'dpkg-apps.log'}", "--force-not-root",
         "--force-script-chrootless", "--no-triggers", *args])


def _recover(stage: Path, lists: dict[str, list[str]], old: dict[str, dict], mirror: str, scratch: Path) -> None:
    """CLIP's recovery, from the lists: new packages removed, upgraded and removed ones put back from the
    local mirror (the apt cache of the original), with dpkg --force-all as CLIP did."""
    for name in lists["installing"]:
        run(["dpkg", f"--root={stage}", "--force-not-root", "--force-script-chrootless", "--force-all",
             "--purge", name], check=False)
    files = [old[line.split()[0]]["file"] for line in lists["upgrading"]] + [old[n]["file"] for n in lists["removing"]]
    back = [beneath.regular_path(stage, f"{mirror}/{name}") for name in files]
    if back:
        run(["dpkg", f"--root={stage}", "--force-not-root", "--force-script-chrootless", "--force-all", "-i",
             *back], check=False)


def _write_back(found: inspection.Inspection, active: str, stage: Path, scratch: Path,
                progress: Callable[[str], None]) -> None:
    manifest, image = found.manifest, found.image
    mounts = stage / "mounts"
    date = manifest["source_date_epoch"]
    install.normalise_tree(mounts, date)
    part = found.slice(f"mounts_{active}")
    new = scratch / "mounts.img"
    try:
        slot.ext4_filesystem(part, mounts, new, date, manifest["species"])
    except ClipbuildError as exc:
        raise ImageError(f"apps update not applied: {exc.lines()[0]}", hint=f"nothing was written: {image.name} "
                         f"is as it was; fix the cause and run the same command again") from exc
    backup = imageedit.backup_path(image, part.label)
    backup.unlink(missing_ok=True)  # a leftover no journal names (recover() ran first); created afresh
    gpt.copy_out(image, part.start, part.size, backup)
    journal = imageedit.Journal(found, active, manifest["version"], sha256_file(backup))
    progress(f"apps: writing {part.label} (backup beside the image until done)")
    journal.step(WRITING)
    imageedit.drop_partition(image, part)
    journal.step(EMPTIED)
    gpt.copy_into(image, part, new)
    journal.step("apps: written")
    journal.done()
    backup.unlink()
