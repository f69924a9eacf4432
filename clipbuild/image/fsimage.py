"""Reproducible filesystem images built as plain files, without root, loop devices or mounts.

Every builder takes a tree, a target file and the date (SOURCE_DATE_EPOCH), and writes the same bytes for the
same tree and date, whoever runs it (recipes and their pitfalls: platform-notes §3):

- squashfs: `mksquashfs -all-root -mkfs-time -all-time` (run without SOURCE_DATE_EPOCH, which it refuses
  together with its own time flags);
- ext4: `mkfs.ext4 -d` with a fixed UUID and hash seed and E2FSPROGS_FAKE_TIME, then one `debugfs -w` pass
  that sets every inode's times and owner (mkfs.ext4 1.47 copies ctime and owner from the source tree);
- vfat: `mkfs.vfat --invariant -i VOLID`, then files copied in with mtools under SOURCE_DATE_EPOCH;
- dm-verity: `veritysetup format` with a fixed salt and UUID on plain files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from clipbuild.core.errors import ImageError
from clipbuild.core.run import run

VERITY_BLOCK = 4096


def _fit(what: str, used: int, size: int) -> None:
    if used > size:
        raise ImageError(f"{what} needs {used / 2**20:.1f} MiB but its partition has {size / 2**20:.1f} "
                              "MiB", hint="raise the partition's size in the profile (disk.partitions)")


def squashfs(tree: Path, out: Path, date: int, size: int, *, label: str = "root") -> None:
    """A squashfs of `tree` (all files owned by root), at most `size` bytes, padded to whole verity blocks."""
    out.unlink(missing_ok=True)
    run(["env", "-u", "SOURCE_DATE_EPOCH", "mksquashfs", tree, out, "-noappend", "-all-root", "-comp", "zstd",
         "-mkfs-time", str(date), "-all-time", str(date), "-reproducible", "-quiet", "-no-progress"])
    used = out.stat().st_size
    padded = -(-used // VERITY_BLOCK) * VERITY_BLOCK
    os.truncate(out, padded)
    _fit(f"the {label} filesystem", padded, size)


def erofs(tree: Path, out: Path, date: int, size: int, uuid: str, *, label: str = "root") -> None:
    out.unlink(missing_ok=True)
    run(["mkfs.erofs", f"-T{date}", "-U", uuid, "--all-root", "-zlz4hc", "--quiet", out, tree])
    used = out.stat().st_size
    os.truncate(out, -(-used // VERITY_BLOCK) * VERITY_BLOCK)
    _fit(f"the {label} filesystem", out.stat().st_size, size)


def ext4(tree: Path | None, out: Path, date: int, size: int, uuid: str, *, label: str) -> None:
    """An ext4 filesystem of exactly `size` bytes holding `tree` (or empty), every file owned by root."""
    out.unlink(missing_ok=True)
    out.touch()
    args = ["mkfs.ext4", "-q", "-F", "-L", label[:16], "-U", uuid, "-b", "4096", "-E",
            f"hash_seed={uuid},lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0", "-O", "^metadata_csum_seed"]
    if tree is not None:
        args += ["-d", tree]
    result = run([*args, out, f"{size // 1024}k"], env={"E2FSPROGS_FAKE_TIME": str(date)}, check=False)
    if result.returncode != 0:
        if "Could not allocate block" in result.stderr or "No space left" in result.stderr:
            _fit(f"the {label} filesystem", _tree_size(tree) if tree else size + 1, size)
        run([*args, out, f"{size // 1024}k"], env={"E2FSPROGS_FAKE_TIME": str(date)})  # raises with details
    _normalise_ext4(out, tree, date)


def _tree_size(tree: Path) -> int:
    return sum(p.lstat().st_size for p in tree.rglob("*")) + 4096 * sum(1 for _ in tree.rglob("*"))


def _normalise_ext4(image: Path, tree: Path | None, date: int) -> None:
    """Every inode's times set to `date` and its owner to root, in one debugfs session."""
    paths = ["/"]
    if tree is not None:
        paths += ["/" + p.relative_to(tree).as_posix() for p in sorted(tree.rglob("*"))]
    paths.append("/lost+found")
    commands = []
    for path in paths:
        quoted = '"' + path.replace('"', '\\"') + '"'
        for field in ("atime", "mtime", "ctime", "crtime"):
            commands.append(f"sif {quoted} {field} @{date}")
        commands += [f"sif {quoted} uid 0", f"sif {quoted} gid 0"]
    script = image.with_name(image.name + ".debugfs")
    script.write_text("\n".join(commands) + "\n")
    try:
        result = run(["debugfs", "-w", "-f", script, image], env={"E2FSPROGS_FAKE_TIME": str(date)})
    finally:
        script.unlink(missing_ok=True)
    errors = [line for line in result.stderr.splitlines() if re.search(r"(?i)error|not found|invalid", line)]
    if errors:
        raise ImageError(f"debugfs could not normalise {image.name}: {errors[0]}")


