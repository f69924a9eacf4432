"""How signing writes (P11 item 4): one pass that copies and hashes, all or nothing. A failing write or fsync
leaves the package as it was and no temporary; a real `clipbuild sign` or `countersign` killed (SIGKILL) while
it writes leaves every package byte for byte as it was, and signing again works."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from clipbuild.core import hashcopy
from clipbuild.core.errors import SigningError
from clipbuild.formats import ar, clipsig
from clipbuild.signing import batch, pki, signer, trust
from tests.conftest import ROOT

from .test_signing import SECRET, VECTORS
from .test_signing import _signer as _key

UNSIGNED = VECTORS / "vectortest_1.0_all.unsigned.deb"
BIG = 64 << 20


def _package(size: int) -> bytes:
    """An unsigned package of about `size` bytes: the vector's control member and a large data member."""
    members = {m.name: m for m in ar.parse(UNSIGNED.read_bytes())}
    raw = UNSIGNED.read_bytes()
    control = members["control.tar.xz"]
    blob = os.urandom(1 << 20) * (size >> 20) + os.urandom(size % (1 << 20))
    return ar.archive([("debian-binary", b"2.0\n"),
                       ("control.tar.xz", raw[control.data_offset:control.data_offset + control.size]),
                       ("data.tar.xz", blob)], 0)


@pytest.fixture(scope="module")
def big() -> bytes:
    return _package(BIG)


def _temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 40_000, 100_003])
@pytest.mark.parametrize("upto", [None, 0, 5000])
def test_copy_hashed_copies_and_hashes_the_copy(tmp_path, monkeypatch, size, upto):
    monkeypatch.setattr(hashcopy, "CHUNK", 4096)
    monkeypatch.setattr(hashcopy, "INLINE", 8192)  # above it, the hashing threads
    monkeypatch.setattr(hashcopy, "WRITEBACK_EVERY", 16384)
    data = os.urandom(size)
    (tmp_path / "src").write_bytes(data)
    source = os.open(tmp_path / "src", os.O_RDONLY)
    target = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    seen: list[int] = []
    try:
        hashers = hashcopy.copy_hashed(source, target, size, ["sha256", "sha512"], upto, seen.append)
    finally:
        os.close(source)
        os.close(target)
    assert (tmp_path / "dst").read_bytes() == data
    end = size if upto is None else min(upto, size)
    assert {n: h.hexdigest() for n, h in hashers.items()} == {n: hashlib.new(n, data[:end]).hexdigest()
                                                                for n in ("sha256", "sha512")}
    assert seen[-1] == size and seen == sorted(seen)


@pytest.mark.parametrize("digest", ["sha256", "sha512"])
def test_a_large_package_signed_and_countersigned_verifies(tmp_path, monkeypatch, digest):
    monkeypatch.setattr(hashcopy, "CHUNK", 64 << 10)
    monkeypatch.setattr(hashcopy, "INLINE", 0)
    directory = tmp_path / "pki"
    pki.init(directory, SECRET, pki.PkiSettings(curve="p384" if digest == "sha512" else "p256", digest=digest))
    data = _package(3 << 20)
    box = tmp_path / "batch"
    box.mkdir()
    deb = box / "big.deb"
    deb.write_bytes(data)
    signed = signer.sign_file(deb, "developer", _key(directory, "developer-1"))
    assert signed.sha256_before == hashlib.sha256(data).hexdigest()
    assert signed.sha256_after == hashlib.sha256(deb.read_bytes()).hexdigest()
    policy = trust.load_policy(directory / "policy.yaml")
    row, = batch.countersign(box, _key(directory, "controller-1"), policy)
    assert row.sha256_after == hashlib.sha256(deb.read_bytes()).hexdigest()
    verdict = trust.verify_file(deb, policy)
    assert verdict.ok and [s.digest for s in verdict.signers] == [digest, digest]
    assert _temporaries(box) == []


def test_a_digest_not_hashed_while_copying_is_computed_from_the_copy(our_pki, tmp_path):
    deb = tmp_path / "p.deb"
    deb.write_bytes(_package(1 << 20))
    staged = signer.stage(deb, ())
    del staged.hashed["sha256"]  # as when the developers' digest was guessed wrong
    signer.sign_staged(staged, "developer", _key(our_pki, "developer-1"))
    signer.commit(staged)
    layout = clipsig.read_layout(deb.read_bytes())
    assert layout.dev is not None and layout.dev.signed_length == (1 << 20) + 8 + 3 * 60 + 4 + 352


@pytest.mark.parametrize("size", [800, 5 << 20])
def test_a_file_that_is_not_a_package_is_refused_cleanly(our_pki, tmp_path, size):
    deb = tmp_path / "p.deb"
    junk = b"!<arch>\n" + os.urandom(size)
    deb.write_bytes(junk)
    with pytest.raises(SigningError, match=r"p\.deb: not a package clipbuild can sign: package: member header"):
        signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    assert deb.read_bytes() == junk and _temporaries(tmp_path) == []


def _failing_pwrite(monkeypatch, after: int, error: int = errno.ENOSPC) -> None:
    """os.pwrite fails once `after` bytes were written by it, as a full disk would."""
    real = os.pwrite
    written = [0]

    def pwrite(fd, data, offset):
        if written[0] >= after:
            raise OSError(error, os.strerror(error))
        written[0] += len(data)
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)


@pytest.mark.parametrize(("after", "words"), [(0, "cannot copy it to sign it"), (2 << 20, "cannot copy it to sign it"),
                                               (-1, "cannot write its signature")])
