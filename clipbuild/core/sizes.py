"""Sizes as users write them (`128MiB`, `2GiB`, `512M`) and as clipbuild prints them.

Units are binary, as in sgdisk and CLIP's own partitioning scripts: K, M, G, T and KiB, MiB, GiB, TiB all mean
powers of 1024. A bare integer is a number of bytes. Decimal units (MB, GB) are refused rather than guessed.
"""

from __future__ import annotations

import re

from clipbuild.core.errors import SizeError

UNITS = {"": 1, "B": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20, "G": 1 << 30,
         "GIB": 1 << 30, "T": 1 << 40, "TIB": 1 << 40}
MIB = 1 << 20
MAX_DIGITS = 30  # more would overflow a float, or pass Python's 4300-digit limit of int()

_SIZE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: object) -> int:
    """Bytes for `value`; raises SizeError with a message fit for the user."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SizeError(f"expected a size, got {type(value).__name__} {value!r}")
    if isinstance(value, int):
        number, unit = str(value), ""
    else:
        match = _SIZE.match(value)
        if not match:
            raise SizeError(f"'{value}' is not a size")
        number, unit = match.groups()
    if unit.upper() not in UNITS:
        hint = ("decimal units are ambiguous here; use MiB/GiB (1 MiB = 1024 KiB)"
                if unit.upper() in ("KB", "MB", "GB", "TB") else "units: B, KiB, MiB, GiB, TiB")
        raise SizeError(f"'{value}' has an unknown unit '{unit}'", hint)
    if number.startswith("-"):
        raise SizeError(f"'{value}' is negative", "sizes must be positive")
    if len(number) > MAX_DIGITS:
        raise SizeError(f"a size of {len(number)} digits is too large", "a disk is at most a few TiB")
    scaled = float(number) * UNITS[unit.upper()] if "." in number else int(number) * UNITS[unit.upper()]
    if scaled != int(scaled):
        raise SizeError(f"'{value}' is not a whole number of bytes")
    return int(scaled)


def format_size(size: int) -> str:
    """The largest unit that divides exactly: 1073741824 -> '1GiB', 1536 -> '1536B'."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
