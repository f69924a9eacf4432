"""Benchmark: time to the boot marker on the UEFI path (OVMF with Secure Boot enforcing, systemd-boot, a signed
UKI, swtpm) beside the BIOS path (SeaBIOS, SYSLINUX, the same kernel and root), same species, same run.

    .venv/bin/python bench/boot_paths.py [SPECIES] [--runs N] [--workdir DIR]

Builds both images first if needed (not timed; each into its own folder under WORKDIR/bench-boot), then boots
each N times with `clipbuild vm IMAGE --check --json` under QEMU TCG and prints the medians of the seconds the
check reports (QEMU start to CLIP_BOOT_OK). Target (issue P16): UEFI within 2x of BIOS.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from clipbuild.core.run import run

CLIPBUILD = Path(sys.executable).with_name("clipbuild")
PATHS = {"bios": "syslinux", "uefi": "systemd-boot"}


def boot_seconds(base: list, image: str) -> float:
    result = run([*base, "vm", image, "--check", "--json"])
    data = json.loads(result.stdout)
    if not data["ok"]:
        raise SystemExit(f"{image}: boot check failed: {data['reason']}")
    return float(data["seconds"])


def report(species: str, medians: dict[str, float], runs: int) -> str:
    ratio = medians["uefi"] / medians["bios"]
    return "\n".join([
        f"boot to CLIP_BOOT_OK, {species}, QEMU TCG, median of {runs}:",
        f"  BIOS: SeaBIOS, SYSLINUX (baseline)                 {medians['bios']:6.1f} s",
        f"  UEFI: OVMF Secure Boot, systemd-boot, UKI, swtpm   {medians['uefi']:6.1f} s",
        f"  UEFI / BIOS                                        {ratio:6.2f} x   (target <= 2 x)",
    ])


def main() -> None:
    from benchargs import parse

    args = parse(__doc__, runs=3)
    base = [CLIPBUILD, "--workdir", args.workdir]
    images = {}
    for name, loader in PATHS.items():
        out = args.workdir / "bench-boot" / name
        built = run([*base, "image", args.species, "--bootloader", loader, "--out", out, "--json"])
        images[name] = json.loads(built.stdout)["image"]
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    for _ in range(args.runs):  # interleaved, so a busy moment of the machine weighs on both alike
        for name in PATHS:
            times[name].append(boot_seconds(base, images[name]))
    print(report(args.species, {name: statistics.median(v) for name, v in times.items()}, args.runs))


if __name__ == "__main__":
    main()
