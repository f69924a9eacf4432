"""gpkg -> CLIP .deb: name, version and dependency mapping, control fields, path rules, archive safety."""

from __future__ import annotations

import bz2
import io
import re
import tarfile
from pathlib import Path

import pytest

from clipbuild.core import errors
from clipbuild.core.run import run, run_bytes
from clipbuild.formats import debpkg, depmap, gpkg


def test_names_and_versions_follow_gencontrol():
    assert depmap.deb_name("Foo_Bar") == "foo-bar"
    assert depmap.deb_name("busybox", "-rm") == "busybox-rm"
    assert depmap.deb_version("4.2_p48-r1") == "4.2p48-r1"
    assert depmap.split_pf("foo-1.2_p4-r3", "app-clip") == ("foo", "1.2_p4-r3")
    assert depmap.split_pf("busybox-1.35.0", "sys-apps") == ("busybox", "1.35.0")


def test_dependency_mapping():
    rel = depmap.relations(
        "=clip-layout/baselayout-clip-4.5.0 >=sys-apps/foo_bar-1.2_p3-r1 <x/y-2 >x/z-1 ~x/w-1.0 =x/v-1.2* "
        "core-rm? ( x/rm ) clip-gtw? ( x/gtw ) || ( a/b >=c/d-1[foo] ) !x/old x/slot:2 x/u[bar]", ["core-rm"])
    assert rel.depends == ("baselayout-clip (= 4.5.0)", "foo-bar (>= 1.2p3-r1)", "y (<< 2)", "z (>> 1)",
                           "w (>= 1.0)", "v (>= 1.2)", "rm", "b | d (>= 1)", "slot", "u")
    assert rel.conflicts == ("old",)


@pytest.mark.parametrize(("dist", "part", "paths", "message"), [
    ("clip", "core", ["usr/local/bin/x"], "a core package (Priority Required) ships nothing under /usr/local"),
    ("clip", "apps", ["usr/bin/x"], "installs only under /usr/local, /var, /mounts, /viewers, /etc/admin"),
    ("rm", "apps", ["mounts/x"], "installs only under /usr/local, /var, /audit_root, /user_root"),
])
def test_clip_path_rules(dist, part, paths, message):
    with pytest.raises(errors.PackagingError, match=re.escape(message)):
        debpkg.check_paths("cat/pkg-1", debpkg.DebOptions(dist, part, 0), paths)


def test_allowed_paths_pass():
    debpkg.check_paths("c/p-1", debpkg.DebOptions("clip", "apps", 0), ["usr/local/bin/x", "var/lib/y", "usr"])
    debpkg.check_paths("c/p-1", debpkg.DebOptions("clip", "core", 0), ["usr/bin/x", "etc/x"])


def _tar(entries: list[tuple[str, str, str]]) -> list[tarfile.TarInfo]:
    infos = []
    for name, kind, link in entries:
        info = tarfile.TarInfo(name)
        info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                     "hard": tarfile.LNKTYPE, "dev": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
        info.linkname = link
        infos.append(info)
    return infos


@pytest.mark.parametrize(("entries", "message"), [
    ([("image/../etc/passwd", "file", "")], "absolute paths and '..' are refused"),
    ([("/etc/passwd", "file", "")], "absolute paths and '..' are refused"),
    ([("other/x", "file", "")], "lies outside image/"),
    ([("image/bin/evil", "sym", "../../../etc/shadow")], "escapes the root"),
    ([("image/bin/evil", "sym", "/../../etc/shadow")], "escapes the root"),
    ([("image/lib", "sym", "/"), ("image/lib/x", "file", "")], "goes through the symlink lib"),
    ([("image/dev/sda", "dev", "")], "devices, FIFOs and other special files are refused"),
    ([("image/x", "hard", "/etc/shadow")], "escapes the tree"),
])
def test_unsafe_archive_members_are_refused(entries, message):
    with pytest.raises(errors.UnsafeArchive, match=message):
        gpkg.check_members(_tar(entries))


def test_safe_links_pass():
    checked = gpkg.check_members(_tar([("image/bin", "dir", ""), ("image/bin/sh", "sym", "busybox"),
                                       ("image/usr/bin/x", "sym", "/bin/busybox"),
                                       ("image/usr/bin/y", "sym", "../../bin/busybox"),
                                       ("image/bin/busybox", "file", "")]))
    assert [rel for _, rel in checked] == ["bin", "bin/sh", "usr/bin/x", "usr/bin/y", "bin/busybox"]


