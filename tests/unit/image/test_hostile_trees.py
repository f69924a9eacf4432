"""Hostile installed trees and packages (P10 items 1 and 2), built by code: a signed package's links never lead
host-side work out of the tree, and special files (hard links out, devices, FIFOs, setuid/setgid) are refused
before dpkg runs. Each case checks the refusal, its reason, and that the host file outside the tree is unchanged
(bytes and mtime) and that nothing was created outside."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from clipbuild.core import beneath
from clipbuild.core.beneath import TreeError, TreeEscape
from clipbuild.core.errors import ImageError, InputError
from clipbuild.formats import ar
from clipbuild.image import inspection, install, slot
from clipbuild.signing import pki, trust
from clipbuild.update import apply, apps

SECRET = b"host secret\n"
ESCAPE = "leads out of the tree through a symbolic link"


class Host:
    """A host folder outside the tree, with one file; `unchanged()` says nothing in it moved."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "host"
        self.dir.mkdir()
        self.file = self.dir / "secret"
        self.file.write_bytes(SECRET)
        os.utime(self.file, (1_000_000, 1_000_000))
        self.before = self._state()

    def _state(self) -> list[tuple[str, bytes, int]]:
        return sorted((p.name, p.read_bytes(), p.stat().st_mtime_ns) for p in self.dir.rglob("*"))

    def unchanged(self) -> bool:
        return self._state() == self.before


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for folder in ("etc", "boot", "var/log", "mounts/var", "usr/local", "etc/shared"):
        (root / folder).mkdir(parents=True)
    return root


def _link(tree: Path, rel: str, target: str | Path) -> None:
    """A symbolic link at `rel`, replacing what the fixture put there."""
    path = tree / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    path.unlink(missing_ok=True)
    path.symlink_to(target)


def _out(host: Host, tree: Path, rel: str, absolute: bool) -> str | Path:
    """A link target from `rel` in the tree to the host file: absolute, or relative with enough '..'."""
    return host.file if absolute else "../" * rel.count("/") + "../host/secret"


# -- the helper --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("absolute", [False, True], ids=["relative", "absolute"])
@pytest.mark.parametrize("operation", ["read", "write", "exists", "mkdir below", "copy_in", "regular_path"])
def test_the_helper_refuses_a_link_out(tree, host, operation, absolute):
    _link(tree, "etc/fstab", _out(host, tree, "etc/fstab", absolute))
    calls = {"read": lambda: beneath.read_text(tree, "etc/fstab"),
             "write": lambda: beneath.write_text(tree, "etc/fstab", "overwritten"),
             "exists": lambda: beneath.exists(tree, "etc/fstab"),
             "mkdir below": lambda: beneath.mkdir(tree, "etc/fstab/x"),
             "copy_in": lambda: beneath.copy_in(Path(__file__), tree, "etc/fstab"),
             "regular_path": lambda: beneath.regular_path(tree, "etc/fstab")}
    with pytest.raises(TreeEscape, match=f"'etc/fstab': {ESCAPE}") as caught:
        calls[operation]()
    assert "never follows a path out of an installed tree" in caught.value.hint
    assert host.unchanged()


def test_the_helper_refuses_dotdot_and_absolute_paths(tree, host):
    for rel in ("../host/secret", "etc/../../host/secret", str(host.file)):
        with pytest.raises(TreeEscape, match=re.escape("an absolute path or one holding '..'")):
            beneath.write_text(tree, rel, "x")
    assert host.unchanged()


def test_the_helper_refuses_a_directory_link_out_in_the_middle(tree, host):
    _link(tree, "mounts/var/pkg", host.dir)
    with pytest.raises(TreeEscape, match=f"'mounts/var/pkg/pending': {ESCAPE}"):
        beneath.write_text(tree, "mounts/var/pkg/pending", "x")
    with pytest.raises(TreeEscape, match=ESCAPE):
        beneath.mkdir(tree, "mounts/var/pkg/mirrors/clip")
    assert host.unchanged()


def test_the_helper_refuses_a_link_loop(tree):
    _link(tree, "etc/a", "b")
    _link(tree, "etc/b", "a")
    with pytest.raises(TreeEscape, match="'etc/a': a symbolic link loop"):
        beneath.read_text(tree, "etc/a")


def test_the_helper_follows_a_link_that_stays_inside(tree):
    (tree / "usr" / "lib").mkdir(parents=True)
    (tree / "usr" / "lib" / "os-release").write_text("NAME=clip\n")
    _link(tree, "etc/os-release", "../usr/lib/os-release")
    assert beneath.read_text(tree, "etc/os-release") == "NAME=clip\n"
    assert beneath.regular_path(tree, "etc/os-release") == (tree / "usr" / "lib" / "os-release").resolve()
    _link(tree, "var/run", "../etc")  # a folder link inside
    beneath.write_text(tree, "var/run/new", "inside")
    assert (tree / "etc" / "new").read_text() == "inside"


