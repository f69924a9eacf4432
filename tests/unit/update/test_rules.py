"""CLIP's update rules read from the image's root (update/rules), extracted from it (update/root), overridden on a
development image only; the rolled-back release marker (update/noupdate)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest

from clipbuild.core.beneath import TreeEscape
from clipbuild.core.errors import ImageError, InputError
from clipbuild.core.run import run
from clipbuild.image import fsimage
from clipbuild.update import apply, noupdate, root
from clipbuild.update.rules import DOWNLOAD, INSTALL, PARTS, Overrides, Rules, from_root, overridden, parse
from tests.conftest import ROOT

SHIPPED = ROOT / "overlays" / "clip" / "clip-layout" / "baselayout-clip" / "files"
NOW = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
KEYS = {"download": DOWNLOAD, "core": INSTALL["clip-core"], "apps": INSTALL["clip-apps"]}


def _tree(tmp_path: Path, **files: str) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    for which, text in files.items():
        path = tree / KEYS[which]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tree


def _shipped(tmp_path: Path) -> Path:
    return _tree(tmp_path, download=(SHIPPED / Path(DOWNLOAD).name).read_text(),
                 core=(SHIPPED / Path(INSTALL["clip-core"]).name).read_text(),
                 apps=(SHIPPED / Path(INSTALL["clip-apps"]).name).read_text())


def test_the_shipped_files_give_clip_s_rules_with_their_lines(tmp_path):
    rules, notes = from_root(_shipped(tmp_path), "client.img", NOW)
    assert notes == []
    assert (rules.maximum_age_days, rules.high_impact, rules.now) == (90, frozenset(), NOW)
    assert rules.to_dict() == {
        "maximum_age_days": {"value": 90, "from": f"/{DOWNLOAD}:5"},
        "install_high_impact_packages": {
            "clip-core": {"allowed": False, "from": f"/{INSTALL['clip-core']}:4"},
            "clip-apps": {"allowed": False, "from": f"/{INSTALL['clip-apps']}:4"},
            "rm-core": {"allowed": False, "from": "default"}, "rm-apps": {"allowed": False, "from": "default"}}}
    assert rules.summary().startswith(f"maximum age 90 days (/{DOWNLOAD}:5); high-impact packages: clip-core no")


def test_missing_files_mean_clip_s_defaults_said_in_notes(tmp_path):
    rules, notes = from_root(_tree(tmp_path), "client.img", NOW)
    assert (rules.maximum_age_days, rules.high_impact) == (90, frozenset())
    assert notes == [f"/{DOWNLOAD}: not in the image's root; CLIP's default applies (maximum_age=90)",
                     *(f"/{rel}: not in the image's root; CLIP's default applies "
                       "(option_install_high_impact_packages=no)" for rel in INSTALL.values())]
    assert rules.origins["maximum_age"] == f"default: no /{DOWNLOAD}"


def test_values_comments_and_blank_lines(tmp_path):
    tree = _tree(tmp_path, download="# age\n\n  maximum_age=30  \n", core="option_install_high_impact_packages=yes\n",
                 apps="# nothing set\n")
    rules, notes = from_root(tree, "client.img", NOW)
    assert notes == []
    assert rules.maximum_age_days == 30 and rules.origins["maximum_age"] == f"/{DOWNLOAD}:3"
    assert rules.allows_high_impact("clip-core") and not rules.allows_high_impact("clip-apps")
    assert rules.origins["clip-apps"] == f"/{INSTALL['clip-apps']} (no option_install_high_impact_packages: " \
                                         "CLIP's default)"
    off = from_root(_tree(tmp_path, download="maximum_age=30\nreject_too_old_configuration=no\n"), "x", NOW)[0]
    assert off.maximum_age_days == 0 and off.origins["maximum_age"] == f"/{DOWNLOAD}:2"


@pytest.mark.parametrize(("text", "message", "hint"), [
    ("maximum_age=90\nmax_tries=3\n", "/F:2: max_tries: unknown key",
     "the keys here are maximum_age, reject_too_old_configuration"),
    ("maximum_age=90\n# again\nmaximum_age=30\n", "/F:3: maximum_age: given twice (first on line 1)", "keep one"),
    ("maximum_age=ninety\n", "/F:1: maximum_age: 'ninety' is not a whole number of days, 0 to 99999 (0: no limit)",
     "write maximum_age=<a whole number of days"),
    ("maximum_age=-1\n", "/F:1: maximum_age: '-1' is not a whole number of days", ""),
    ("maximum_age=\n", "/F:1: maximum_age: '' is not a whole number of days", ""),
    ("reject_too_old_configuration=Yes\n", "/F:1: reject_too_old_configuration: 'Yes' is not yes or no", ""),
    ("\nmaximum_age = 90\n", "/F:2: maximum_age: 'maximum_age = 90' is not key=value", "one key=value per line"),
    ("maximum_age=90 # days\n", "/F:1: maximum_age: 'maximum_age=90 # days' is not key=value", "comments on lines"),
])
def test_every_error_names_file_line_and_key(text, message, hint):
    from clipbuild.update.rules import DOWNLOAD_KEYS
    with pytest.raises(ImageError) as exc:
        parse(text, "/F", DOWNLOAD_KEYS)
    assert str(exc.value).startswith(message)
    assert hint in exc.value.hint


def test_an_error_in_the_image_s_file_says_where_it_is_and_who_fixes_it(tmp_path):
    tree = _tree(tmp_path, core="option_install_high_impact_packages=maybe\n")
    with pytest.raises(ImageError) as exc:
        from_root(tree, "client.img", NOW)
    assert str(exc.value) == f"/{INSTALL['clip-core']}:1: option_install_high_impact_packages: 'maybe' is not yes " \
                             "or no"
    assert "in the root of client.img: the package that installs it (baselayout-clip)" in exc.value.hint


def test_a_file_that_is_not_text_or_too_big_is_refused(tmp_path):
    tree = _tree(tmp_path)
    (tree / DOWNLOAD).parent.mkdir(parents=True)
    (tree / DOWNLOAD).write_bytes(b"maximum_age=\xff\n")
    with pytest.raises(ImageError, match=r"clip_download_clip\.conf: not UTF-8 text \(byte 12\)"):
        from_root(tree, "client.img", NOW)
    (tree / DOWNLOAD).write_bytes(b"#" * (65 << 10))
    with pytest.raises(ImageError, match="a rules file is at most 65536"):
        from_root(tree, "client.img", NOW)


def test_a_link_out_of_the_extracted_root_is_refused_never_followed(tmp_path):
    outside = tmp_path / "outside.conf"
    outside.write_text("maximum_age=0\n")
    tree = _tree(tmp_path)
    (tree / DOWNLOAD).parent.mkdir(parents=True)
    (tree / DOWNLOAD).symlink_to(outside)
    with pytest.raises(TreeEscape):
        from_root(tree, "client.img", NOW)


def test_extraction_keeps_links_as_links_and_only_the_paths_asked(tmp_path):
    source = _shipped(tmp_path)
    (source / "etc" / "os-release").write_text("IMAGE_VERSION=4.5.0\nVARIANT_ID=dev\n")
    (source / "etc" / "clip_update").mkdir()
    (source / "etc" / "clip_update" / "keys").symlink_to("/etc/shadow")
    (source / "etc" / "shadow").write_text("secret")
    squash = tmp_path / "root.img"
    fsimage.squashfs(source, squash, 0, 64 << 20)
    ext4 = tmp_path / "root.ext4"
    run(["mke2fs", "-q", "-t", "ext4", "-d", source, ext4, "8M"])
    for fs, data in (("squashfs", squash), ("ext4", ext4)):
        tree = tmp_path / f"out-{fs}"
        root.extract(data, fs, tree, root.EXTRACTED)
        assert not (tree / "etc" / "shadow").exists(), fs
        assert (tree / "etc" / "clip_update" / "keys").is_symlink(), fs
        assert from_root(tree, "client.img", NOW)[0].origins["maximum_age"] == f"/{DOWNLOAD}:5", fs


def test_overrides_apply_to_a_development_image_only():
    image_rules = Rules(now=NOW, origins={"maximum_age": f"/{DOWNLOAD}:5"})
    assert overridden(image_rules, Overrides(), development=False) == image_rules
    dev = overridden(image_rules, Overrides(max_age=0, allow_high_impact=True), development=True)
    assert (dev.maximum_age_days, dev.high_impact) == (0, frozenset(PARTS))
    assert dev.origins["maximum_age"] == "--max-age on a development image"
    with pytest.raises(InputError) as exc:
        overridden(image_rules, Overrides(max_age=30), development=False)
    assert str(exc.value) == f"the rules of a release image are its own: /{DOWNLOAD}; --max-age is for development " \
                             "images"
    with pytest.raises(InputError) as exc:
        overridden(image_rules, Overrides(max_age=30, allow_high_impact=True), development=False)
    assert exc.value.detail == [f"  the rules of a release image are its own: /{INSTALL['clip-core']}, "
                                f"/{INSTALL['clip-apps']}; --allow-high-impact is for development images"]


def test_the_cli_refuses_overrides_on_a_release_image_before_any_work(clipbuild, monkeypatch, tmp_path):
    image = tmp_path / "client-4.5.0.img"
    image.write_bytes(b"")
    monkeypatch.setattr("clipbuild.cli.update.inspection.read", lambda path: SimpleNamespace(
        manifest={"signing": "release"}))

    def no_apply(*args, **kwargs):
        raise AssertionError("apply() ran")

    monkeypatch.setattr("clipbuild.cli.update.apply.apply", no_apply)
    result = clipbuild("update", "apply", str(image), str(tmp_path), "--max-age", "0")
    assert result.code == 2
    assert result.err.splitlines()[0] == (f"error: the rules of a release image are its own: /{DOWNLOAD}; --max-age "
                                          "is for development images")
    result = clipbuild("update", "apply", str(image), str(tmp_path), "--allow-high-impact")
    assert result.code == 2 and "--allow-high-impact is for development images" in result.err
    assert clipbuild("update", "apply", str(image), str(tmp_path), "--max-age", "-1").code == 2


@pytest.mark.parametrize(("marked", "offered", "installed", "held"), [
    ("", "4.5.1", "4.5.0", False),
    ("4.5.1", "4.5.1", "4.5.0", True),  # the release rolled back
    ("4.5.1", "4.5.0.1", "4.5.0", True),  # older than it
    ("4.5.1", "4.5.2", "4.5.0", False),  # a newer release
    ("4.5.1", "4.5.0", "4.5.0", False),  # the one installed: nothing to do anyway
])
def test_a_rolled_back_release_is_held_until_a_newer_one(marked, offered, installed, held):
    note = noupdate.holding(marked, offered, installed, apply.compare_versions)
    assert bool(note) == held
    if offered == marked:
        assert note.startswith("release 4.5.1 was rolled back on this image; waiting for a newer release")


def test_rollback_marks_only_a_newer_release_it_leaves():
    assert noupdate.rolled_back("4.5.1", "4.5.0", apply.compare_versions) == "4.5.1"
    assert noupdate.rolled_back("4.5.0", "4.5.1", apply.compare_versions) == ""
    assert noupdate.rolled_back("--help", "4.5.0", apply.compare_versions) == ""


def test_the_marker_is_written_read_and_cleared_on_the_boot_partition(tmp_path):
    boot = tmp_path / "boot.img"
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}\n")
    fsimage.vfat(boot, 32 << 20, "12345678", "boot", {"clip/manifest.json": manifest}, 0)
    found = SimpleNamespace(image=boot, manifest={"source_date_epoch": 0}, mtools=lambda: f"{boot}@@0",
                            boot=lambda: SimpleNamespace(start=0))
    assert noupdate.read(found, tmp_path) == ("", [])
    noupdate.mark(found, "4.5.1", tmp_path)
    assert noupdate.read(found, tmp_path) == ("4.5.1", [])
    noupdate.clear(found)
    noupdate.clear(found)  # none: nothing to do
    assert noupdate.read(found, tmp_path) == ("", [])
    noupdate.mark(found, "not a version", tmp_path)
    assert noupdate.read(found, tmp_path) == ("", [f"{noupdate.MARKER} on the boot partition holds no release "
                                                   "version: ignored"])
