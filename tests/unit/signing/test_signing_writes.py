"""How signing writes (P11 item 4): in place, all or nothing (an intent record beside the package, core.appendlog),
or, for a package with hard links, on a copy made and hashed in one pass. A failing write or fsync leaves the
package as it was, no record and no temporary; a real `clipbuild sign` or `countersign` killed (SIGKILL) while it
writes leaves every package as it was once the next `sign`, `countersign` or `verify` has recovered it, and
signing again works; a record that does not match is refused and changes nothing."""

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

from clipbuild.core import appendlog, hashcopy
from clipbuild.core.errors import AppendRecordRefused, SigningError
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


def _records(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(appendlog.SUFFIX))


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
        signer.sign_copy(deb, "developer", _key(our_pki, "developer-1"))
    assert deb.read_bytes() == data and _temporaries(tmp_path) == []


def test_a_failing_fsync_leaves_the_package_and_no_temporary(our_pki, tmp_path, monkeypatch):
    deb = tmp_path / "p.deb"
    deb.write_bytes(UNSIGNED.read_bytes())

    def fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(SigningError, match=r"p\.deb: cannot write its signature: Input/output error"):
        signer.sign_copy(deb, "developer", _key(our_pki, "developer-1"))
    assert deb.read_bytes() == UNSIGNED.read_bytes() and _temporaries(tmp_path) == []


def test_a_package_cut_short_while_copied_is_refused_cleanly(our_pki, tmp_path, monkeypatch):
    deb = tmp_path / "p.deb"
    deb.write_bytes(_package(6 << 20))
    # the package is truncated once the copy has begun: the copy reads a mapping of it, and never gets a SIGBUS
    monkeypatch.setattr(signer, "_pause_after", lambda path: lambda done: os.truncate(path, 4096))
    with pytest.raises(SigningError, match=r"p\.deb: cannot copy it to sign it: it was cut short while being copied"):
        signer.sign_copy(deb, "developer", _key(our_pki, "developer-1"))
    assert deb.stat().st_size == 4096 and _temporaries(tmp_path) == []


def _dev_batch(tmp_path: Path, our_pki: Path, big: bytes, linked: bool = False) -> Path:
    """A batch of a small and a large developer-signed package (`linked`: each with a second name outside the
    batch, so that countersigning takes the copy path)."""
    box = tmp_path / "batch"
    box.mkdir()
    (box / "a.deb").write_bytes(UNSIGNED.read_bytes())
    (box / "b.deb").write_bytes(big)
    for deb in sorted(box.iterdir()):
        signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
        if linked:
            os.link(deb, tmp_path / f"{deb.name}.other")
    return box


def test_a_batch_whose_second_copy_fails_changes_nothing(our_pki, tmp_path, monkeypatch):
    box = _dev_batch(tmp_path, our_pki, _package(5 << 20), linked=True)
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
def test_sign_of_a_linked_package_killed_while_writing_changes_nothing(our_pki, tmp_path, big, pause, role):
    deb = tmp_path / "p.deb"
    deb.write_bytes(big)
    if role == "controller":
        signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    os.link(deb, tmp_path / "other")  # a second name: the copy path
    before = deb.read_bytes()
    _run_until_stopped(_sign_args(our_pki, role, deb), pause, tmp_path)
    assert deb.read_bytes() == before and _records(tmp_path) == []
    assert len(_temporaries(tmp_path)) == 1  # a killed process cannot remove its copy: it stays, never used
    signer.sign_file(deb, role, _key(our_pki, f"{role}-1"))
    assert deb.read_bytes().startswith(before)
    layout = clipsig.read_layout(deb.read_bytes())
    assert (layout.ctrl if role == "controller" else layout.dev) is not None


