"""Reading emerge's output: merge lists, USE, build dependencies, failures."""

from __future__ import annotations

from clipbuild.core.errors import ToolError
from clipbuild.gentoo.emerge import _MERGE_LINE, Emerge, _enabled, build_deps, parse_failure


def test_merge_line():
    line = '[ebuild  N     ] sys-apps/busybox-1.35.0::clip to /build/roots/set/ USE="static -pam (-selinux)" 0 KiB'
    match = _MERGE_LINE.match(line)
    assert match["cpv"] == "sys-apps/busybox-1.35.0" and match["repo"] == "clip"
    assert _enabled(match["use"]) == ["static"]
    assert _enabled('foo* -bar% (baz)') == ["foo", "baz"]


def test_merge_line_with_a_sub_slot():
    """emerge shows SLOT/SUBSLOT of a package that has a sub-slot (zlib's 0/1); missing it left zlib out of the
    plan, so it was never keyed, stored or counted in the keys of what links it."""
    match = _MERGE_LINE.match('[ebuild  N     ] sys-libs/zlib-1.2.13:0/1::clip to /build/roots/set/ 0 KiB')
    assert match["cpv"] == "sys-libs/zlib-1.2.13" and match["repo"] == "clip"


def test_build_deps_follow_use_and_skip_blockers():
    meta = {"depend": "static? ( clip-libs/libfoo ) !app-misc/old", "bdepend": ">=clip-dev/tool-2"}
    candidates = ["clip-libs/libfoo-1.0", "clip-dev/tool-2.1", "clip-dev/tool-1.0", "app-misc/old-1"]
    assert build_deps(meta, ["static"], candidates) == ["clip-libs/libfoo-1.0", "clip-dev/tool-2.1"]
    assert build_deps(meta, [], candidates) == ["clip-dev/tool-2.1"]


def test_failure_names_package_phase_and_log():
    tail = "\n".join([
        " * ERROR: app-clip/broken-1.0::clip failed (compile phase):",
        " *   deliberately broken",
        ">>> Failed to emerge app-clip/broken-1.0 for /build/roots/set/, Log file:",
        ">>>  '/var/log/portage/build/app-clip:broken-1.0:20261127-120000.log'",
    ])
    failure = parse_failure(ToolError("emerge failed", stderr_tail=tail))
    assert (failure.cpv, failure.phase) == ("app-clip/broken-1.0", "compile")
    assert failure.log == "/var/log/portage/build/app-clip:broken-1.0:20261127-120000.log"
    assert parse_failure(ToolError("emerge failed", stderr_tail="!!! bad atom")) is None


def test_emerge_is_a_dataclass_over_a_build_root():
    # usr_lib and prefix: distcc's masquerade and the sandbox's relay, for builds with --distcc/--ccache-remote
    assert Emerge.__dataclass_fields__.keys() == {"sdk", "mounts", "env", "usr_lib", "prefix"}


def test_failure_without_the_summary_line():
    tail = "\n".join([
        " * ERROR: app-clip/broken-tool-1.0::clip failed (compile phase):",
        " * The complete build log is located at '/var/log/portage/build/app-clip:broken-tool-1.0:1.log'.",
    ])
    failure = parse_failure(ToolError("emerge failed", stderr_tail=tail))
    assert failure == parse_failure(ToolError("x", stderr_tail=tail))
    assert (failure.cpv, failure.phase, failure.log) == (
        "app-clip/broken-tool-1.0", "compile", "/var/log/portage/build/app-clip:broken-tool-1.0:1.log")


def test_the_profile_key_ignores_the_overlay_s_bookkeeping(tmp_path):
    """A new category or a flag's description changes no build: the packages' keys stay; make.defaults does not."""
    from clipbuild.stages.build import profile_digest

    profiles = tmp_path / "profiles"
    (profiles / "clip-build" / "amd64").mkdir(parents=True)
    (profiles / "categories").write_text("sys-libs\n")
    (profiles / "use.desc").write_text("clip - Generic CLIP support\n")
    (profiles / "clip-build" / "amd64" / "make.defaults").write_text('ELIBC="musl"\n')
    before = profile_digest(tmp_path)
    (profiles / "categories").write_text("sys-libs\nnet-vpn\n")
    (profiles / "use.desc").write_text("clip - Generic CLIP support\nclip-ssh-client - the SSH client\n")
    assert profile_digest(tmp_path) == before
    (profiles / "clip-build" / "amd64" / "make.defaults").write_text('ELIBC="glibc"\n')
    assert profile_digest(tmp_path) != before
