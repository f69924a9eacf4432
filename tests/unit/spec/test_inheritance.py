"""Inheritance: maps deep-merge, scalars override, lists append, !remove and !replace, multi-level and
multiple parents, every value keeping the location of the file that set it."""

from __future__ import annotations

import pytest

from clipbuild.core.errors import Location, ProfileError
from clipbuild.spec.profile import resolve

BASE = """
abstract: true
description: the base
version: '1.0'
portage:
  use: [clip, hardened]
  cflags: -O2
  env: {DEB_IMPACT: "0", DEB_URGENCY: NA}
packages:
  clip: {core: [clip-conf/clip-core-conf]}
jails: [update, admin, x11]
disk:
  size: 1GiB
  partitions:
    - {name: boot, size: 32MiB, fs: vfat, mount: /boot}
    - {name: root, size: 128MiB, fs: squashfs, mount: /, slots: [a, b], verity: true}
    - {name: log, size: 32MiB, fs: ext4, mount: /var/log, options: [nodev]}
    - {name: mounts, size: 64MiB, fs: ext4, mount: /mounts, slots: [a, b]}
"""


@pytest.fixture
def tree(scratch):
    scratch.write("base", BASE)
    return scratch


def test_maps_deep_merge_and_scalars_override(tree):
    tree.write("leaf", """
        inherits: base
        description: the leaf
        portage:
          cflags: -O3
          env: {DEB_IMPACT: "1"}
        """)
    prof = resolve(tree.project, "leaf")
    assert prof.description == "the leaf"
    assert prof.portage.cflags == "-O3"
    assert prof.portage.use == ("clip", "hardened")  # untouched sibling keys survive
    assert prof.portage.env == {"DEB_IMPACT": "1", "DEB_URGENCY": "NA"}
    assert prof.origins["portage.cflags"] == Location("profiles/leaf.yaml", 4)
    assert prof.origins["portage.use"] == Location("profiles/base.yaml", 5)


def test_lists_append_in_order(tree):
    tree.write("leaf", "inherits: base\njails: [rm_h, rm_b]\nportage: {use: [-hardened]}\n")
    prof = resolve(tree.project, "leaf")
    assert prof.jails == ("update", "admin", "x11", "rm_h", "rm_b")
    assert prof.portage.use == ("clip", "hardened", "-hardened")
    assert prof.origins["jails[0]"].file == "profiles/base.yaml"
    assert prof.origins["jails[3]"].file == "profiles/leaf.yaml"


def test_remove_drops_an_inherited_item(tree):
    tree.write("leaf", "inherits: base\njails: [!remove x11, user]\n")
    assert resolve(tree.project, "leaf").jails == ("update", "admin", "user")


def test_remove_a_partition_by_name(tree):
    tree.write("leaf", "inherits: base\ndisk: {partitions: [!remove log]}\n")
    assert [p.name for p in resolve(tree.project, "leaf").disk.partitions] == ["boot", "root", "mounts"]


def test_replace_takes_the_child_value_as_written(tree):
    tree.write("leaf", "inherits: base\njails: !replace [update]\nportage: !replace {cflags: -Os}\n")
    prof = resolve(tree.project, "leaf")
    assert prof.jails == ("update",)
    assert prof.portage.cflags == "-Os" and prof.portage.use == () and prof.portage.env == {}


def test_list_items_with_a_name_merge_by_name(tree):
    tree.write("leaf", """
        inherits: base
        disk:
          partitions:
            - {name: log, size: 64MiB, options: [noexec]}
            - {name: home, size: 64MiB, fs: ext4, mount: /home}
        """)
    parts = resolve(tree.project, "leaf").disk.partitions
    assert [p.name for p in parts] == ["boot", "root", "log", "mounts", "home"]
    log = parts[2]
    assert (log.size, log.fs, log.mount, log.options) == (64 << 20, "ext4", "/var/log", ("nodev", "noexec"))


def test_multi_level_inheritance(tree):
    tree.write("middle", "abstract: true\ninherits: base\njails: [user]\nportage: {cflags: -O1}\n")
    tree.write("leaf", "inherits: middle\njails: [rm_h]\n")
    prof = resolve(tree.project, "leaf")
    assert prof.files == ("profiles/base.yaml", "profiles/middle.yaml", "profiles/leaf.yaml")
    assert prof.jails == ("update", "admin", "x11", "user", "rm_h")
    assert prof.portage.cflags == "-O1"
    assert prof.abstract is False  # abstract, species and inherits are not inherited
    assert prof.inherits == ("middle",)


def test_multiple_parents_are_linearised_each_file_once(tree):
    tree.write("left", "abstract: true\ninherits: base\njails: [user]\n")
    tree.write("right", "abstract: true\ninherits: base\njails: [rm_h]\ndescription: right\n")
    tree.write("leaf", "inherits: [left, right]\n")
    prof = resolve(tree.project, "leaf")
    assert prof.files == ("profiles/base.yaml", "profiles/left.yaml", "profiles/right.yaml",
                          "profiles/leaf.yaml")
    assert prof.jails == ("update", "admin", "x11", "user", "rm_h")  # base's items appear once
    assert prof.description == "right"


def test_abstract_profile_cannot_be_planned(tree, clipbuild):
    result = clipbuild("plan", "base")
    assert result.code == 2
    assert result.err == "error: base is abstract: it exists to be inherited, not built\n"


def test_a_problem_in_a_parent_points_at_the_parent(tree):
    tree.write("base", BASE.replace("cflags: -O2", "cflags: -O2\n  colour: blue"))
    tree.write("leaf", "inherits: base\n")
    with pytest.raises(ProfileError) as exc:
        resolve(tree.project, "leaf")
    assert [str(i) for i in exc.value.issues] == [
        "profiles/base.yaml:7: portage.colour: unknown key"]