def _fake_gpkg(tmp: Path, category: str, pf: str, metadata: dict[str, str], files: dict[str, bytes],
               environment: str = "") -> Path:
    def tar_bytes(entries: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in entries.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o755 if "/bin/" in name else 0o644
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    meta = tar_bytes({**{f"metadata/{k}": v.encode() for k, v in {**metadata, "CATEGORY": category, "PF": pf}.items()},
                      "metadata/environment.bz2": bz2.compress(environment.encode())})
    image = tar_bytes({f"image/{k}": v for k, v in files.items()})
    outer = {f"{pf}-1/gpkg-1": b"", f"{pf}-1/metadata.tar.zst": run_bytes(["zstd", "-q", "-c"], meta),
             f"{pf}-1/image.tar.zst": run_bytes(["zstd", "-q", "-c"], image)}
    path = tmp / f"{pf}-1.gpkg.tar"
    path.write_bytes(tar_bytes(outer))
    return path


def test_control_fields_in_clip_order_and_reproducible(tmp_path):
    environment = ('declare -x DEB_SUGGESTS="=app-clip/extra-1.1"\ndeclare -- CONF_DEPENDS='
                   '">=clip-conf/clip-core-conf-4.4.2-r70"\ndeclare -x DEB_JAILS="rm_h rm_b"\n'
                   'declare -x DEB_DISTRIBUTION="rm"\n')
    path = _fake_gpkg(tmp_path, "clip-conf", "demo-conf-1.0_p2-r1",
                      {"RDEPEND": "=app-clip/tool-2.0 !app-clip/old", "USE": "amd64", "LICENSE": "LGPL-2.1+",
                       "DESCRIPTION": "A demo conf package", "CHOST": "x86_64-pc-linux-gnu"},
                      {"etc/demo.conf": b"x=1\n", "usr/bin/demo": b"#!/bin/sh\n"}, environment)
    package, image = gpkg.read(path)
    options = debpkg.DebOptions("clip", "core", 1700000000)
    first = debpkg.build(package, image, options, tmp_path / "a")
    second = debpkg.build(package, image, options, tmp_path / "b")
    assert first.name == "demo-conf_1.0p2-r1_amd64.deb"
    assert first.read_bytes() == second.read_bytes()
    fields = run(["dpkg-deb", "--field", first]).stdout.splitlines()
    assert [line.split(":")[0] for line in fields] == [
        "Package", "Source", "Version", "Priority", "Impact", "Urgency", "License", "Section", "Architecture",
        "Depends", "Conflicts", "Suggests", "ConfDepends", "Maintainer", "Installed-Size", "Built-By",
        "Build-Date", "Release-Date", "Distribution", "CLIP-Jails", "Description"]
    assert "Depends: tool (= 2.0)" in fields and "Conflicts: old" in fields and "Priority: Required" in fields
    assert "Build-Date: Tue, 14 Nov 2023 22:13:20 +0000" in fields
    assert "Suggests: extra (= 1.1)" in fields and "ConfDepends: clip-core-conf (>= 4.4.2-r70)" in fields
    assert "CLIP-Jails: rm_h rm_b" in fields
    assert "Distribution: clip" in fields  # the plan's, not the environment's: binpkgs are shared by sets
    control = run(["dpkg-deb", "--info", first, "conffiles"]).stdout
    assert control == "/etc/demo.conf\n"
    sums = run(["dpkg-deb", "--info", first, "sha2sums"]).stdout
    assert sums.endswith("  usr/bin/demo\n") and len(sums.splitlines()) == 2
    contents = run(["dpkg-deb", "--info", first, "contents"]).stdout
    assert "/usr/bin/demo: file 0:0 - 0755 - 10\n" in contents


@pytest.mark.parametrize(("relative", "is_link", "expected"), [
    ("usr/include/stdio.h", False, True),
    ("usr/lib/pkgconfig/zlib.pc", False, True),
    ("usr/lib/libc.a", False, True),
    ("usr/lib/Scrt1.o", False, True),
    ("usr/lib/libz.so", True, True),           # the linker's link to the versioned library
    ("usr/local/include/x.h", False, True),
    ("usr/lib/libc.so", False, False),          # musl: the library and the loader, a regular file
    ("usr/lib/libz.so.1", True, False),         # the soname link the loader follows
    ("lib/ld-musl-x86_64.so.1", True, False),
    ("usr/lib/clip/plugin.o.conf", False, False),
    ("usr/share/clip/a.o", False, False),       # only library folders hold start files and archives
])
def test_build_only_files(relative, is_link, expected):
    assert debpkg.build_only(relative, is_link) is expected


def test_build_only_files_stay_out_of_the_deb(tmp_path):
    """The C library's headers, start files and archives serve the builds (SYSROOT), not the image: the .deb has
    the library and the loader's link only, and no folder the dropped files alone filled."""
    path = _fake_gpkg(tmp_path, "sys-libs", "musl-1.2.3", {"RDEPEND": "", "USE": "amd64"},
                      {"usr/include/stdio.h": b"/* h */\n", "usr/include/sys/types.h": b"/* h */\n",
                       "usr/lib/libc.a": b"!<arch>\n", "usr/lib/Scrt1.o": b"\x7fELF", "usr/lib/libc.so": b"\x7fELF",
                       "usr/share/empty/.keep_sys-libs_musl-0": b""})
    package, image = gpkg.read(path)
    deb = debpkg.build(package, image, debpkg.DebOptions("clip", "core", 1700000000), tmp_path / "out")
    listing = run(["dpkg-deb", "--contents", deb]).stdout
    names = sorted(line.split()[-1] for line in listing.splitlines())
    assert names == ["./", "./usr/", "./usr/lib/", "./usr/lib/libc.so", "./usr/share/", "./usr/share/empty/"]


def test_only_what_the_set_needs_at_run_time_is_packaged():
    from clipbuild.formats.depmap import relation_names
    from clipbuild.stages.package import runtime_closure

    assert relation_names("zlib (>= 1.2.13), musl (>= 1.2.3)") == [["zlib"], ["musl"]]
    assert relation_names("a | b(>= 2), c:amd64,\n d (<< 3) ,") == [["a", "b"], ["c"], ["d"]]
    assert relation_names("") == []
    depends = {"clip-core-conf": ["busybox", "openssh", "absent"], "openssh": ["openssl", "zlib", "musl"],
               "openssl": ["musl"], "zlib": ["musl"], "musl": [], "busybox": ["musl"], "linux-headers": [],
               "orphan": ["musl"]}
    assert runtime_closure(depends, ["clip-core-conf"]) == {"clip-core-conf", "busybox", "openssh", "openssl",
                                                             "zlib", "musl"}
    assert runtime_closure(depends, ["not-built"]) == set()