def test_unlink_and_remove_tree_remove_the_link_not_its_target(tree, host):
    _link(tree, "etc/fstab", host.file)
    _link(tree, "var/log", host.dir)
    beneath.unlink(tree, "etc/fstab")
    beneath.remove_tree(tree, "var/log")
    assert not os.path.lexists(tree / "etc" / "fstab") and not os.path.lexists(tree / "var" / "log")
    assert host.unchanged()


def test_a_fifo_in_a_tree_is_refused_without_blocking(tree):
    os.mkfifo(tree / "etc" / "fstab")
    with pytest.raises(TreeError, match="'etc/fstab': is a FIFO or a socket, a regular file is expected"):
        beneath.write_text(tree, "etc/fstab", "x")
    with pytest.raises(TreeError, match="'etc/fstab': is a FIFO, a regular file is expected"):
        beneath.read_text(tree, "etc/fstab")


def test_odd_trees_give_errors_not_tracebacks(tree):
    (tree / "etc" / "os-release").mkdir()
    with pytest.raises(TreeError, match="'etc/os-release': is a directory, a regular file is expected"):
        beneath.read_text(tree, "etc/os-release")
    with pytest.raises(TreeError, match="'etc/os-release': Is a directory"):
        beneath.unlink(tree, "etc/os-release")
    with pytest.raises(TreeError, match="'boot/vmlinuz-clip': does not exist"):
        slot.kernel(tree)
    (tree / "usr" / "local" / "file").write_text("")
    with pytest.raises(TreeError, match="'usr/local/file': exists and is not a directory"):
        beneath.mkdir(tree, "usr/local/file/x")
    with pytest.raises(TreeError, match="Not a directory"):
        beneath.write_text(tree, "usr/local/file/x", "")


def test_without_openat2_every_link_is_refused(tree, host, monkeypatch):
    monkeypatch.setattr(beneath, "_openat2_missing", True)
    _link(tree, "etc/os-release", "../usr/local")
    with pytest.raises(TreeEscape, match="passes through a symbolic link"):
        beneath.write_text(tree, "etc/os-release/x", "x")
    _link(tree, "etc/fstab", host.file)
    with pytest.raises(TreeEscape, match="passes through a symbolic link"):
        beneath.write_text(tree, "etc/fstab", "x")
    beneath.write_text(tree, "etc/plain", "fine")
    assert (tree / "etc" / "plain").read_text() == "fine" and host.unchanged()


# -- host-side work on an installed tree (P10 item 1) ----------------------------------------------------


def _configure(tree: Path) -> None:
    slot.configure_root(tree, [], mode="release", species="client", version="1.0")


@pytest.mark.parametrize("absolute", [False, True], ids=["relative", "absolute"])
@pytest.mark.parametrize("rel", ["etc/fstab", "etc/os-release"])
def test_configure_root_never_writes_or_reads_through_a_link_out(tree, host, rel, absolute):
    _link(tree, rel, _out(host, tree, rel, absolute))
    if rel == "etc/os-release":
        (tree / "etc" / "fstab").write_text("")
    with pytest.raises(TreeEscape, match=f"'{rel}': {ESCAPE}"):
        _configure(tree)
    assert host.unchanged()


def test_the_mirror_is_never_written_through_a_link_out(tree, host, tmp_path):
    _link(tree, "var/pkg", host.dir)
    deb = tmp_path / "x.deb"
    deb.write_bytes(b"package")
    with pytest.raises(TreeEscape, match=ESCAPE):
        slot.add_mirror(tree, {"clip-core": [deb]})
    assert host.unchanged()


@pytest.mark.parametrize("rel", ["var/log", "mounts", "usr/local", "var"])
def test_split_core_never_moves_host_files_through_a_link_out(tree, host, tmp_path, rel):
    _link(tree, rel, "../" * rel.count("/") + "../host")
    with pytest.raises(TreeEscape, match=ESCAPE):
        install.split_core(tree, tmp_path / "mounts", tmp_path / "log")
    assert host.unchanged()


def test_release_and_kernel_are_never_read_through_a_link_out(tree, host):
    _link(tree, slot.KERNEL, host.file)
    _link(tree, slot.RELEASE, "../../../host/secret")
    with pytest.raises(TreeEscape, match=f"'{slot.KERNEL}': {ESCAPE}"):
        slot.kernel(tree)
    with pytest.raises(TreeEscape, match=f"'{slot.RELEASE}': {ESCAPE}"):
        slot.release(tree)


