"""The command line the benchmarks share: SPECIES, --runs N, --workdir DIR (the bench scripts import this from
their own folder, which Python puts first on the path of a script)."""

from __future__ import annotations

import argparse
from pathlib import Path


def parse(doc: str, runs: int) -> argparse.Namespace:
    """SPECIES (default client), --runs (default `runs`) and --workdir (default build), described by the first
    line of the script's docstring."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("species", nargs="?", default="client")
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--workdir", type=Path, default=Path("build"))
    return parser.parse_args()
