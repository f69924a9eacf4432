"""A Portage binpkg wrapped as a CLIP .deb (clipos4.md §1.5-1.6): CLIP's control fields in the original order,
DEBIAN/sha2sums, DEBIAN/contents, conffiles, CLIP's path rules, reproducible bytes. Build-only files (headers,
static archives, start files, pkg-config files, lib*.so links) stay in the build's ROOT and out of the .deb.

Same binpkg, same options and same date give the same .deb: every mtime is the date, owners are root:root, and
dpkg-deb runs with SOURCE_DATE_EPOCH. Core packages (Priority Required) are gzip-compressed, apps packages xz,
as CLIP's build did.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822

from clipbuild.core.errors import PackagingError
from clipbuild.core.run import run
from clipbuild.formats.depmap import deb_name, deb_version, relations, split_pf
from clipbuild.formats.gpkg import Gpkg, extract

PRIORITY = {"core": "Required", "apps": "Important"}
# CLIP-Pkg-QA clippkg_check_paths: where an apps package may install, per distribution.
APPS_TREES = {"clip": ("usr/local/", "var/", "mounts/", "viewers/", "etc/admin/"),
              "rm": ("usr/local/", "var/", "audit_root/", "user_root/")}
ARCH = {"x86_64": "amd64", "i686": "i386", "i586": "i386", "i486": "i386", "i386": "i386"}
# What builds need and the running system does not (CLIP had no -dev packages): headers, pkg-config files, static
# archives, C start files and the lib*.so links the linker reads. They stay in the build's ROOT, the SYSROOT the
# next packages compile against (clip-toolchain.eclass), and out of the .deb, so out of the image.
BUILD_ONLY_TREES = ("usr/include/", "usr/lib/pkgconfig/", "usr/share/pkgconfig/", "usr/local/include/",
                    "usr/local/lib/pkgconfig/", "usr/local/share/pkgconfig/")
LIBRARY_DIRS = ("lib", "usr/lib", "usr/local/lib")


@dataclass(frozen=True)
class DebOptions:
    distribution: str
    part: str
    date: int  # SOURCE_DATE_EPOCH of the build
    maintainer: str = "CLIP"
    built_by: str = "clipbuild"
    impact: str = "0"
    urgency: str = "NA"
    jails: str = ""
    name_suffix: str = ""


def rfc2822(date: int) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(date))


def check_paths(name: str, options: DebOptions, paths: list[str]) -> None:
    """CLIP's path rules: core ships nothing under /usr/local; apps only under its distribution's trees."""
    if options.part == "core":
        bad = [p for p in paths if (p + "/").startswith("usr/local/")]
        rule = "a core package (Priority Required) ships nothing under /usr/local"
    else:
        trees = APPS_TREES[options.distribution]
        bad = [p for p in paths if not any((p + "/").startswith(t) or t.startswith(p + "/") for t in trees)]
        rule = (f"an apps package (Priority Important) of distribution {options.distribution} installs only "
                f"under /{', /'.join(t.rstrip('/') for t in trees)}")
    if bad:
        shown = ", ".join("/" + p for p in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise PackagingError(f"{name}: {rule}; it has {shown}")


def build_only(relative: str, is_link: bool) -> bool:
    """Whether a file of a binpkg is for builds only (BUILD_ONLY_TREES, and in a library directory: *.a, *.o,
    and lib*.so when it is a link to the versioned library)."""
    if relative.startswith(BUILD_ONLY_TREES):
        return True
    folder, _, name = relative.rpartition("/")
    if folder not in LIBRARY_DIRS:
        return False
    return name.endswith((".a", ".o")) or (is_link and name.startswith("lib") and name.endswith(".so"))


def drop_build_only(root: Path) -> list[str]:
    """Remove the build-only files of an unpacked image, and the folders only they filled; returns them."""
    dropped, emptied = [], set()
    for path in sorted(root.rglob("*"), reverse=True):
        relative = path.relative_to(root).as_posix()
        if path.is_dir() and not path.is_symlink():
            if path in emptied and not any(path.iterdir()):
                path.rmdir()
                emptied.add(path.parent)
            continue
        if build_only(relative, path.is_symlink()):
            path.unlink()
            dropped.append(relative)
            emptied.add(path.parent)
    return sorted(dropped)


def _walk(root: Path) -> list[Path]:
    return sorted((p for p in root.rglob("*") if p.relative_to(root).parts[0] != "DEBIAN"),
                  key=lambda p: p.relative_to(root).as_posix())


def control(pkg: Gpkg, options: DebOptions, installed_kib: int) -> Deb822:
    meta = pkg.metadata
    pn, pvr = split_pf(meta["PF"], meta["CATEGORY"])
    use = meta.get("USE", "").split()
    rel = relations(meta.get("RDEPEND", ""), use)
    fields: list[tuple[str, str]] = [
        ("Package", deb_name(pn, meta.get("DEB_NAME_SUFFIX") or options.name_suffix)),
        ("Essential", "yes" if meta.get("DEB_ESSENTIAL") in ("y", "yes") else ""),
        ("Source", meta["PF"]),
        ("Version", deb_version(pvr)),
        ("Priority", PRIORITY[options.part]),
        ("Impact", options.impact),
        ("Urgency", options.urgency),
        ("License", meta.get("LICENSE") or "GPL-2"),
        ("Section", meta["CATEGORY"]),
        ("Architecture", ARCH.get(meta.get("CHOST", "x86_64").split("-")[0], "amd64")),
        ("Depends", ", ".join(rel.depends)),
        ("Conflicts", ", ".join(rel.conflicts)),
        ("Suggests", ", ".join(relations(meta.get("DEB_SUGGESTS", ""), use).depends)),
        ("ConfDepends", ", ".join(relations(meta.get("CONF_DEPENDS", ""), use).depends)),
        ("Maintainer", options.maintainer),
        ("Installed-Size", str(installed_kib)),
        ("Built-By", options.built_by),
        ("Build-Date", rfc2822(options.date)),
    ]
    if meta["CATEGORY"] == "clip-conf":
        fields.append(("Release-Date", rfc2822(options.date)))
    fields += [("Distribution", options.distribution), ("CLIP-Jails", meta.get("DEB_JAILS") or options.jails),
               ("Description", meta.get("DESCRIPTION") or "Automatically generated for CLIP"),
               ("Homepage", meta.get("HOMEPAGE", "").split()[0] if meta.get("HOMEPAGE") else "")]
    paragraph = Deb822()
    for key, value in fields:
        if value:
            paragraph[key] = value
    return paragraph


def build(pkg: Gpkg, image_tar: bytes, options: DebOptions, out_dir: Path) -> Path:
    """Write `<Package>_<Version>_<Arch>.deb` into out_dir (atomically) and return its path."""
    with tempfile.TemporaryDirectory(prefix="clipbuild-deb-") as tmp:
        root = Path(tmp) / "pkg"
        extract(image_tar, root)
        for keep in root.rglob(".keep*"):  # Portage's keepdir markers: CLIP removed them (§1.5 step 2)
            if keep.is_file():
                keep.unlink()
        drop_build_only(root)
        entries = _walk(root)
        relative = [p.relative_to(root).as_posix() for p in entries]
        check_paths(pkg.cpv, options, [r for r, p in zip(relative, entries, strict=True) if not p.is_dir()])
        debian = root / "DEBIAN"
        debian.mkdir()
        sums, contents, conffiles, kib = [], [], [], 0
        for path, rel in zip(entries, relative, strict=True):
            if path.is_symlink():
                contents.append(f"/{rel}: sym => {os.readlink(path)}")
            elif path.is_file():
                data = path.read_bytes()
                kib += -(-len(data) // 1024)
                sums.append(f"{hashlib.sha256(data).hexdigest()}  {rel}")
                contents.append(f"/{rel}: file 0:0 - {stat.S_IMODE(path.stat().st_mode):04o} - {len(data)}")
                if rel.startswith(("etc/", "usr/local/etc/")):
                    conffiles.append(f"/{rel}")
        fields = control(pkg, options, kib)
        with (debian / "control").open("wb") as stream:
            fields.dump(stream)
        (debian / "sha2sums").write_text("".join(line + "\n" for line in sums))
        (debian / "contents").write_text("".join(line + "\n" for line in contents))
        if conffiles:
            (debian / "conffiles").write_text("".join(line + "\n" for line in conffiles))
        for path in [root, *root.rglob("*")]:
            os.utime(path, (options.date, options.date), follow_symlinks=False)
        name = f"{fields['Package']}_{fields['Version']}_{fields['Architecture']}.deb"
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = out_dir / f".{name}.tmp"
        compression = "gzip" if options.part == "core" else "xz"
        run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", root, partial],
            env={"SOURCE_DATE_EPOCH": str(options.date)})
        os.replace(partial, out_dir / name)
        return out_dir / name
