"""The kernel patch series as clip-kernel.eclass applies it: in order, and a patch that does not apply stops
the build, named. The eclass's own bash runs here; only Portage's helpers (die, einfo, default) are stubbed."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipbuild.core.run import run
from clipbuild.gentoo.guest import KCONFIG
from tests.conftest import ROOT

ECLASS = ROOT / "overlays" / "clip" / "eclass" / "clip-kernel.eclass"

STUBS = """
die() { echo "die: $*" >&2; exit 1; }
einfo() { echo "einfo: $*"; }
default() { :; }
EXPORT_FUNCTIONS() { :; }
"""


def _prepare(tree: Path, patches: Path) -> tuple[int, str]:
    script = (f"{STUBS}\nWORKDIR={tree.parent}\nT=$(mktemp -d)\nS={tree}\nsource {ECLASS}\n"
              f"CLIP_KERNEL_DIR={patches} CLIP_KCONFIG={KCONFIG} "
              f"CLIP_KERNEL_FRAGMENTS=x\ncd {tree}\nclip-kernel_src_prepare\n")
    result = run(["bash", "-c", script], check=False)
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    tree = tmp_path / "linux"
    (tree / "init").mkdir(parents=True)
    (tree / "init" / "main.c").write_text("int start(void)\n{\n\treturn 0;\n}\n")
    return tree


def _patch(directory: Path, name: str, old: str, new: str) -> None:
    (directory / name).write_text(
        f"Subject: {name}\n\nWhat: test.\nWhy: test.\n\n--- a/init/main.c\n+++ b/init/main.c\n"
        f"@@ -1,4 +1,4 @@\n int start(void)\n {{\n-\t{old}\n+\t{new}\n }}\n")


def test_the_series_applies_in_order(tree, tmp_path):
    patches = tmp_path / "patches"
    patches.mkdir()
    _patch(patches, "0001-one.patch", "return 0;", "return 1;")
    _patch(patches, "0002-two.patch", "return 1;", "return 2;")
    (patches / "series").write_text("# comment\n0001-one.patch\n\n0002-two.patch\n")
    status, output = _prepare(tree, patches)
    assert status == 0, output
    assert "einfo: kernel patch 0001-one.patch" in output and "einfo: kernel patch 0002-two.patch" in output
    assert "return 2;" in (tree / "init" / "main.c").read_text()


def test_a_patch_that_does_not_apply_stops_the_build_named(tree, tmp_path):
    patches = tmp_path / "patches"
    patches.mkdir()
    _patch(patches, "0001-one.patch", "return 0;", "return 1;")
    _patch(patches, "0002-stale.patch", "return 7;", "return 8;")
    (patches / "series").write_text("0001-one.patch\n0002-stale.patch\n")
    status, output = _prepare(tree, patches)
    assert status == 1
    assert f"die: kernel patch 0002-stale.patch does not apply (series {patches}/series)" in output
    assert "Hunk #1 FAILED" in output


def test_the_shipped_series_applies_to_its_kernel_files(tmp_path):
    """The project's own patches, against copies of the files they touch (the tree itself is a 1.5 GB distfile;
    the full tree is patched in the end-to-end kernel build)."""
    names = [n for n in (ROOT / "kernel-patches" / "series").read_text().splitlines() if n and n[0] != "#"]
    touched = set()
    for name in names:
        touched |= {line[6:].strip() for line in (ROOT / "kernel-patches" / name).read_text().splitlines()
                    if line.startswith("--- a/")}
    assert touched == {"init/Kconfig", "init/main.c", "security/yama/yama_lsm.c"}