@pytest.mark.parametrize("pause", [str(16 << 20), "commit"])
def test_countersign_of_linked_packages_killed_while_writing_changes_no_package(our_pki, tmp_path, big, pause):
    box = _dev_batch(tmp_path, our_pki, big, linked=True)
    before = {p.name: p.read_bytes() for p in box.iterdir()}
    args = ["countersign", str(box), "--key", str(our_pki / "controller-1.key"), "--cert",
            str(our_pki / "controller-1.pem"), "--policy", str(our_pki / "policy.yaml")]
    _run_until_stopped(args, pause, tmp_path)
    assert {p.name: p.read_bytes() for p in box.iterdir() if not p.name.endswith(".tmp")} == before
    policy = trust.load_policy(our_pki / "policy.yaml")
    rows = batch.countersign(box, _key(our_pki, "controller-1"), policy)
    assert [r.file for r in rows] == ["a.deb", "b.deb"]
    assert all(trust.verify_file(box / r.file, policy).ok for r in rows)


# -- in place: the intent record ---------------------------------------------------------------------------------


def test_signing_in_place_appends_to_the_same_file(our_pki, tmp_path, big):
    deb = tmp_path / "p.deb"
    deb.write_bytes(big)
    inode = deb.stat().st_ino
    signed = signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    data = deb.read_bytes()
    assert deb.stat().st_ino == inode and data.startswith(big) and clipsig.read_layout(data).dev is not None
    assert (signed.sha256_before, signed.sha256_after) == (hashlib.sha256(big).hexdigest(),
                                                           hashlib.sha256(data).hexdigest())
    assert _records(tmp_path) == [] and _temporaries(tmp_path) == []


def test_a_package_with_hard_links_is_signed_on_a_copy(our_pki, tmp_path):
    deb = tmp_path / "p.deb"
    deb.write_bytes(UNSIGNED.read_bytes())
    os.link(deb, tmp_path / "cached.deb")  # as the build cache would hold it
    signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    assert (tmp_path / "cached.deb").read_bytes() == UNSIGNED.read_bytes()
    assert deb.stat().st_ino != (tmp_path / "cached.deb").stat().st_ino
    assert clipsig.read_layout(deb.read_bytes()).dev is not None and _records(tmp_path) == []


def _partial_then_failing_pwrite(monkeypatch, keep: int, error: BaseException) -> None:
    """os.pwrite writes `keep` bytes of the first signature it is given, then raises `error`."""
    real = os.pwrite
    calls = [0]

    def pwrite(fd, data, offset):
        calls[0] += 1
        if calls[0] == 1 and keep:
            return real(fd, bytes(data)[:keep], offset)
        raise error

    monkeypatch.setattr(os, "pwrite", pwrite)


@pytest.mark.parametrize("keep", [0, 100])
@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), KeyboardInterrupt()])
def test_a_failing_append_leaves_the_package_and_no_record(our_pki, tmp_path, monkeypatch, keep, error):
    deb = tmp_path / "p.deb"
    deb.write_bytes(UNSIGNED.read_bytes())
    _partial_then_failing_pwrite(monkeypatch, keep, error)
    expected = (SigningError, r"p\.deb: cannot write its signature: No space left on device") \
        if isinstance(error, OSError) else (KeyboardInterrupt, None)
    with pytest.raises(expected[0], match=expected[1]):
        signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    assert deb.read_bytes() == UNSIGNED.read_bytes()
    assert _records(tmp_path) == [] and _temporaries(tmp_path) == []


def test_a_batch_whose_second_append_fails_cuts_the_first_back(our_pki, tmp_path, monkeypatch):
    box = _dev_batch(tmp_path, our_pki, _package(1 << 20))
    before = {p.name: p.read_bytes() for p in box.iterdir()}
    real = os.pwrite
    calls: list[int] = []

    def pwrite(fd, data, offset):  # a.deb's signature is appended and fsynced, b.deb's fails
        calls.append(offset)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(SigningError, match=r"b\.deb: cannot write its signature: No space left on device"):
        batch.countersign(box, _key(our_pki, "controller-1"), trust.load_policy(our_pki / "policy.yaml"))
    assert calls[0] == len(before["a.deb"])
    assert {p.name: p.read_bytes() for p in box.iterdir()} == before


def _record(deb: Path, **changes) -> Path:
    """A record beside `deb` as clipbuild would write it for its current bytes, with `changes`."""
    data = deb.read_bytes()
    info = deb.stat()
    fields = {"length": len(data), "device": info.st_dev, "inode": info.st_ino,
              "sha256": hashlib.sha256(data).hexdigest(), **changes}
    path = appendlog.record_path(deb)
    path.write_bytes(appendlog.Record(**fields).text())
    return path