def test_the_dpkg_status_is_never_read_through_a_link_out(tree, host):
    _link(tree, "var/lib/dpkg/status", host.file)
    with pytest.raises(TreeEscape, match=ESCAPE):
        install.installed(tree)
    with pytest.raises(TreeEscape, match=ESCAPE):
        install.prepare(tree)
    assert host.unchanged()


def test_the_apps_lists_are_never_written_through_a_link_out(tree, host):
    """apps updates write var/pkg/pending and friends in the staged root, whose /var is a link to mounts/var."""
    _link(tree, "var", "mounts/var")
    _link(tree, "mounts/var/pkg/pending", host.file)
    with pytest.raises(TreeEscape, match=f"'var/pkg/pending': {ESCAPE}"):
        apps._write_lists(tree, {name: ["x"] for name in apps.LISTS})
    assert host.unchanged()


def test_inspect_verify_never_takes_a_link_for_a_package_of_the_mirror(tmp_path, host):
    """A mirror copied out of an image whose package is a link to a host file is reported missing."""
    mirror = tmp_path / "dump"
    (mirror / "mirrors" / "clip").mkdir(parents=True)
    (mirror / "mirrors" / "clip" / "real.deb").write_bytes(b"deb")
    _link(mirror, "mirrors/clip/linked.deb", host.file)
    _link(mirror, "mirrors/rm", host.dir)
    assert inspection._mirror_debs(mirror) == {"clip/real.deb": mirror / "mirrors" / "clip" / "real.deb"}
    _link(mirror, "mirrors", host.dir)
    with pytest.raises(TreeEscape, match=f"'mirrors': {ESCAPE}"):
        inspection._mirror_debs(mirror)


class _OldMounts:
    """Stands for the active slot's mounts partition: `copy` returns a file copied out of it."""

    def __init__(self, folder: Path):
        self.folder = folder

    def copy(self, path: str) -> Path:
        out = self.folder / Path(path).name
        out.write_text("local configuration")
        return out


def test_carried_configuration_never_lands_through_a_link_out(tree, host, tmp_path):
    (tree / "etc" / "clip_update").mkdir()
    (tree / apply.CONFFILES).write_text("/mounts/admin_priv/etc/netconf\n")
    mounts = tmp_path / "mounts"
    _link(mounts, "admin_priv", host.dir)
    old = tmp_path / "old"
    old.mkdir()
    with pytest.raises(TreeEscape, match=ESCAPE):
        apply._carry_configuration(_OldMounts(old), {"root": tree, "mounts": mounts})
    _link(tree, apply.CONFFILES, host.file)
    with pytest.raises(TreeEscape, match=ESCAPE):
        apply._carry_configuration(_OldMounts(old), {"root": tree, "mounts": mounts})
    assert host.unchanged()


# -- special files in a package, refused before dpkg (P10 item 2) -----------------------------------------


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = kind, mode, link, 0
    return info


