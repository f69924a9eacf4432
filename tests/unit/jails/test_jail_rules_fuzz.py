"""Property-based tests of the jail rules' normalisation: option lists read as mount applies them, paths in
their one spelling, and the rules on random mounts. Any exception but clipbuild's own fails a test."""

from __future__ import annotations

import posixpath
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipbuild.core.errors import ClipbuildError
from clipbuild.core.project import Project
from clipbuild.jails import definitions, mountopts, rules
from clipbuild.jails.definitions import Mount
from tests.conftest import ROOT

FUZZ = settings(max_examples=300, deadline=None)
WORDS = sorted({*mountopts.GROUP_OF, *mountopts.IMPLIES, "size=16m", "mode=1777", "x-evil", ""})
OPTIONS = st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), max_size=10)
PATHS = st.one_of(st.text(alphabet="/.a-", max_size=16), st.sampled_from(["/", "/.", "//", "/var/", "/x/../y"]),
                  st.text(max_size=12))


@FUZZ
@given(OPTIONS)
def test_options_read_as_mount_applies_them(options):
    flags = mountopts.effective(options)
    last = {}
    for word, _ in mountopts.expanded(options):
        if word in mountopts.GROUP_OF:
            last[mountopts.GROUP_OF[word]] = word
    assert flags.read_only == (last.get(("rw", "ro")) == "ro")
    assert flags.noexec == (last.get(("exec", "noexec")) == "noexec")
    try:
        consistent = mountopts.require_consistent(options)
    except ClipbuildError:
        assert mountopts.contradictions(options)
        return
    assert consistent == flags == mountopts.effective(list(reversed(options)))  # one meaning, in any order


@FUZZ
@given(PATHS)
def test_a_path_has_one_spelling(path):
    try:
        normal = mountopts.normal_path(path)
    except ClipbuildError:
        assert not path.startswith("/") or ".." in path.split("/") or "\0" in path
        return
    assert normal.startswith("/") and "//" not in normal and mountopts.normal_path(normal) == normal
    assert "." not in normal.split("/") and (normal == "/" or not normal.endswith("/"))
    assert posixpath.normpath("/" + path.lstrip("/")) == normal


@pytest.fixture(scope="module")
def user() -> tuple[definitions.Jail, rules.JailPolicy]:
    project = Project(ROOT)
    return definitions.load(project, "user"), rules.load_policy(project)


MOUNTS = st.builds(Mount, src=st.one_of(PATHS, st.sampled_from(["tmpfs", "proc", "/mounts/usr"])), dst=PATHS,
                   type=st.sampled_from(["none", "tmpfs", "proc", "sysfs"]), options=OPTIONS.map(tuple))


@FUZZ
@given(st.lists(MOUNTS, max_size=4), st.booleans())
def test_rules_on_random_mounts_never_crash_and_never_let_the_root_be_shadowed(user, extra, internal):
    jail, policy = user
    evil = replace(jail, internal=tuple(extra)) if internal else replace(jail, mounts=(*jail.mounts, *extra))
    issues, _ = rules.check([evil], policy)
    if issues:
        return
    for mount in (*evil.mounts[1:], *evil.internal):
        assert mountopts.normal_path(mount.dst) != "/" and not mountopts.contradictions(mount.options)
        flags = mount.flags
        assert flags.read_only or (flags.nosuid and flags.nodev and flags.noexec)
