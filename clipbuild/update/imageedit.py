"""Editing an image file in place, without root or mounts: the primitives updates are made of.

An ext4 partition read with debugfs, a partition's content replaced (old blocks punched out first), a file of
the boot partition rewritten with mtools, the update journal beside the image (CLIP's clip_install_boot.lck)
with the test hook that kills an update at a given state, and the scratch folders of updates (beside the
image, removed by the next run when an update was killed).

The journal is acted on only when it is clipbuild's own for this image: it carries an HMAC-SHA256 under a key
kept in the user's clipbuild cache folder (created on first use, mode 0600) over its content, which includes
the SHA-256 of the image's GPT (primary header and entries) and of the backup it names. The backup's path is
never read from the journal: it is derived from the image's name. A journal that fails any check is refused
with a message and left alone (docs/security.md says what this does and does not stop).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clipbuild.core import paths, safefile
from clipbuild.core.digest import sha256_file
from clipbuild.core.errors import ClipbuildError, ImageError
from clipbuild.core.run import alive, run
from clipbuild.image import fsimage, gpt, inspection
from clipbuild.update.repository import read_package

JOURNAL_SUFFIX = ".clipbuild-update.json"
JOURNAL_FORMAT = 1
JOURNAL_KEY = "update-journal.key"
MAX_JOURNAL = 64 << 10
SCRATCH_MARK = ".clipbuild-scratch-"


def journal_path(image: Path) -> Path:
    return image.with_name(image.name + JOURNAL_SUFFIX)


def backup_path(image: Path, label: str) -> Path:
    """Where an apps update keeps the old content of partition `label` while it writes it: never a path read
    from the journal."""
    return image.with_name(f"{image.name}.{label}.backup")


def journal_key() -> bytes:
    """The key journals are authenticated with: 32 random bytes in the cache folder, made on first use."""
    path = paths.cache_dir() / JOURNAL_KEY
    if not os.path.lexists(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = safefile.create_exclusive(path.parent, JOURNAL_KEY, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(secrets.token_bytes(32))
        try:
            os.link(tmp, path)  # never replaces a key another run made meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    with os.fdopen(safefile.open_regular(path, follow=False, max_size=64), "rb") as stream:
        key = stream.read()
    if len(key) != 32:
        raise ImageError(f"{path}: not a clipbuild journal key (32 bytes expected, {len(key)} found)",
                         hint="remove it; a new one is made (journals made with the old key are then refused)")
    return key


def _mac(data: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in data.items() if k != "mac"}, sort_keys=True).encode()
    return hmac.new(journal_key(), body, "sha256").hexdigest()


class Journal:
    """`<image>.clipbuild-update.json`: the update under way and how far it got (CLIP's clip_install_boot.lck),
    bound to the image's GPT and authenticated (see the module's docstring)."""

    def __init__(self, found: inspection.Inspection, target: str, version: str, backup_sha256: str = ""):
        self.path = journal_path(found.image)
        self.data = {"format": JOURNAL_FORMAT, "gpt_sha256": found.table_digest, "target": target,
                     "version": version, "state": "", "backup_sha256": backup_sha256}

    def step(self, state: str) -> None:
        self.data["state"] = state
        body = {**self.data, "mac": _mac(self.data)}
        safefile.write_atomic(self.path, (json.dumps(body, sort_keys=True) + "\n").encode(), 0o600)
        if os.environ.get("CLIPBUILD_UPDATE_FAULT") == state:  # tests: die here, as a power cut would
            os._exit(9)

    def done(self) -> None:
        self.path.unlink(missing_ok=True)


_JOURNAL_KEYS = {"format", "gpt_sha256", "target", "version", "state", "backup_sha256", "mac"}


def read_journal(found: inspection.Inspection) -> dict[str, Any] | None:
    """The journal of an update of this image that did not finish, or None when there is none. A journal
    that is not clipbuild's own for this image is refused (ImageError), never acted on."""
    path = journal_path(found.image)
    if not os.path.lexists(path):
        return None
    try:
        with os.fdopen(safefile.open_regular(path, follow=False, max_size=MAX_JOURNAL), "rb") as stream:
            data = json.loads(stream.read())
    except (ClipbuildError, ValueError, RecursionError) as exc:
        raise _foreign(path, f"unreadable ({str(exc).splitlines()[0][:100]})") from None
    if not isinstance(data, dict) or set(data) != _JOURNAL_KEYS or not all(
            isinstance(data[k], str) for k in _JOURNAL_KEYS - {"format"}) or data["format"] != JOURNAL_FORMAT:
        raise _foreign(path, "not in the shape clipbuild writes")
    if not hmac.compare_digest(data["mac"], _mac(data)):
        raise _foreign(path, "its authentication code does not match: not written by clipbuild for this user "
                             "and host, or changed since")
    if data["gpt_sha256"] != found.table_digest:
        raise _foreign(path, "it was written for another image (its GPT digest is not this image's)")
    if data["target"] not in found.manifest["slots"]:
        raise _foreign(path, f"it names slot {data['target']!r}, which the image does not have")
    return data


def _foreign(path: Path, reason: str) -> ImageError:
    return ImageError(f"{path}: update journal refused: {reason}; nothing was done",
                      hint=["if no update of this image was interrupted, remove the file",
                            "an update killed on another host or user account is recovered there (journals are "
                            "authenticated with a key of the user's clipbuild cache folder)"])


@contextmanager
def scratch(image: Path) -> Iterator[Path]:
    """A scratch folder beside the image (the same file system: room for partition-sized files), named after
    the image and this process; folders a killed run left are removed first."""
    clean_scratch(image)
    prefix = f".{image.name}{SCRATCH_MARK}{os.getpid()}-"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=image.parent) as tmp:
        yield Path(tmp)


def clean_scratch(image: Path) -> list[Path]:
    """Remove the scratch folders of runs on `image` whose process is gone; returns what was removed."""
    removed = []
    mark = f".{image.name}{SCRATCH_MARK}"
    for path in image.parent.iterdir():
        pid = path.name.removeprefix(mark).split("-")[0] if path.name.startswith(mark) else ""
        if not pid.isdigit() or alive(int(pid)) or path.is_symlink() or not path.is_dir():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


class Ext4:
    """An ext4 partition of the image, copied out once (sparse), read with debugfs: no mount, no root."""

    def __init__(self, found: inspection.Inspection, label: str, scratch: Path):
        entry = found.entry(label)
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=scratch))  # its own: two may share `scratch`
        self.file, self.count = self.scratch / f"{label}.img", 0
        gpt.copy_out(found.image, entry.start, entry.size, self.file)

    def copy(self, path: str) -> Path:
        """The file or folder at `path` copied out; the returned path does not exist when it is absent."""
        self.count += 1
        out = self.scratch / f"copy-{self.count}"
        out.mkdir()
        run(["debugfs", "-R", f"rdump {path} {out}", self.file])
        return out / Path(path).name

    def names(self, folder: str) -> list[str]:
        """The names of the regular files in `folder` (none when it is absent)."""
        listing = run(["debugfs", "-R", f"ls -p {folder}", self.file], check=False).stdout
        fields = [line.strip().split("/") for line in listing.splitlines()]
        return [f[5] for f in fields if len(f) == 8 and f[2].startswith("100")]


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
