"""Build roots: recipes, stage3 digests checked before unpacking, isolation of the commands run inside."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tarfile
from pathlib import Path

import pytest

from clipbuild.core.errors import InputError
from clipbuild.gentoo import buildroot


def test_recipe_key_follows_every_field():
    base = buildroot.DEFAULT_RECIPE
    assert base.key == buildroot.Recipe("debian").key
    assert base.key != buildroot.Recipe("debian", packages=(*base.packages, "vim")).key
    assert base.key != buildroot.Recipe("debian", version=base.version + 1).key


def _tarball(tmp_path: Path) -> tuple[Path, str]:
    tree = tmp_path / "tree"
    (tree / "usr" / "bin").mkdir(parents=True)
    (tree / "bin").mkdir()
    shutil.copy("/bin/busybox", tree / "bin" / "sh")  # busybox-static: a shell with no libraries
    (tree / "usr" / "bin" / "emerge").write_text("#!/bin/sh\necho 'Portage 3.0.63 (stage3)'\n")
    (tree / "usr" / "bin" / "emerge").chmod(0o755)
    (tree / "etc").mkdir()
    (tree / "etc" / "gentoo-release").write_text("Gentoo Base System release 2.17\n")
    tarball = tmp_path / "stage3-amd64-hardened.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        for item in sorted(tree.iterdir()):
            tar.add(item, arcname=item.name)
    return tarball, hashlib.sha512(tarball.read_bytes()).hexdigest()


def test_stage3_with_a_wrong_digest_is_never_unpacked(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPBUILD_CACHE", str(tmp_path / "cache"))
    tarball, digest = _tarball(tmp_path)
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(InputError, match=r"sha512 is [0-9a-f]{128}, not the expected .*refusing to unpack"):
        buildroot.import_stage3(tarball, f"sha512:{wrong}", say=lambda m: None)
    with pytest.raises(InputError, match="expected sha512: followed by 128 hex digits"):
        buildroot.import_stage3(tarball, "sha256:abcd", say=lambda m: None)
    assert not (tmp_path / "cache" / "sdk").exists() or not any((tmp_path / "cache" / "sdk").iterdir())


@pytest.mark.slow
def test_stage3_unpacks_in_a_user_namespace_and_runs_its_portage(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPBUILD_CACHE", str(tmp_path / "cache"))
    tarball, digest = _tarball(tmp_path)
    root = buildroot.import_stage3(tarball, f"sha512:{digest}", say=lambda m: None)
    assert (root.root / "etc" / "gentoo-release").is_file()
    assert root.emerge == "/usr/bin/emerge"
    assert root.info["portage"] == "Portage 3.0.63 (stage3)"
    assert buildroot.import_stage3(tarball, f"sha512:{digest}", say=lambda m: None).path == root.path  # cached


@pytest.fixture(scope="session")
def sdk() -> buildroot.BuildRoot:
    return buildroot.ensure(say=print)


@pytest.mark.slow
@pytest.mark.e2e
def test_commands_run_isolated(sdk):
    result = sdk.run(["sh", "-c", "id -u; cat /proc/net/dev | tail -n +3 | cut -d: -f1; touch /usr/x || echo ro"])
    uid, *rest = result.stdout.split()
    assert uid == "0"
    assert rest == ["lo", "ro"]  # only a loopback of its own; the root is read-only


@pytest.mark.slow
@pytest.mark.e2e
def test_no_network_even_to_the_host_loopback(sdk):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)"
        result = sdk.run(["python3", "-c", probe], check=False)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody came
    assert result.returncode != 0 and "ConnectionRefusedError" in result.stderr


@pytest.mark.slow
@pytest.mark.e2e
def test_the_pinned_portage_runs(sdk):
    assert sdk.info["portage"].startswith(f"Portage {buildroot.PORTAGE_VERSION} ")
    assert sdk.run([sdk.emerge, "--version"]).stdout.startswith("Portage 3.0.83")


def test_leftovers_of_dead_processes_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPBUILD_CACHE", str(tmp_path))
    sdk_dir = tmp_path / "sdk"
    dead = sdk_dir / ".tmp-abc-999999999" / "root"
    alive = sdk_dir / f".tmp-abc-{os.getpid()}" / "root"
    for path in (dead, alive):
        path.mkdir(parents=True)
    buildroot._remove_leftovers(sdk_dir)
    assert not dead.parent.exists() and alive.exists()
