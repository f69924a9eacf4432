"""Booting an image in QEMU (TCG: KVM does not work on these machines), interactively or as a check.

The image boots as a machine would: SeaBIOS, the GPT's gptmbr.bin, SYSLINUX with the A/B switch, the
hardened kernel opening the root under dm-verity, busybox init, rcS. The disk is opened with snapshot=on, so
nothing the guest writes reaches the image file.

`check` watches the serial console for the marker clip-sysinfo prints once the system is up
(`CLIP_BOOT_OK`: root read-only on an intact dm-verity target, jails configured, slot known, the packages'
self-tests passed), and fails on `CLIP_BOOT_FAILED`, a kernel panic, QEMU exiting, or the timeout. It collects
the self-tests' outcomes (`CLIP_SELFTEST` lines, clipbuild.image.selftests) and, given the self-tests each slot
ships (the manifest's), fails unless every one of the booted slot's reported "ok". The whole console goes to a
log file.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from clipbuild.core.run import run, run_watch
from clipbuild.image import bootproof, firmware, jailproof
from clipbuild.image.selftests import Outcome, missing, parse

OK_MARKER = "CLIP_BOOT_OK"
SYSINFO = "clip-sysinfo: "  # its report line, printed before the marker
FAILED_MARKER = "CLIP_BOOT_FAILED"
PANIC = "Kernel panic"
MENU_MARKER = b"Automatic boot in"  # the countdown SYSLINUX's menu.c32 prints under the menu (bootloader.slot_config)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|[\x00-\x08\x0b-\x1f]")


def qemu_command(image: Path, *, memory_mib: int = 512, uefi: firmware.Machine | None = None,
                 reboot: bool = False) -> list[str]:
    """QEMU for `image`: SeaBIOS, or with `uefi` OVMF with enrolled keys (and a TPM). The guest's reboots
    stop QEMU unless `reboot` (boot counting needs the machine to come back)."""
    fmt = "qcow2" if image.suffix == ".qcow2" else "raw"
    args = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mib), "-nographic", "-nic", "none"]
    if not reboot:
        args.append("-no-reboot")
    if uefi is None:
        return [*args, "-drive", f"file={image},if=virtio,format={fmt},snapshot=on"]
    return [*args, *uefi.qemu_args(), *firmware.disk_args(image, fmt)]


def boot(image: Path, memory_mib: int = 512, uefi: firmware.Machine | None = None) -> int:
    """Boot on this terminal's serial console (Ctrl-A X quits QEMU)."""
    return run(qemu_command(image, memory_mib=memory_mib, uefi=uefi), capture=False, check=False).returncode


@dataclass
class CheckResult:
    ok: bool
    reason: str
    seconds: float
    log: str
    marker: str = ""
    slot: str = ""
    selftests: list[Outcome] = field(default_factory=list)
    jails: list[jailproof.Report] = field(default_factory=list)
    uefi: bootproof.UefiReport | None = None
    failed_boots: list[str] = field(default_factory=list)  # what ended each boot the machine came back from
    blessing: bootproof.Blessing | None = None  # what became of the booted entry's boot counter

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "reason": self.reason, "seconds": round(self.seconds, 1), "log": self.log,
                "marker": self.marker, "slot": self.slot, "selftests": [t.to_dict() for t in self.selftests],
                "jails": [j.to_dict() for j in self.jails], "uefi": self.uefi.to_dict() if self.uefi else None,
                "failed_boots": self.failed_boots, "blessing": self.blessing.to_dict() if self.blessing else None}


def _menu_enter() -> Callable[[bytes], bytes | None]:
    """Press Enter once at the SYSLINUX menu, as a user would: the default entry boots at once instead of
    after the menu's timeout. What the menu offers is unchanged."""
    pressed = []

    def keys(output: bytes) -> bytes | None:
        if not pressed and MENU_MARKER in output:
            pressed.append(True)
            return b"\r"
        return None

    return keys


class _Console:
    """The console of one check, line by line: what each boot showed, and whether to stop watching. A panic
    ends a boot; with `reboots` left the machine comes back (a device that reboots on failure) and the next
    boot is watched afresh."""

    STOPS = (OK_MARKER, FAILED_MARKER, PANIC, firmware.ACCESS_DENIED)

    def __init__(self, log: TextIO, reboots: int):
        self.log, self.reboots = log, reboots
        self.seen: dict[str, str] = {}
        self.lines: list[str] = []
        self.outcomes: list[Outcome] = []
        self.failed_boots: list[str] = []

    def __call__(self, raw: str) -> bool:
        line = ANSI.sub("", raw)
        self.log.write(line + "\n")
        self.lines.append(line)
        if (outcome := parse(line)) is not None:
            self.outcomes.append(outcome)
        for marker in self.STOPS:
            if marker in line:  # the firmware's refusal names the file before the marker: keep the line
                self.seen.setdefault(marker, line.strip() if marker == firmware.ACCESS_DENIED
                                     else line[line.index(marker):].strip())
        if "is corrupted" in line:
            self.seen.setdefault("corrupted", line.strip())
        if PANIC in self.seen and len(self.failed_boots) < self.reboots:
            self.failed_boots.append(self.seen[PANIC] + (f" ({self.seen['corrupted']})" if "corrupted" in self.seen
                                                        else ""))
            self.seen, self.lines, self.outcomes = {}, [], []
            return False
        return any(m in self.seen for m in self.STOPS)


