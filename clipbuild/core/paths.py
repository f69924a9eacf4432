"""Where clipbuild keeps what it shares across work directories: the cache folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """~/.cache/clipbuild, or $CLIPBUILD_CACHE, or $XDG_CACHE_HOME/clipbuild."""
    if os.environ.get("CLIPBUILD_CACHE"):
        return Path(os.environ["CLIPBUILD_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "clipbuild"
