"""Benchmark: sign and verify throughput in CLIP's format, beside sha256sum over the same files in the same run.

    .venv/bin/python bench/signing.py [--small N] [--large N] [--large-mib M] [--curve p256]

Small packages: N copies of a 800-byte .deb (sign as developer, countersign, verify), in packages per second on
one core. Large packages: N packages of M MiB (dpkg-deb -Znone of random data), in MiB/s. Targets (issue P3):
small verify >= 500 packages/s; large verify >= 0.8 x sha256sum's throughput.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from clipbuild.core.run import run
from clipbuild.signing import pki, signer, trust

SECRET = b"bench only"


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
        out.append(deb)
    return out


def measure(debs: list[Path], keys: dict[str, signer.SigningKey], policy: trust.Policy) -> dict[str, float]:
    def sign(role: str) -> None:
        for deb in debs:
            signer.sign_file(deb, role, keys[role])

    def verify() -> None:
        for deb in debs:
            assert trust.verify_file(deb, policy).ok

    return {
        "sign (developer)": timed(lambda: sign("developer")),
        "countersign (controller)": timed(lambda: sign("controller")),
        "verify (both signatures)": timed(verify),
        "sha256sum (same files)": timed(lambda: run(["sha256sum", *debs])),
    }


def report(title: str, results: dict[str, float], count: int, size: int) -> None:
    print(title)
    base = results["sha256sum (same files)"]
    for name, seconds in results.items():
        per_mib = size * count / seconds / (1 << 20)
        rate = f"{count / seconds:9.1f} packages/s" if size < (1 << 20) else f"{per_mib:9.1f} MiB/s"
        print(f"  {name:26} {seconds:8.3f} s  {rate}  ({base / seconds:.2f} x sha256sum)")


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
        report(f"{args.small} small packages ({vector.stat().st_size} bytes), curve {args.curve}:",
               measure(small, keys, policy), args.small, vector.stat().st_size)
        large = make_large(work, args.large, args.large_mib)
        report(f"{args.large} large packages ({args.large_mib} MiB), curve {args.curve}:",
               measure(large, keys, policy), args.large, large[0].stat().st_size)


if __name__ == "__main__":
    main()