def check(image: Path, log_path: Path, *, timeout: float = 300, memory_mib: int = 512,
          expected: Mapping[str, list[str] | None] | None = None,
          jails: Mapping[str, list[jailproof.Expected] | None] | None = None,
          uefi: firmware.Machine | None = None, pcrs: Mapping[str, Mapping[str, str]] | None = None,
          reboots: int = 0, pcrs_source: str = "the manifest") -> CheckResult:
    """Boot headless until the marker; the console is saved to `log_path`. `expected`: the self-tests each slot
    ships, `jails`: the jails each slot starts (None for a slot whose manifest does not say). With `uefi`, on
    OVMF: the firmware refusing an image fails the check at once, and the booted system must report Secure Boot
    on and, where `pcrs` gives the slot's predictions (from `pcrs_source`), exactly those PCR values. With
    `reboots`, up to that many boots may end in a panic, the machine rebooting (what boot counting's fallback
    needs)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        console = _Console(log, reboots)
        outcome, status = run_watch(qemu_command(image, memory_mib=memory_mib, uefi=uefi, reboot=reboots > 0),
                                    console, timeout=timeout, keys=None if uefi else _menu_enter())
    seen, lines, outcomes = console.seen, console.lines, console.outcomes
    seconds = time.monotonic() - started
    # The booted slot, from the marker or from clip-sysinfo's report line before a failed check.
    found = re.search(r"\bslot=(\S+)", seen.get(OK_MARKER) or next((x for x in lines if x.startswith(SYSINFO)), ""))
    slot = found.group(1) if found else ""
    expected_jails = (jails or {}).get(slot) or []
    reports = jailproof.collect(lines)
    order = {jail.name: index for index, jail in enumerate(expected_jails)}
    listed = sorted(reports.values(), key=lambda r: order.get(r.name, len(order)))
    jail_problems = jailproof.problems(expected_jails, reports)  # the host's own reading, in every outcome
    proof = bootproof.collect(lines)
    if OK_MARKER in seen:
        problems = missing((expected or {}).get(slot) or [], outcomes) + jail_problems
        if uefi is not None:
            problems += [f"a malformed boot proof line: {line[:120]}" for line in proof.malformed]
            problems += uefi_problems(proof.uefi, (pcrs or {}).get(slot), pcrs_source)
        return CheckResult(not problems, "; ".join(problems) or "the system is up", seconds, str(log_path),
                           seen[OK_MARKER], slot, outcomes, listed, proof.uefi, console.failed_boots, proof.blessing)
    if FAILED_MARKER in seen:
        reason = seen[FAILED_MARKER].removeprefix(FAILED_MARKER).strip() or "the boot check failed"
        reason = "; ".join([reason, *(p for p in jail_problems if not reason.startswith(p))])
    elif firmware.ACCESS_DENIED in seen:
        reason = f"the firmware refused to start the boot loader or the kernel image: {seen[firmware.ACCESS_DENIED]}"
    elif PANIC in seen:
        reason = seen[PANIC] + (f" ({seen['corrupted']})" if "corrupted" in seen else "")
    elif outcome == "exited":
        reason = f"QEMU exited (status {status}) before the system came up"
    else:
        reason = f"no {OK_MARKER} within {timeout:g} s"
    return CheckResult(False, reason, seconds, str(log_path), seen.get(FAILED_MARKER, ""), slot, outcomes, listed,
                       proof.uefi, console.failed_boots, proof.blessing)


def uefi_problems(report: bootproof.UefiReport | None, pcrs: Mapping[str, str] | None,
                  source: str = "the manifest") -> list[str]:
    """What is wrong with the booted system's account of a UEFI boot (its CLIP_UEFI line): it must have booted
    from UEFI with Secure Boot enforcing (not in setup mode), the kernel locked down, and read exactly the
    predicted `pcrs` ({"4": HEX, ...}, from `source`) from its TPM."""
    if report is None:
        return ["the system did not report how it booted (no well-formed CLIP_UEFI line)"]
    problems = []
    if report.firmware != "uefi" or report.secureboot is not True or report.setupmode is not False:
        problems.append(f"Secure Boot is not enforcing (firmware={report.firmware} secureboot={report.secureboot} "
                        f"setupmode={report.setupmode})")
    if report.lockdown not in ("integrity", "confidentiality"):
        problems.append(f"the kernel is not locked down under Secure Boot (lockdown={report.lockdown})")
    for index, predicted in sorted((pcrs or {}).items(), key=lambda item: int(item[0])):
        found = report.pcr(int(index))
        if found != predicted:
            problems.append(f"PCR {index} is {found or 'unreadable'}, {source} predicts {predicted}")
    return problems
