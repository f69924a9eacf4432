"""Image assembly parts on their own, with the real tools where they are cheap: the partition plan and the GPT
as sgdisk writes it and clipbuild reads it back, fstab, the A/B boot configuration, sparse hashing and copies,
the package checks dpkg --root relies on, the development PKI's upkeep."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
import re
from pathlib import Path

import pytest
from cryptography import x509

from clipbuild.core.digest import sha256_file
from clipbuild.core.errors import ImageError
from clipbuild.core.run import run
from clipbuild.image import bootloader, gpt, install
from clipbuild.image.fsimage import Verity
from clipbuild.image.inspection import current_root_hash
from clipbuild.image.slot import fstab
from clipbuild.signing import devpki, pki
from clipbuild.signing.trust import load_policy, verify_bytes
from clipbuild.spec.profile import resolve


@pytest.fixture
def client_slices(project):
    return gpt.plan(resolve(project, "client").disk, "client")


def test_partitions_follow_clip_s_order_and_fill_the_disk(client_slices):
    size, slices = client_slices
    assert [s.label for s in slices] == ["boot", "home", "log", "root_a", "root_a_verity", "mounts_a", "swap",
                                         "rm_h", "rm_b", "root_b", "root_b_verity", "mounts_b"]
    assert slices[0].start == 1 << 20 and all(s.start % (1 << 20) == 0 for s in slices)
    assert all(a.start + a.size == b.start for a, b in itertools.pairwise(slices))
    assert slices[-1].start + slices[-1].size == size - (1 << 20)  # home grew into the free space
    assert len({s.guid for s in slices}) == len(slices)


def test_guids_are_stable_and_distinct_per_species(project):
    _, client = gpt.plan(resolve(project, "client").disk, "client")
    _, again = gpt.plan(resolve(project, "client").disk, "client")
    _, gateway = gpt.plan(resolve(project, "gateway").disk, "gateway")
    assert [s.guid for s in client] == [s.guid for s in again]
    assert client[0].guid != gateway[0].guid


def test_the_gpt_sgdisk_writes_reads_back(tmp_path, client_slices):
    size, slices = client_slices
    image = tmp_path / "disk.img"
    gpt.write_table(image, size, slices, "client", "boot")
    disk_guid, entries = gpt.read_table(image)
    assert disk_guid == gpt.stable_guid("client", "disk")
    assert [(e.label, e.start, e.size, e.guid, e.type_guid) for e in entries] == [
        (s.label, s.start, s.size, s.guid, s.type_guid) for s in slices]
    assert entries[0].attributes & (1 << 2)  # legacy BIOS bootable: gptmbr.bin boots it
    assert "No problems found" in run(["sgdisk", "-v", image]).stdout
    with image.open("r+b") as stream:  # a damaged header is named, not misread
        stream.seek(512 + 24)
        stream.write(b"\xff")
    with pytest.raises(ImageError, match="GPT header checksum"):
        gpt.read_table(image)


def test_fstab_has_clip_s_options_and_order(client_slices):
    text = fstab(client_slices[1])
    rows = [line.split("\t") for line in text.splitlines() if not line.startswith("#")]
    mounts = [row[1] for row in rows]
    assert mounts.index("/mounts") < mounts.index("/var") < mounts.index("/var/log")
    by_mount = {row[1]: row for row in rows}
    assert by_mount["/"][0] == "/dev/dm-0" and by_mount["/"][3] == "ro,noatime"
    assert by_mount["/mounts"][0] == "/dev/clip/mounts"  # the booted slot's, linked by rcS
    assert by_mount["/home"][0] == "/dev/disk/by-partlabel/home" and by_mount["/home"][3] == "nosuid,nodev,noexec"
    assert by_mount["/vservers/rm_h"][3] == "nodev" and by_mount["/boot"][3].endswith(",noauto")
    assert by_mount["/var"][3] == "bind,nosuid,nodev" and by_mount["/usr/local"][3] == "bind,nodev"


def _slot(slot: str, root_hash: str) -> bootloader.SlotBoot:
    return bootloader.SlotBoot(slot, "4.5.0", Verity(root_hash, "ab" * 32, 100, 0), f"{slot * 8}-0000-0000-0000-"
                               f"000000000001".upper(), f"{slot * 8}-0000-0000-0000-000000000002".upper(), "squashfs")


def test_each_slot_file_boots_itself_and_offers_the_other():
    a, b = _slot("a", "1" * 64), _slot("b", "2" * 64)
    text = bootloader.slot_config("CLIP-RM 4.5.0", 30, a, b, ("console=ttyS0",))
    current, previous = text.split("LABEL CLIP-OLD")
    assert "KERNEL /vmlinuz-a" in current and "clip.slot=a" in current and "1" * 64 in current
    assert "KERNEL /vmlinuz-b" in previous and "clip.slot=b" in previous and "oldclip" in previous
    assert "verity 1 PARTUUID=aaaaaaaa-0000-0000-0000-000000000001 PARTUUID=aaaaaaaa-0000-0000-0000-000000000002" \
           " 4096 4096 100 1 sha256 " in current
    assert "ALLOWOPTIONS 0" in text and "panic_on_corruption" in text
    assert current_root_hash(text) == "1" * 64


@pytest.mark.parametrize(("text", "slot"), [("include extlinux_b.conf\n", "b"), ("INCLUDE extlinux_a.conf", "a"),
                                            ("include other.conf\n", None), ("default x\ninclude x", None)])
def test_the_switch_file_names_the_active_slot(text, slot):
    assert bootloader.active_slot(text) == slot


def test_sparse_hashing_and_copies_match_the_bytes(tmp_path):
    path = tmp_path / "sparse.img"
    with path.open("wb") as stream:
        stream.truncate(9 << 20)
        stream.seek(3 << 20)
        stream.write(os.urandom(5000))
        stream.seek((9 << 20) - 7)
        stream.write(b"tail!!!")
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "part.img"
    gpt.copy_out(path, 2 << 20, 4 << 20, out)
    assert out.read_bytes() == path.read_bytes()[2 << 20:6 << 20]
    assert out.stat().st_blocks * 512 < 1 << 20  # holes stayed holes


def _deb(tmp_path: Path, name: str, files: dict[str, str | None], scripts: dict[str, str] | None = None) -> Path:
    """A minimal real .deb: files map path -> content, or None for a symlink to 'target'."""
    root = tmp_path / name
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(f"Package: {name}\nVersion: 1.0\nArchitecture: all\n"
                                              "Maintainer: test\nDescription: test\n")
    for script, text in (scripts or {}).items():
        (root / "DEBIAN" / script).write_text(text)
        (root / "DEBIAN" / script).chmod(0o755)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.symlink_to("target")
        else:
            path.write_text(content)
    out = tmp_path / f"{name}.deb"
    run(["dpkg-deb", "--root-owner-group", "--build", root, out])
    return out


def test_install_refuses_what_dpkg_would_do_unsafely_without_chroot(tmp_path):
    with pytest.raises(ImageError, match=r"has maintainer scripts \(postinst\)"):
        install.check_packages([_deb(tmp_path, "scripted", {"usr/a": "x"}, {"postinst": "#!/bin/sh\n"})])
    link = _deb(tmp_path, "link", {"etc/conf": None})
    through = _deb(tmp_path, "through", {"etc/conf/passwd": "x"})
    with pytest.raises(ImageError, match=re.escape("'etc/conf/passwd' lies below 'etc/conf', a symbolic "
                                                   "link installed by link.deb")):
        install.check_packages([link, through])


def test_install_and_split_make_clip_s_layout(tmp_path):
    core = _deb(tmp_path, "core", {"bin/tool": "t", "var/log/boot.log": "l", "mounts/admin_priv/.keep": ""})
    apps = _deb(tmp_path, "apps", {"usr/local/bin/app": "a"})
    tree, mounts, log = tmp_path / "tree", tmp_path / "mounts", tmp_path / "log"
    tree.mkdir()
    got = install.install([core, apps], tree, tmp_path / "dpkg.log")
    assert [(p.package, p.version) for p in got] == [("apps", "1.0"), ("core", "1.0")]
    install.split_core(tree, mounts, log)
    assert (tree / "bin" / "tool").is_file() and not any((tree / "usr" / "local").iterdir())
    assert (mounts / "usr" / "bin" / "app").is_file() and (mounts / "admin_priv" / ".keep").is_file()
    assert (mounts / "var" / "lib" / "dpkg" / "status").is_file() and (log / "boot.log").is_file()


def test_the_development_pki_signs_and_renews_its_crls(tmp_path):
    pkis = devpki.ensure(tmp_path / "dev-pki")
    assert devpki.ensure(tmp_path / "dev-pki").fingerprints() == pkis.fingerprints()  # created once
    assert "DEVELOPMENT" in pkis.developer.cert.subject.rfc4514_string()
    crl_path = tmp_path / "dev-pki" / "developer-ca.crl.pem"
    before = x509.load_pem_x509_crl(crl_path.read_bytes())
    # A CRL about to go stale is re-issued on the next use.
    key = pki.load_key(tmp_path / "dev-pki" / "developer-ca.key", devpki.SECRET)
    ca = x509.load_pem_x509_certificate((tmp_path / "dev-pki" / "developer-ca.pem").read_bytes())
    stale = pki.sign_crl(key, ca, [], 7, dt.datetime.now(dt.UTC) - dt.timedelta(days=pki.CRL_DAYS - 1))
    pki.write_pem(tmp_path / "dev-pki" / "developer-ca.crl.pem", stale)
    devpki.ensure(tmp_path / "dev-pki")
    after = x509.load_pem_x509_crl(crl_path.read_bytes())
    assert after.next_update_utc > before.next_update_utc - dt.timedelta(days=1)
    assert after.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 8
    from clipbuild.signing.signer import sign_bytes

    deb = _deb(tmp_path, "signed", {"usr/x": "x"}).read_bytes()
    signed = sign_bytes(sign_bytes(deb, "developer", pkis.developer, 0), "controller", pkis.controller, 0)
    assert verify_bytes(signed, load_policy(pkis.policy_path)).ok


def test_a_tree_too_big_for_its_partition_is_named_before_anything_is_written(tmp_path):
    from clipbuild.image import fsimage

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "big").write_bytes(os.urandom(3 << 20))
    with pytest.raises(ImageError, match=r"the mounts_b filesystem needs .* MiB but its partition has 2\.0 MiB"):
        fsimage.ext4(tree, tmp_path / "small.img", 0, 2 << 20, "0" * 8 + "-0000-4000-8000-" + "0" * 12,
                     label="mounts_b")
    with pytest.raises(ImageError, match=r"the root filesystem needs .* but its partition has 1\.0 MiB"):
        fsimage.squashfs(tree, tmp_path / "root.img", 0, 1 << 20)