def test_a_record_left_by_a_kill_is_recovered_by_verify(our_pki, tmp_path, capsys):
    deb = tmp_path / "p.deb"
    deb.write_bytes(UNSIGNED.read_bytes())
    _record(deb)
    with deb.open("ab") as stream:
        stream.write(b"half a signature")
    verdict = trust.verify_file(deb, trust.load_policy(our_pki / "policy.yaml"))
    assert verdict.reasons == ("no dev_sign: the package is not signed",)
    assert deb.read_bytes() == UNSIGNED.read_bytes() and _records(tmp_path) == []
    assert f"recovered an interrupted signature: {deb} back to {len(UNSIGNED.read_bytes())} bytes" \
        in capsys.readouterr().err


@pytest.mark.parametrize(("change", "words"), [
    ({"sha256": "0" * 64}, "its first 800 bytes are not those recorded"),
    ({"inode": 1}, "names another file"),
    ({"length": 900}, "the package has 816 bytes, fewer than the 900 recorded"),
    ("garbage", "is not a record clipbuild wrote"),
    ("link", "it is a symbolic link"),
])
def test_a_record_that_does_not_match_is_refused_and_changes_nothing(our_pki, tmp_path, change, words):
    deb = tmp_path / "p.deb"
    deb.write_bytes(UNSIGNED.read_bytes()[:800])
    record = _record(deb, **change) if isinstance(change, dict) else appendlog.record_path(deb)
    with deb.open("ab") as stream:
        stream.write(b"16 more bytes..!")
    if change == "garbage":
        record.write_bytes(b"length 0\n")
    elif change == "link":
        record.symlink_to(deb)
    data, text = deb.read_bytes(), record.read_bytes()
    with pytest.raises(AppendRecordRefused, match=words):
        signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    verdict = trust.verify_file(deb, trust.load_policy(our_pki / "policy.yaml"))
    assert not verdict.ok and "a record of an interrupted signature is refused" in verdict.reasons[0]
    assert deb.read_bytes() == data and record.read_bytes() == text


def _verify_args(our_pki: Path, *debs: Path) -> list[str]:
    return ["verify", "--policy", str(our_pki / "policy.yaml"), *map(str, debs)]


