"""House rules that keep the code base honest: one runner, ruff-clean, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

from clipbuild.core.run import run

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clipbuild"
RUNNER = PACKAGE / "core" / "run.py"
MAX_MODULE_LINES = 800


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_only_the_runner_starts_processes():
    offenders = []
    for path in _modules():
        if path == RUNNER:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
                  and (node.attr in {"system", "popen"} or node.attr.startswith(("exec", "spawn")))):
                names = [f"os.{node.attr}"]
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names
                          if n.split(".")[0] in {"subprocess", "pty"} or n.startswith("os.")]
    assert offenders == [], "run external programs through clipbuild.core.run only"


def test_ruff_is_clean():
    result = run([str(ROOT / ".venv" / "bin" / "ruff") if (ROOT / ".venv/bin/ruff").exists() else "ruff",
                  "check", "--no-cache", "clipbuild", "tests", "bench"], cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_modules_stay_small():
    big = [f"{p.relative_to(ROOT)}: {n}" for p in _modules()
           if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert big == []