def _crafted(tmp_path: Path, name: str, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """A .deb built by hand (ar writer + tarfile), so it may hold what dpkg-deb --build would not."""
    control = _tar([(_info("./control"), f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t\n"
                                           "Description: t\n".encode())])
    data = _tar([(_info("./", tarfile.DIRTYPE, 0o755), b""), (_info("./usr/", tarfile.DIRTYPE, 0o755), b""),
                 *members])
    deb = tmp_path / f"{name}.deb"
    deb.write_bytes(ar.archive([("debian-binary", b"2.0\n"), ("control.tar", control), ("data.tar", data)], 0))
    return deb


BIN = (_info("./usr/tool", mode=0o755), b"tool")
HOSTILE = {
    "hard link absolute": ([BIN, (_info("./usr/pw", tarfile.LNKTYPE, link="/etc/passwd"), b"")],
                           "a hard link to '/etc/passwd'"),
    "hard link ..": ([BIN, (_info("./usr/pw", tarfile.LNKTYPE, link="../../host/secret"), b"")],
                     "a hard link to '../../host/secret'"),
    "hard link outside the package": ([BIN, (_info("./usr/pw", tarfile.LNKTYPE, link="etc/shadow"), b"")],
                                      "not a file of this package before it"),
    "hard link to a directory": ([BIN, (_info("./usr/pw", tarfile.LNKTYPE, link="./usr/"), b"")],
                                 "not a file of this package before it"),
    "character device": ([(_info("./usr/mem", tarfile.CHRTYPE, 0o666), b"")], "a device node"),
    "block device": ([(_info("./usr/sda", tarfile.BLKTYPE, 0o660), b"")], "a device node"),
    "fifo": ([(_info("./usr/pipe", tarfile.FIFOTYPE), b"")], "a FIFO"),
    "setuid": ([(_info("./usr/su", mode=0o4755), b"x")], "mode 4755 is setuid"),
    "setgid": ([(_info("./usr/wall", mode=0o2755), b"x")], "mode 2755 is setgid"),
    "setgid directory": ([(_info("./usr/mail/", tarfile.DIRTYPE, 0o2775), b"")], "mode 2775 is setgid"),
    "contiguous file type": ([(_info("./usr/odd", tarfile.CONTTYPE), b"x")], None),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_special_members_are_refused_naming_package_member_and_rule(tmp_path, case):
    members, reason = HOSTILE[case]
    deb = _crafted(tmp_path, "hostile", members)
    if reason is None:  # tarfile reads CONTTYPE as a regular file, so dpkg does too: accepted
        install.check_packages([deb])
        return
    with pytest.raises(ImageError, match=re.escape(reason)) as caught:
        install.check_packages([deb])
    member = members[-1][0].name.removeprefix("./").rstrip("/")
    assert str(caught.value).startswith(f"hostile.deb: '{member}': ")


def test_a_hard_link_to_the_package_s_own_earlier_file_is_fine(tmp_path):
    install.check_packages([_crafted(tmp_path, "fine", [BIN, (_info("./usr/alias", tarfile.LNKTYPE,
                                                                      link="./usr/tool"), b"")])])


def test_the_trust_policy_s_special_files_grant_exactly_what_they_name(tmp_path):
    deb = _crafted(tmp_path, "shadow", [(_info("./usr/su", mode=0o4755), b"x"), (_info("./usr/p", tarfile.FIFOTYPE),
                                                                                b"")])
    install.check_packages([deb], {"shadow": {"setuid", "fifo"}})
    with pytest.raises(ImageError, match="a FIFO") as caught:
        install.check_packages([deb], {"shadow": {"setuid"}})
    assert "special_files" in caught.value.hint
    with pytest.raises(ImageError, match="setuid"):
        install.check_packages([deb], {"other": {"setuid", "fifo"}})


def test_a_hostile_package_is_refused_before_dpkg_writes_anything(tmp_path, host):
    """The real install path: nothing in the tree, nothing outside, dpkg never ran."""
    root = tmp_path / "root"
    root.mkdir()
    deb = _crafted(tmp_path, "hostile", [BIN, (_info("./usr/pw", tarfile.LNKTYPE, link="../../host/secret"), b"")])
    with pytest.raises(ImageError, match=re.escape("a hard link to '../../host/secret'")):
        install.install([deb], root, tmp_path / "dpkg.log")
    assert list(root.iterdir()) == [] and not (tmp_path / "dpkg.log").exists() and host.unchanged()


def test_a_package_link_out_installed_by_dpkg_is_refused_by_the_host_side_work(tmp_path, host):
    """A real dpkg --root install of a package whose etc/fstab is an absolute link to a host file."""
    root = tmp_path / "root"
    root.mkdir()
    info = _info("./etc/fstab", tarfile.SYMTYPE, 0o777, link=str(host.file))
    deb = _crafted(tmp_path, "linky", [(_info("./etc/", tarfile.DIRTYPE, 0o755), b""), (info, b"")])
    install.install([deb], root, tmp_path / "dpkg.log")
    assert stat.S_ISLNK((root / "etc" / "fstab").lstat().st_mode)
    with pytest.raises(TreeEscape, match=f"'etc/fstab': {ESCAPE}"):
        _configure(root)
    assert host.unchanged()


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("pki") / "pki"
    pki.init(directory, b"hostile-trees test passphrase")
    return directory


def _policy(policy_dir: Path, text: str) -> Path:
    """The PKI's own policy with `text` appended, beside it (its paths are relative)."""
    path = policy_dir / f"policy-{abs(hash(text))}.yaml"
    path.write_text((policy_dir / "policy.yaml").read_text() + text)
    return path


@pytest.mark.parametrize(("text", "words"), [
    ("special_files: [shadow]\n", "special_files: a mapping of package names to lists is expected"),
    ("special_files: {shadow: setuid}\n", "special_files.shadow: a list of setuid, setgid, device, fifo"),
    ("special_files: {shadow: [setuid, root]}\n", "special_files.shadow: a list of setuid, setgid, device, fifo"),
])
def test_a_policy_s_special_files_are_checked_when_it_loads(policy_dir, text, words):
    with pytest.raises(InputError, match=re.escape(words)):
        trust.load_policy(_policy(policy_dir, text))


def test_a_policy_s_special_files_reach_the_install_check(policy_dir, tmp_path):
    allow = trust.load_policy(_policy(policy_dir, "special_files: {shadow: [setuid]}\n")).special()
    install.check_packages([_crafted(tmp_path, "shadow", [(_info("./usr/su", mode=0o4755), b"x")])], allow)