def vfat(out: Path, size: int, volume_id: str, label: str, files: dict[str, Path], date: int, *,
         fat: int = 16) -> None:
    """A FAT16 (or `fat` 12, for images under about 9 MiB) image of `size` bytes with `files` (path in the
    image -> source), dates set to `date`."""
    out.unlink(missing_ok=True)
    run(["mkfs.vfat", "-C", "--invariant", "-i", volume_id, "-F", str(fat), "-n", label[:11].upper(), "-h", "0",
         out, str(size // 1024)])
    env = {"SOURCE_DATE_EPOCH": str(date), "MTOOLS_SKIP_CHECK": "1"}
    made: set[str] = set()
    for target in sorted(files):
        parent = target.rsplit("/", 1)[0] if "/" in target else ""
        parts = [p for p in parent.split("/") if p]
        for i in range(1, len(parts) + 1):
            directory = "/".join(parts[:i])
            if directory not in made:
                run(["mmd", "-i", out, f"::/{directory}"], env=env)
                made.add(directory)
        run(["mcopy", "-i", out, files[target], f"::/{target}"], env=env)


def vfat_replace(image: str, target: str, source: Path, date: int) -> None:
    """Overwrite one file of a FAT image (`image` may carry mtools' @@OFFSET)."""
    run(["mcopy", "-o", "-i", image, source, f"::/{target}"],
        env={"SOURCE_DATE_EPOCH": str(date), "MTOOLS_SKIP_CHECK": "1"})


def vfat_read(image: str, target: str, out: Path) -> None:
    run(["mcopy", "-n", "-i", image, f"::/{target}", out], env={"MTOOLS_SKIP_CHECK": "1"})


def vfat_exists(image: str, target: str) -> bool:
    """Whether the FAT image holds `target` (a file or folder)."""
    return run(["mdir", "-b", "-i", image, f"::/{target}"], env={"MTOOLS_SKIP_CHECK": "1"},
               check=False).returncode == 0


def vfat_list(image: str, folder: str) -> list[str]:
    """The names in one folder of a FAT image (none when the folder is absent)."""
    result = run(["mdir", "-b", "-i", image, f"::/{folder}"], env={"MTOOLS_SKIP_CHECK": "1"}, check=False)
    if result.returncode != 0:
        return []
    return sorted(line.rstrip("/").rsplit("/", 1)[-1] for line in result.stdout.splitlines() if line.strip())


def vfat_rename(image: str, source: str, target: str) -> None:
    """Rename one file of a FAT image (mtools' mren): no byte of it is rewritten."""
    run(["mren", "-i", image, f"::/{source}", f"::/{target}"], env={"MTOOLS_SKIP_CHECK": "1"})


def vfat_delete(image: str, target: str) -> None:
    """Remove one file of a FAT image, if it is there."""
    if vfat_exists(image, target):
        run(["mdel", "-i", image, f"::/{target}"], env={"MTOOLS_SKIP_CHECK": "1"})


@dataclass(frozen=True)
class Verity:
    root_hash: str
    salt: str
    data_blocks: int
    hash_size: int

    @property
    def data_sectors(self) -> int:
        return self.data_blocks * VERITY_BLOCK // 512


def verity_format(data: Path, hashes: Path, salt: str, uuid: str) -> Verity:
    hashes.unlink(missing_ok=True)
    out = run(["veritysetup", "format", f"--salt={salt}", f"--uuid={uuid}", f"--data-block-size={VERITY_BLOCK}",
               f"--hash-block-size={VERITY_BLOCK}", "--hash=sha256", data, hashes]).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    root_hash = fields["Root hash"].strip()
    return Verity(root_hash, salt, data.stat().st_size // VERITY_BLOCK, hashes.stat().st_size)


def verity_verify(data: Path, hashes: Path, root_hash: str) -> bool:
    """True when every data block matches the hash tree and `root_hash`."""
    return run(["veritysetup", "verify", data, hashes, root_hash], check=False).returncode == 0
