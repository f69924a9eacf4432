"""The project tree clipbuild works on: profiles/, jails/, overlays/, kernel-patches/."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clipbuild.core.errors import ProjectError
from clipbuild.core.run import run

MARKERS = ("profiles", "jails")
OVERLAY = "overlays/clip"  # the Portage overlay with CLIP's packages, relative to the project root


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles"

    @property
    def jails_dir(self) -> Path:
        return self.root / "jails"

    @property
    def overlays_dir(self) -> Path:
        return self.root / "overlays"

    @property
    def kernel_patches_dir(self) -> Path:
        return self.root / "kernel-patches"

    def display(self, path: Path) -> str:
        """`path` as a user should see it: relative to the current directory when that is shorter."""
        try:
            return os.path.relpath(path)
        except ValueError:
            return str(path)

    def source_date_epoch(self) -> int:
        """$SOURCE_DATE_EPOCH, else the date of the project's last commit, else 0: dates written into
        packages and images, so that the same checkout builds the same bytes."""
        if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
            return int(os.environ["SOURCE_DATE_EPOCH"])
        if (self.root / ".git").exists():
            result = run(["git", "-C", str(self.root), "log", "-1", "--format=%ct"], check=False)
            if result.returncode == 0 and result.stdout.strip().isdigit():
                return int(result.stdout.strip())
        return 0

    def species_files(self) -> list[Path]:
        return sorted(self.profiles_dir.glob("*.yaml"))


def _is_project(path: Path) -> bool:
    return all((path / marker).is_dir() for marker in MARKERS)


def find_project(explicit: Path | None = None) -> Project:
    """The project at `explicit`, else the nearest ancestor of the current directory holding profiles/ and
    jails/, else the source checkout clipbuild runs from."""
    if explicit is not None:
        root = explicit.resolve()
        if not _is_project(root):
            raise ProjectError(f"{explicit}: not a clipbuild project (it needs profiles/ and jails/)")
        return Project(root)
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if _is_project(candidate):
            return Project(candidate)
    checkout = Path(__file__).resolve().parents[2]  # clipbuild/core/project.py in a source checkout
    if _is_project(checkout):
        return Project(checkout)
    raise ProjectError("no clipbuild project here: no folder with profiles/ and jails/ at or above "
                       f"{here}; run from a project or pass --project DIR")
