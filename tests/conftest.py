"""Shared fixtures: the project checkout, scratch projects for bad profiles, and the CLI."""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from clipbuild.cli.main import main
from clipbuild.core.project import Project

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project() -> Project:
    return Project(ROOT)


@dataclass
class ScratchProject:
    """A copy of the project's jails/ and kernel-patches/ with profiles written by the test."""

    project: Project

    @property
    def root(self) -> Path:
        return self.project.root

    def write(self, name: str, text: str) -> Path:
        path = self.project.profiles_dir / f"{name}.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ScratchProject:
    root = tmp_path / "proj"
    (root / "profiles").mkdir(parents=True)
    for sub in ("jails", "kernel-patches"):
        shutil.copytree(ROOT / sub, root / sub)
    monkeypatch.chdir(root)
    return ScratchProject(Project(root))


@pytest.fixture
def scratch_with_base(scratch: ScratchProject) -> ScratchProject:
    shutil.copy(ROOT / "profiles" / "base.yaml", scratch.project.profiles_dir / "base.yaml")
    return scratch


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def clipbuild(capsys: pytest.CaptureFixture[str]):
    """Run the real CLI entry point in-process: clipbuild("profile", "list") -> CliResult."""

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        captured = capsys.readouterr()
        code = exc.value.code
        return CliResult(code if isinstance(code, int) else 1, captured.out, captured.err)

    return invoke
