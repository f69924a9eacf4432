"""Benchmark: sign and verify throughput in CLIP's format, beside sha256sum over the same files in the same run.

    .venv/bin/python bench/signing.py [--small N] [--large N] [--large-mib M] [--curve p256]

Small packages: N copies of a 800-byte .deb (sign as developer, countersign, verify), in packages per second.
Large packages: N packages of M MiB (dpkg-deb -Znone of random data), in MiB/s, with sign and countersign also as
a ratio of verify's throughput. Signing appends in place (an intent record, fsynced with its directory, before
the append; the append fsynced before the record goes): `sign` and `sign --role controller` package by package,
then the same packages countersigned again as one controller batch (`countersign`, its report and a dpkg-deb
per package included) once cut back to their developer signature. Also, for large packages: the copy path that
a package with hard links takes (a private copy hashed as it is written, fsynced, renamed over it), and what
copying alone costs (each package copied into a new file and fsynced, no hashing), that path's floor. Targets:
small verify >= 500 packages/s, large verify >= 0.8 x sha256sum (issue P3); large sign and countersign >= 0.8 x
verify (P11).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from clipbuild.core import hashcopy, safefile
from clipbuild.core.run import run
from clipbuild.formats import clipsig
from clipbuild.signing import batch, pki, signer, trust

SECRET = b"bench only"
TARGET = 0.8  # x verify, for sign and countersign of large packages
SIGNING = ("sign (developer)", "countersign (controller)", "countersign (batch)")


def timed(func) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def make_large(directory: Path, count: int, mib: int) -> list[Path]:
    out = []
    for index in range(count):
        root = directory / f"big{index}"
        (root / "DEBIAN").mkdir(parents=True)
        (root / "DEBIAN" / "control").write_text(f"Package: big{index}\nVersion: 1.0\nArchitecture: all\n"
                                                 "Maintainer: bench\nDescription: large package\n")
        (root / "usr" / "share").mkdir(parents=True)
        (root / "usr" / "share" / "blob").write_bytes(os.urandom(mib << 20))
        deb = directory / f"big{index}.deb"
        run(["dpkg-deb", "--root-owner-group", "-Znone", "--build", root, deb])
        shutil.rmtree(root)
        out.append(deb)
    os.sync()  # what setting up wrote is on disk before anything is measured, not written back meanwhile
    return out


def copy_durably(debs: list[Path]) -> None:
    """Copy each package into a new file and fsync it: what signing must write, without hashing or signing."""
    for deb in debs:
        with deb.open("rb") as source:
            out, tmp = safefile.create_exclusive(deb.parent, deb.name, 0o600, readable=True)
            try:
                hashcopy.copy_hashed(source.fileno(), out, os.fstat(source.fileno()).st_size, ())
                os.fsync(out)
            finally:
                os.close(out)
                tmp.unlink()


def measure(debs: list[Path], keys: dict[str, signer.SigningKey], policy: trust.Policy,
            floor: bool = False) -> dict[str, float]:
    def sign(role: str) -> None:
        for deb in debs:
            signer.sign_file(deb, role, keys[role])
        signer.settle()  # the replaced packages are freed too before the clock stops

    def verify() -> None:
        for deb in debs:
            assert trust.verify_file(deb, policy).ok

    results = {
        "sign (developer)": timed(lambda: sign("developer")),
        "countersign (controller)": timed(lambda: sign("controller")),
        "verify (both signatures)": timed(verify),
        "sha256sum (same files)": timed(lambda: run(["sha256sum", *debs])),
    }
    if floor:
        results.update(again(debs, keys, policy))
        results["copy + fsync (no hashing)"] = timed(lambda: copy_durably(debs))
    return results


def again(debs: list[Path], keys: dict[str, signer.SigningKey], policy: trust.Policy) -> dict[str, float]:
    """The same packages countersigned again as one batch, then signed again on the copy path (each with a
    second name), each time cut back first to what they were before (their developer signature, then none)."""
    layouts = {deb: clipsig.read_layout(deb.read_bytes()) for deb in debs}
    for deb, layout in layouts.items():
        assert layout.ctrl is not None
        os.truncate(deb, layout.ctrl.member.header_offset)
    os.sync()
    results = {"countersign (batch)": timed(lambda: batch.countersign(debs[0].parent, keys["controller"], policy))}
    links = [deb.with_name(f"{deb.name}.link") for deb in debs]
    for deb, link in zip(debs, links, strict=True):
        os.truncate(deb, layouts[deb].deb_end)
        os.link(deb, link)
    os.sync()
    try:
        def sign_copies() -> None:
            for deb in debs:
                signer.sign_file(deb, "developer", keys["developer"])
            signer.settle()

        results["sign, hard-linked (copy)"] = timed(sign_copies)
    finally:
        for link in links:
            link.unlink()
    return results


def report(title: str, results: dict[str, float], count: int, size: int) -> None:
    print(title)
    base = results["sha256sum (same files)"]
    verify = results["verify (both signatures)"]
    large = size >= (1 << 20)
    for name, seconds in results.items():
        per_mib = size * count / seconds / (1 << 20)
        rate = f"{per_mib:9.1f} MiB/s" if large else f"{count / seconds:9.1f} packages/s"
        ratio = f", {verify / seconds:.2f} x verify" if large else ""
        print(f"  {name:26} {seconds:8.3f} s  {rate}  ({base / seconds:.2f} x sha256sum{ratio})")
    if large:
        ratios = {name: verify / results[name] for name in SIGNING if name in results}
        verdicts = [f"{name} {ratio:.2f} ({'met' if ratio >= TARGET else 'missed'})" for name, ratio in ratios.items()]
        print(f"  target: sign and countersign >= {TARGET} x verify: {', '.join(verdicts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=5)
    parser.add_argument("--large-mib", type=int, default=100)
    parser.add_argument("--curve", choices=list(pki.CURVES), default="p256")
    args = parser.parse_args()
    vector = Path(__file__).resolve().parents[1] / "tests" / "data" / "vectors" / "gencrypt-bp256" / \
        "vectortest_1.0_all.unsigned.deb"
    with tempfile.TemporaryDirectory(prefix="clipbuild-bench-") as tmp:
        work = Path(tmp)
        pki.init(work / "pki", SECRET, pki.PkiSettings(curve=args.curve))
        keys = {role: signer.load_signing_key(work / "pki" / f"{role}-1.key", work / "pki" / f"{role}-1.pem",
                                              SECRET) for role in pki.ROLES}
        policy = trust.load_policy(work / "pki" / "policy.yaml")
        small = []
        (work / "small").mkdir()
        for index in range(args.small):
            path = work / "small" / f"p{index}.deb"
            path.write_bytes(vector.read_bytes())
            small.append(path)
        os.sync()
        report(f"{args.small} small packages ({vector.stat().st_size} bytes), curve {args.curve}:",
               measure(small, keys, policy), args.small, vector.stat().st_size)
        large = make_large(work, args.large, args.large_mib)
        report(f"{args.large} large packages ({args.large_mib} MiB), curve {args.curve}:",
               measure(large, keys, policy, floor=True), args.large, large[0].stat().st_size)


if __name__ == "__main__":
    main()
