"""The overlay keeps Gentoo's conventions for every package: metadata.xml (well-formed, local USE flags
described), a licence text for every LICENSE name, eclasses that exist, and for a package with sources a
Manifest entry for each distfile (the Debian pins are tested in test_distfiles.py)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from portage.versions import catpkgsplit

from clipbuild.core.run import run
from tests.conftest import ROOT

OVERLAY = ROOT / "overlays" / "clip"
PACKAGES = sorted({e.parent for e in OVERLAY.glob("*/*/*.ebuild")})
GLOBAL_USE = {line.split(" - ", 1)[0] for line in (OVERLAY / "profiles" / "use.desc").read_text().splitlines()
              if line and not line.startswith("#")}


def _variable(ebuild: str, name: str) -> str:
    found = re.search(rf'^{name}="([^"]*)"', ebuild, re.M)
    return found.group(1) if found else ""


def _names(value: str) -> set[str]:
    """The names in a dependency-style string: USE conditionals, groups and operators dropped."""
    return {w for w in value.split() if w not in ("(", ")", "||") and not w.endswith("?")}


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_package_has_metadata_and_known_licences(package: Path):
    metadata = package / "metadata.xml"
    assert metadata.is_file(), f"{metadata.relative_to(ROOT)} is missing"
    text = metadata.read_text()
    assert '<!DOCTYPE pkgmetadata SYSTEM "https://www.gentoo.org/dtd/metadata.dtd">' in text
    root = ET.fromstring(text)
    assert root.tag == "pkgmetadata" and root.find("maintainer/email") is not None
    assert (root.findtext("longdescription") or "").strip(), f"{metadata}: no longdescription"
    described = {flag.get("name") for flag in root.iter("flag")}
    for ebuild_path in package.glob("*.ebuild"):
        ebuild = ebuild_path.read_text()
        licences = _names(_variable(ebuild, "LICENSE"))
        assert licences, f"{ebuild_path.name}: no LICENSE"
        for licence in licences:
            assert (OVERLAY / "licenses" / licence).is_file(), f"{ebuild_path.name}: licence {licence} has no text"
        for flag in _variable(ebuild, "IUSE").split():
            flag = flag.lstrip("+-")
            assert flag in GLOBAL_USE or flag in described, \
                f"{ebuild_path.name}: USE flag {flag} is described neither in use.desc nor in metadata.xml"
        inherits = re.findall(r"^inherit (.+)$", ebuild, re.M)
        for eclass in " ".join(inherits).split():
            assert (OVERLAY / "eclass" / f"{eclass}.eclass").is_file(), f"{ebuild_path.name}: no eclass {eclass}"


def _src_uri(ebuild_path: Path) -> str:
    """SRC_URI as bash reads it: the ebuild's global assignments (MY_P=${PN}-${PV/_p/p} ...) evaluated with P, PN
    and PV set as Portage sets them."""
    pkgsplit = catpkgsplit(f"{ebuild_path.parent.parent.name}/{ebuild_path.stem}")
    assert pkgsplit, ebuild_path
    _, pn, pv, _ = pkgsplit
    text = ebuild_path.read_text()
    helpers = re.findall(r"^MY_\w+=.*$", text, re.M)  # the MY_P=... convention
    src_uri = re.search(r'^SRC_URI="[^"]*"', text, re.M)
    script = "\n".join([f"P={pn}-{pv} PN={pn} PV={pv}", *helpers, src_uri.group(0) if src_uri else "SRC_URI=",
                        'printf %s "$SRC_URI"'])
    return run(["bash", "-c", script]).stdout


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_distfile_is_in_the_manifest(package: Path):
    manifest = package / "Manifest"
    listed = set(re.findall(r"^DIST (\S+) ", manifest.read_text(), re.M)) if manifest.is_file() else set()
    for ebuild_path in package.glob("*.ebuild"):
        words = [w for w in _src_uri(ebuild_path).split() if w not in ("(", ")") and not w.endswith("?")]
        # "URI -> NAME" stores the file as NAME
        names = {words[i + 2] if words[i + 1:i + 2] == ["->"] else w.rsplit("/", 1)[-1]
                 for i, w in enumerate(words) if w != "->" and (i == 0 or words[i - 1] != "->")}
        assert names <= listed, f"{ebuild_path.name}: distfiles {sorted(names - listed)} have no Manifest entry"
        assert listed <= names, f"{package.name}/Manifest: {sorted(listed - names)} is no distfile of the ebuild"
