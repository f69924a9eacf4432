"""Docs stay true: every profile key is documented, examples validate, the README's commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from clipbuild.spec.checks import CHECKS
from clipbuild.spec.model import DISTRIBUTIONS, PARTS, PROFILE_SCHEMA
from clipbuild.spec.profile import resolve
from clipbuild.spec.schema import key_paths

ROOT = Path(__file__).resolve().parent.parent
PROFILES_MD = (ROOT / "docs" / "profiles.md").read_text()


def documented_name(path: str) -> str:
    for dist in DISTRIBUTIONS:
        path = path.replace(f"packages.{dist}", "packages.<dist>")
    for part in PARTS:
        path = path.replace(f"<dist>.{part}", "<dist>.<part>")
    return path


def test_every_schema_key_is_documented():
    names = {documented_name(p) for p, _ in key_paths(PROFILE_SCHEMA) if not p.endswith(".*")}
    missing = sorted(n for n in names if f"`{n}`" not in PROFILES_MD)
    assert missing == []


def test_every_semantic_check_is_documented():
    assert [c.__name__ for c in CHECKS if f"`{c.__name__}`" not in PROFILES_MD] == []


def test_the_inheritance_example_validates(scratch_with_base):
    example = re.search(r"```yaml\n(inherits: base\n.*?)```", PROFILES_MD, re.S).group(1)
    scratch_with_base.write("example", example)
    prof = resolve(scratch_with_base.project, "example")
    assert "x11" not in prof.jails
    assert "swap" not in [p.name for p in prof.disk.partitions]
    assert prof.boot.cmdline == ("console=tty0",)


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make image" in readme and "make test" in readme
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_host_packages_have_one_source():
    """The Makefile installs from host-tools.tsv; .ci/run only bootstraps make, then calls it."""
    from clipbuild.core.run import host_tools

    assert "HOST_TOOLS := clipbuild/host-tools.tsv" in (ROOT / "Makefile").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    listed_in_ci = {t.package for t in host_tools() if re.search(rf"\s{re.escape(t.package)}\s", ci)}
    assert listed_in_ci == {"make"}


def test_architecture_names_every_module():
    """Each module as `package/module` (`gentoo/guest/kconfig`), in its package's table."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "clipbuild"
    modules = sorted(p.relative_to(package).with_suffix("").as_posix() for p in package.rglob("*.py")
                     if not p.stem.startswith("_"))
    assert [m for m in modules if f"`{m}`" not in text] == []


def test_the_jail_rules_table_lists_every_rule_the_boot_proves():
    """docs/jails.md shows each rule with its render-time check and its probe: the table's rules are exactly
    those the manager (namespaces) and its probe (the others) report at boot, and the e2e boot tests require."""
    import re

    from tests.e2e.test_image import RULES

    text = (ROOT / "docs" / "jails.md").read_text()
    table = text[text.index("| rule | render time"):].split("\n\n")[0]
    documented = [m.group(1) for m in re.finditer(r"^\| `([a-z-]+)` \|", table, re.M)]
    sources = ROOT / "overlays" / "clip" / "app-clip" / "clip-jail" / "files"
    probed = {"namespaces"} | set(re.findall(r'\brule\("([a-z-]+)"', (sources / "probe.c").read_text()))
    assert sorted(documented) == sorted(probed)
    assert set(RULES) | {"homes"} == probed