def _clipbuild(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), signer.PASSPHRASE_ENV: SECRET.decode()}
    env.pop(signer.PAUSE_ENV, None)
    return subprocess.run([sys.executable, "-m", "clipbuild", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=120, check=False)


@pytest.mark.parametrize("pause", ["append", "commit"])
@pytest.mark.parametrize("role", ["developer", "controller"])
@pytest.mark.parametrize("recovery", ["sign", "verify"])
def test_sign_in_place_killed_while_writing_is_recovered(our_pki, tmp_path, big, pause, role, recovery):
    deb = tmp_path / "p.deb"
    deb.write_bytes(big)
    if role == "controller":
        signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    before = deb.read_bytes()
    _run_until_stopped(_sign_args(our_pki, role, deb), pause, tmp_path)
    assert _records(tmp_path) == [f".p.deb{appendlog.SUFFIX}"] and _temporaries(tmp_path) == []
    assert deb.read_bytes() != before and deb.read_bytes().startswith(before)  # appended to, in part or whole
    done = _clipbuild(_sign_args(our_pki, role, deb) if recovery == "sign" else _verify_args(our_pki, deb), tmp_path)
    assert f"recovered an interrupted signature: {deb} back to {len(before)} bytes" in done.stderr
    if recovery == "verify":
        assert deb.read_bytes() == before and done.returncode == 1
        done = _clipbuild(_sign_args(our_pki, role, deb), tmp_path)
    assert done.returncode == 0, done.stderr
    assert deb.read_bytes().startswith(before) and _records(tmp_path) == []
    layout = clipsig.read_layout(deb.read_bytes())
    assert (layout.ctrl if role == "controller" else layout.dev) is not None


@pytest.mark.parametrize("pause", ["append", "commit"])
def test_countersign_in_place_killed_while_writing_is_recovered(our_pki, tmp_path, big, pause):
    box = _dev_batch(tmp_path, our_pki, big)
    before = {p.name: p.read_bytes() for p in box.iterdir()}
    args = ["countersign", str(box), "--key", str(our_pki / "controller-1.key"), "--cert",
            str(our_pki / "controller-1.pem"), "--policy", str(our_pki / "policy.yaml")]
    _run_until_stopped(args, pause, tmp_path)
    assert _records(box) == [f".a.deb{appendlog.SUFFIX}", f".b.deb{appendlog.SUFFIX}"]
    done = _clipbuild(_verify_args(our_pki, box / "a.deb"), tmp_path)  # one package recovered by verify
    assert "recovered an interrupted signature" in done.stderr and (box / "a.deb").read_bytes() == before["a.deb"]
    done = _clipbuild(args, tmp_path)  # the other by countersign, which then countersigns the whole batch
    assert done.returncode == 0, done.stderr
    assert f"recovered an interrupted signature: {box / 'b.deb'} back to {len(before['b.deb'])} bytes" in done.stderr
    policy = trust.load_policy(our_pki / "policy.yaml")
    assert all(trust.verify_file(box / name, policy).ok for name in before) and _records(box) == []
    assert all((box / name).read_bytes().startswith(data) for name, data in before.items())


def _failing_fsync(monkeypatch, calls: range) -> None:
    """os.fsync fails with EIO on the calls numbered in `calls` (1: the record, 2: its directory, 3: the package
    once appended)."""
    real = os.fsync
    count = [0]

    def fsync(fd):
        count[0] += 1
        if count[0] in calls:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("calls", [range(1, 2), range(2, 3), range(3, 4)])
def test_a_failing_fsync_in_place_leaves_the_package_and_no_record(our_pki, tmp_path, monkeypatch, calls):
    deb = tmp_path / "p.deb"
    deb.write_bytes(UNSIGNED.read_bytes())
    _failing_fsync(monkeypatch, calls)
    words = "cannot write its signature" if calls.start == 3 else "cannot write the record of its signature"
    with pytest.raises(SigningError, match=rf"p\.deb: {words}: Input/output error"):
        signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    assert deb.read_bytes() == UNSIGNED.read_bytes()
    assert _records(tmp_path) == [] and _temporaries(tmp_path) == []


def test_a_package_that_cannot_be_cut_back_keeps_its_record_until_recovered(our_pki, tmp_path, monkeypatch):
    deb = tmp_path / "p.deb"
    deb.write_bytes(UNSIGNED.read_bytes())
    _failing_fsync(monkeypatch, range(3, 100))  # the package's fsync fails, and every one after it
    stuck = r"cutting back did not complete: .*p\.deb \(Input/output error\); its directory"
    with pytest.raises(SigningError, match=stuck):
        signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    assert _records(tmp_path) == [f".p.deb{appendlog.SUFFIX}"]
    monkeypatch.undo()
    verdict = trust.verify_file(deb, trust.load_policy(our_pki / "policy.yaml"))
    assert verdict.reasons == ("no dev_sign: the package is not signed",)
    assert deb.read_bytes() == UNSIGNED.read_bytes() and _records(tmp_path) == []


def test_a_package_rewritten_while_signed_fails_verification(our_pki, tmp_path, monkeypatch):
    """flock is advisory: a writer outside clipbuild that changes the package once it was read makes the new
    signature fail to verify (fail closed), never pass over bytes nobody checked."""
    deb = tmp_path / "p.deb"
    deb.write_bytes(_package(1 << 20))
    real = hashcopy.hash_view

    def hash_then_rewrite(view, algorithms, upto):
        hashers = real(view, algorithms, upto)
        with deb.open("r+b") as other:  # another writer, after the bytes were read
            other.seek(upto // 2)
            other.write(b"X")
        return hashers

    monkeypatch.setattr(hashcopy, "hash_view", hash_then_rewrite)
    signer.sign_file(deb, "developer", _key(our_pki, "developer-1"))
    monkeypatch.undo()
    signer.sign_file(deb, "controller", _key(our_pki, "controller-1"))
    verdict = trust.verify_file(deb, trust.load_policy(our_pki / "policy.yaml"))
    assert not verdict.ok and any("dev_sign: the signature does not match" in r for r in verdict.reasons)