def test_a_failing_write_leaves_the_package_and_no_temporary(our_pki, tmp_path, monkeypatch, after, words):
    deb = tmp_path / "p.deb"
    data = _package(5 << 20)
    deb.write_bytes(data)
    _failing_pwrite(monkeypatch, len(data) if after < 0 else after)  # -1: the copy is whole, its signature fails
    with pytest.raises(SigningError, match=rf"p\.deb: {words}: No space left on device"):
        signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    assert deb.read_bytes() == data and _temporaries(tmp_path) == []


def test_a_failing_fsync_leaves_the_package_and_no_temporary(our_pki, tmp_path, monkeypatch):
    deb = tmp_path / "p.deb"
    deb.write_bytes(UNSIGNED.read_bytes())

    def fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(SigningError, match=r"p\.deb: cannot write its signature: Input/output error"):
        signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    assert deb.read_bytes() == UNSIGNED.read_bytes() and _temporaries(tmp_path) == []


def test_a_package_cut_short_while_copied_is_refused_cleanly(our_pki, tmp_path, monkeypatch):
    deb = tmp_path / "p.deb"
    deb.write_bytes(_package(6 << 20))
    # the package is truncated once the copy has begun: the copy reads a mapping of it, and never gets a SIGBUS
    monkeypatch.setattr(signer, "_pause_after", lambda path: lambda done: os.truncate(path, 4096))
    with pytest.raises(SigningError, match=r"p\.deb: cannot copy it to sign it: it was cut short while being copied"):
        signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    assert deb.stat().st_size == 4096 and _temporaries(tmp_path) == []


def _dev_batch(tmp_path: Path, our_pki: Path, big: bytes) -> Path:
    """A batch of a small and a large developer-signed package."""
    box = tmp_path / "batch"
    box.mkdir()
    (box / "a.deb").write_bytes(UNSIGNED.read_bytes())
    (box / "b.deb").write_bytes(big)
    for deb in sorted(box.iterdir()):
        signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    return box


def test_a_batch_whose_second_copy_fails_changes_nothing(our_pki, tmp_path, monkeypatch):
    box = _dev_batch(tmp_path, our_pki, _package(5 << 20))
    before = {p.name: p.read_bytes() for p in box.iterdir()}
    _failing_pwrite(monkeypatch, 3 << 20)  # a.deb is copied, b.deb is not
    with pytest.raises(SigningError, match=r"b\.deb: cannot copy it to sign it: No space left on device"):
        batch.countersign(box, _key(our_pki, "controller-1"), trust.load_policy(our_pki / "policy.yaml"))
    assert {p.name: p.read_bytes() for p in box.iterdir()} == before


# -- killed while writing: the real CLI in a process of its own ------------------------------------------------


def _run_until_stopped(args: list[str], pause: str, cwd: Path) -> None:
    """Run `python -m clipbuild ARGS` with the test hook CLIPBUILD_SIGN_PAUSE, wait until it says it stopped,
    then SIGKILL it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), signer.PASSPHRASE_ENV: SECRET.decode(), signer.PAUSE_ENV: pause}
    proc = subprocess.Popen([sys.executable, "-m", "clipbuild", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        lines = []
        while line := proc.stderr.readline():
            lines.append(line)
            if line.startswith(f"{signer.PAUSE_ENV}: stopped"):
                break
        assert lines and lines[-1].startswith(f"{signer.PAUSE_ENV}: stopped"), "".join(lines)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        proc.kill()
        proc.stderr.close()


def _sign_args(our_pki: Path, role: str, deb: Path) -> list[str]:
    name = f"{role}-1"
    return ["sign", "--role", role, "--key", str(our_pki / f"{name}.key"), "--cert", str(our_pki / f"{name}.pem"),
            "--policy", str(our_pki / "policy.yaml"), str(deb)]


@pytest.mark.parametrize("pause", [str(16 << 20), "commit"])
@pytest.mark.parametrize("role", ["developer", "controller"])
def test_sign_killed_while_writing_changes_nothing(our_pki, tmp_path, big, pause, role):
    deb = tmp_path / "p.deb"
    deb.write_bytes(big)
    if role == "controller":
        signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    before = deb.read_bytes()
    _run_until_stopped(_sign_args(our_pki, role, deb), pause, tmp_path)
    assert deb.read_bytes() == before
    assert len(_temporaries(tmp_path)) == 1  # a killed process cannot remove its copy: it stays, never used
    signer.sign_file(deb, role, _key(our_pki, f"{role}-1"))
    assert deb.read_bytes().startswith(before)
    layout = clipsig.read_layout(deb.read_bytes())
    assert (layout.ctrl if role == "controller" else layout.dev) is not None


@pytest.mark.parametrize("pause", [str(16 << 20), "commit"])
def test_countersign_killed_while_writing_changes_no_package(our_pki, tmp_path, big, pause):
    box = _dev_batch(tmp_path, our_pki, big)
    before = {p.name: p.read_bytes() for p in box.iterdir()}
    args = ["countersign", str(box), "--key", str(our_pki / "controller-1.key"), "--cert",
            str(our_pki / "controller-1.pem"), "--policy", str(our_pki / "policy.yaml")]
    _run_until_stopped(args, pause, tmp_path)
    assert {p.name: p.read_bytes() for p in box.iterdir() if not p.name.endswith(".tmp")} == before
    policy = trust.load_policy(our_pki / "policy.yaml")
    rows = batch.countersign(box, _key(our_pki, "controller-1"), policy)
    assert [r.file for r in rows] == ["a.deb", "b.deb"]
    assert all(trust.verify_file(box / r.file, policy).ok for r in rows)
