"""Kernel configuration: fragments, and the check that names every value olddefconfig did not keep."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipbuild.gentoo.guest import kconfig
from tests.conftest import ROOT


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A tiny kernel tree with kconfig's structure: source, if blocks, menus, depends on."""
    (tmp_path / "fs").mkdir()
    (tmp_path / "Kconfig").write_text(
        'config BLOCK\n\tbool "block layer"\n\nmenu "File systems"\n\tdepends on BLOCK\n'
        'source "fs/Kconfig"\nendmenu\n\nconfig CPU_MITIGATIONS\n\tbool "mitigations"\n'
        'config SLOB\n\tbool\n')
    (tmp_path / "fs" / "Kconfig").write_text(
        'if MISC_FILESYSTEMS\nconfig SQUASHFS\n\ttristate "squashfs"\n\thelp\n\t  if you want it\n'
        'config SQUASHFS_XZ\n\tbool\n\tdepends on SQUASHFS\nendif\nconfig MISC_FILESYSTEMS\n\tbool\n')
    return tmp_path


def _fragment(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "test.config"
    path.write_text(text)
    return path


def test_definitions_follow_source_if_and_menus(tree):
    symbols = kconfig.definitions(tree)
    assert symbols["SQUASHFS"] == ["BLOCK", "MISC_FILESYSTEMS"]
    assert symbols["SQUASHFS_XZ"] == ["BLOCK", "MISC_FILESYSTEMS", "SQUASHFS"]
    assert symbols["BLOCK"] == []


def test_a_dropped_option_names_its_unmet_dependency(tree, tmp_path):
    requests = kconfig.read_fragments([_fragment(tmp_path, "CONFIG_SQUASHFS=y\nCONFIG_BLOCK=y\n")])
    config = {"CONFIG_BLOCK": "y"}
    [problem] = kconfig.check(requests, config, tree)
    assert str(problem) == ("CONFIG_SQUASHFS=y (test.config:1) became n: unmet dependency: depends on "
                            "(MISC_FILESYSTEMS)")


def test_a_renamed_option_is_an_error(tree, tmp_path):
    requests = kconfig.read_fragments([_fragment(tmp_path, "CONFIG_SPECULATION_MITIGATIONS=y\n")])
    [problem] = kconfig.check(requests, {}, tree)
    assert problem.why == "no Kconfig of this kernel defines it (renamed or removed?)"


def test_must_be_n(tree, tmp_path):
    requests = kconfig.read_fragments([_fragment(tmp_path, "# CONFIG_SLOB is not set\nCONFIG_BLOCK=n\n")])
    problems = kconfig.check(requests, {"CONFIG_SLOB": "y"}, tree)
    assert [str(p) for p in problems] == ["CONFIG_SLOB=n (test.config:1) became y: must be n: something selects "
                                          "it or it is not optional here"]


def test_a_changed_value_is_an_error(tree, tmp_path):
    requests = kconfig.read_fragments([_fragment(tmp_path, 'CONFIG_BLOCK=y\nCONFIG_CPU_MITIGATIONS=y\n')])
    [problem] = kconfig.check(requests, {"CONFIG_BLOCK": "y", "CONFIG_CPU_MITIGATIONS": "m"}, tree)
    assert problem.obtained == "m"


def test_later_fragments_override_and_merge(tmp_path):
    first, second = tmp_path / "a.config", tmp_path / "b.config"
    first.write_text("CONFIG_A=y\nCONFIG_B=y\n")
    second.write_text("# comment\nCONFIG_B=n\nCONFIG_C=\"x\"\n")
    merged = kconfig.merged_fragment(kconfig.read_fragments([first, second]))
    assert merged == 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x"\n'
    with pytest.raises(ValueError, match=r"b.config:1: not a configuration line"):
        second.write_text("CONFIG_B\n")
        kconfig.read_fragments([second])


@pytest.mark.parametrize(("expression", "holds"), [
    ("A", True), ("B", False), ("A && C", True), ("A && B", False), ("B || C", True), ("!B", True),
    ("!(A && C)", False), ('S="x"', True), ("A=n", False), ("B != y", True), ("X86 && (A || B)", False),
    ("A && odd stuff +", False)])
def test_dependency_expressions(expression, holds):
    config = {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "m", "CONFIG_S": '"x"'}
    assert kconfig._met(expression, config) is holds


def test_every_shipped_fragment_parses():
    fragments = sorted((ROOT / "kernel-patches" / "config").glob("*.config"))
    assert {f.name for f in fragments} >= {"base.config", "hardening.config", "client.config", "gateway.config"}
    for fragment in fragments:
        assert kconfig.read_fragments([fragment])


def test_the_series_names_patches_with_headers():
    series = ROOT / "kernel-patches" / "series"
    names = [line for line in series.read_text().splitlines() if line and not line.startswith("#")]
    assert names
    for name in names:
        text = (ROOT / "kernel-patches" / name).read_text()
        header = text.split("\n--- a/", 1)[0]
        assert "Subject:" in header and "What:" in header and "Why:" in header, name
