"""The boot path at boot, host side: what the booted system says about how it was started.

clip-sysinfo prints, before its boot marker, one line (overlays/clip/app-clip/clip-sysinfo/files/clip-efi.c):

    CLIP_UEFI firmware=uefi|bios secureboot=0|1|- setupmode=0|1|- lockdown=none|integrity|confidentiality|-
              entry=ID|- pcr4=HEX|- pcr7=HEX|- pcr11=HEX|-

(`-`: not available on this boot, e.g. BIOS or no TPM; ID is the entry systemd-boot booted, LoaderEntrySelected;
HEX the TPM's SHA-256 PCR in 64 lower-case digits) and, with --check once the boot was found good, what became
of the entry systemd-boot counts the tries of (clip-bless.c): `CLIP_BLESSED OLD -> NEW` (EFI/Linux/OLD renamed
NEW, e.g. clip-b+2-1.efi -> clip-b.efi), `CLIP_BLESSED none (no boot counter)` or `CLIP_BLESS_FAILED WHY`.

The parsers are strict, so that a check built on them fails closed: a line of another shape, a key missing,
repeated, unknown or out of order, a value out of its range, UEFI variables reported on a BIOS boot, a blessing
that does not strip exactly the counter: refused (None).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

UEFI_MARKER = "CLIP_UEFI "
BLESSED_MARKER = "CLIP_BLESSED "
BLESS_FAILED_MARKER = "CLIP_BLESS_FAILED "
NO_COUNTER = "none (no boot counter)"
KEYS = ("firmware", "secureboot", "setupmode", "lockdown", "entry", "pcr4", "pcr7", "pcr11")
PCRS = (4, 7, 11)
FIRMWARE = ("uefi", "bios")
LOCKDOWN = ("none", "integrity", "confidentiality")
ENTRY = re.compile(r"[A-Za-z0-9+._-]{1,255}")
PCR = re.compile(r"[0-9a-f]{64}")
# EFI/Linux/NAME+LEFT[-DONE].efi as clip-bless.c accepts it; blessed, it is NAME.efi.
COUNTED = re.compile(r"(?P<name>[a-z0-9-]{1,64})\+[0-9]{1,4}(?:-[0-9]{1,4})?\.efi")
NOT_AVAILABLE = "-"


@dataclass(frozen=True)
class UefiReport:
    firmware: str  # uefi or bios
    secureboot: bool | None  # None: not available
    setupmode: bool | None
    lockdown: str | None  # none, integrity or confidentiality
    entry: str | None  # the entry systemd-boot booted (LoaderEntrySelected)
    pcr4: str | None  # SHA-256 PCRs, 64 lower-case hex digits
    pcr7: str | None
    pcr11: str | None

    def pcr(self, index: int) -> str | None:
        """PCR 4, 7 or 11 as the guest read it."""
        if index not in PCRS:
            raise KeyError(f"PCR {index}: the guest reports PCRs {', '.join(map(str, PCRS))} only")
        return getattr(self, f"pcr{index}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Blessing:
    outcome: str  # blessed, none (no boot counter) or failed
    old: str | None = None  # the counted file name in EFI/Linux (blessed only)
    new: str | None = None  # its name without the counter (blessed only)
    reason: str = ""  # why it failed (failed only)

    @property
    def ok(self) -> bool:
        """Blessed, or nothing to bless: a failure is shown, it does not fail a good boot by itself."""
        return self.outcome != "failed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


class _Malformed(ValueError):
    """A value out of its range: the whole line is refused."""


def _choice(value: str, allowed: Iterable[str]) -> str | None:
    """One of `allowed`, or None for "-"."""
    if value == NOT_AVAILABLE:
        return None
    if value not in allowed:
        raise _Malformed(value)
    return value


def _flag(value: str) -> bool | None:
    """0 or 1 as a boolean, None for "-"."""
    chosen = _choice(value, ("0", "1"))
    return None if chosen is None else chosen == "1"


def _matching(value: str, pattern: re.Pattern[str]) -> str | None:
    """A value the whole of which matches `pattern`, or None for "-"."""
    if value == NOT_AVAILABLE:
        return None
    if not pattern.fullmatch(value):
        raise _Malformed(value)
    return value


def _fields(line: str, marker: str) -> str | None:
    """What follows the marker, which may come after other console output on the line; None without it."""
    at = line.find(marker)
    return None if at < 0 else line[at + len(marker):].rstrip("\r\n")


def _values(rest: str) -> dict[str, str] | None:
    """KEY=VALUE words, exactly KEYS in their order, single spaces; None otherwise."""
    pairs = [word.partition("=") for word in rest.split(" ")]
    if tuple(key for key, _, _ in pairs) != KEYS or any(sep != "=" for _, sep, _ in pairs):
        return None
    return {key: value for key, _, value in pairs}


def parse_uefi(line: str) -> UefiReport | None:
    """The CLIP_UEFI line, or None when `line` is not one or is malformed in any way."""
    rest = _fields(line, UEFI_MARKER)
    values = None if rest is None else _values(rest)
    if values is None or values["firmware"] not in FIRMWARE:
        return None
    try:
        report = UefiReport(values["firmware"], _flag(values["secureboot"]), _flag(values["setupmode"]),
                            _choice(values["lockdown"], LOCKDOWN), _matching(values["entry"], ENTRY),
                            *(_matching(values[f"pcr{i}"], PCR) for i in PCRS))
    except _Malformed:
        return None
    if report.firmware == "bios" and (report.secureboot, report.setupmode, report.entry) != (None, None, None):
        return None  # UEFI variables cannot be read on a BIOS boot
    return report


def parse_blessing(line: str) -> Blessing | None:
    """The CLIP_BLESSED or CLIP_BLESS_FAILED line, or None when `line` is not one or is malformed."""
    failed = _fields(line, BLESS_FAILED_MARKER)
    if failed is not None:
        return Blessing("failed", reason=failed.strip()) if failed.strip() else None
    rest = _fields(line, BLESSED_MARKER)
    if rest is None:
        return None
    if rest == NO_COUNTER:
        return Blessing("none")
    old, arrow, new = rest.partition(" -> ")
    counted = COUNTED.fullmatch(old)
    if not arrow or counted is None or new != f"{counted['name']}.efi":
        return None
    return Blessing("blessed", old, new)


@dataclass(frozen=True)
class BootProof:
    uefi: UefiReport | None
    blessing: Blessing | None
    malformed: tuple[str, ...]  # lines carrying a marker that did not parse, or a second line of one kind

    def to_dict(self) -> dict[str, Any]:
        return {"uefi": self.uefi.to_dict() if self.uefi else None,
                "blessing": self.blessing.to_dict() if self.blessing else None, "malformed": list(self.malformed)}


def collect(lines: Iterable[str]) -> BootProof:
    """The console's CLIP_UEFI and blessing lines: at most one of each counts; anything else carrying their
    markers is listed as malformed, for the check to refuse."""
    uefi: UefiReport | None = None
    blessing: Blessing | None = None
    malformed: list[str] = []
    for line in lines:
        if UEFI_MARKER in line:
            report = parse_uefi(line)
            if report is None or uefi is not None:
                malformed.append(line.strip())
            else:
                uefi = report
        elif BLESSED_MARKER in line or BLESS_FAILED_MARKER in line:
            found = parse_blessing(line)
            if found is None or blessing is not None:
                malformed.append(line.strip())
            else:
                blessing = found
    return BootProof(uefi, blessing, tuple(malformed))
