"""Hostile profiles and jail files: each is refused with its reason, its file and line and its key; none gives a
traceback, reads outside the project or hangs. Every case is generated here, none is a file checked in.
(P10, docs/profiles.md "What is refused".)"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipbuild.core.errors import Issue, ProfileError
from clipbuild.jails.definitions import load as load_jail
from clipbuild.spec.cmdline import ALLOWED
from clipbuild.spec.profile import list_profiles, resolve
from clipbuild.spec.yamlnodes import MAX_BYTES, MAX_DEPTH, load_text

from .test_validation import one, problems

ROOT = Path(__file__).resolve().parents[3]
BASE_CMDLINE = 10  # arguments in profiles/base.yaml: a child's first one is boot.cmdline[10]


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A case that blocks (a FIFO opened for reading) fails after 10 s instead of hanging the suite."""

    def timeout(signum: int, frame: object) -> None:
        raise TimeoutError("hung on hostile input")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def child(scratch, body: str) -> list[Issue]:
    """Issues of profiles/s.yaml = `inherits: base` then `body` (line 2 on)."""
    scratch.write("s", "inherits: base\n" + body)
    return problems(scratch)


# -- inherits: plain names of profiles/ only ------------------------------------------------------------------

OUTSIDE = ["../../x", "/etc/passwd", "../profiles/base", "./base", "../outside", "sub/base", ".hidden"]


@pytest.mark.parametrize("parent", OUTSIDE)
def test_inherits_a_path_is_refused_before_anything_is_read(scratch_with_base, parent):
    (scratch_with_base.root / "outside.yaml").write_text("species: stolen\n")  # would be valid if followed
    scratch_with_base.write("s", f"version: 4.5.0\ninherits: ['{parent}']\n")
    issue = one(problems(scratch_with_base))
    assert (str(issue.loc), issue.key) == ("profiles/s.yaml:2", "inherits")
    assert issue.message == f"'{parent}' reaches outside profiles/: parents are named, not given as paths"
    assert "inherits: base" in issue.hint


@pytest.mark.parametrize("parent", ["base.yaml", "a b", "~root", "$HOME", "base\\x"])
def test_inherits_what_is_not_a_profile_name_is_refused(scratch_with_base, parent):
    scratch_with_base.write("s", f"inherits: ['{parent}']\n")
    issue = one(problems(scratch_with_base))
    assert (str(issue.loc), issue.key, issue.message) == ("profiles/s.yaml:1", "inherits",
                                                          f"'{parent}' is not a profile name")


@pytest.mark.parametrize("species", ["../../etc/passwd", "/etc/passwd", "base.yaml", "..", ""])
def test_a_species_named_by_a_path_is_refused(scratch_with_base, clipbuild, species):
    result = clipbuild("plan", species)
    assert (result.code, result.err) == (2, f"error: profiles: '{species}' is not a species name "
                                            "(a file name of it, without .yaml)\n")


def test_a_parent_linked_out_of_profiles_is_refused(scratch_with_base):
    (scratch_with_base.root / "outside.yaml").write_text("abstract: true\n")
    (scratch_with_base.project.profiles_dir / "evil.yaml").symlink_to("../outside.yaml")
    scratch_with_base.write("s", "inherits: [base, evil]\n")
    issue = one(problems(scratch_with_base))
    assert str(issue.loc) == "profiles/evil.yaml"
    assert issue.message == f"resolves to {scratch_with_base.root / 'outside.yaml'}, outside profiles/"


def test_a_parent_in_a_link_loop_is_refused(scratch_with_base):
    (scratch_with_base.project.profiles_dir / "loop.yaml").symlink_to("loop.yaml")
    scratch_with_base.write("s", "inherits: [base, loop]\n")
    issue = one(problems(scratch_with_base))
    assert (str(issue.loc), issue.message) == ("profiles/loop.yaml",
                                               "cannot be resolved (a symbolic link loop), outside profiles/")


def test_a_link_inside_profiles_is_followed(scratch_with_base):
    (scratch_with_base.project.profiles_dir / "common.yaml").symlink_to("base.yaml")
    scratch_with_base.write("s", "inherits: common\n")
    assert resolve(scratch_with_base.project, "s").species == "s"


# -- files that are not regular files: refused, never opened for reading --------------------------------------

def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.mkdir()


def _dangling(path: Path) -> None:
    path.symlink_to("nowhere.yaml")


NOT_FILES = [(_fifo, "a FIFO, not a regular file"), (_directory, "a directory, not a regular file"),
             (_dangling, "a dangling symbolic link (to nowhere.yaml)")]


@pytest.mark.parametrize(("make", "message"), NOT_FILES, ids=["fifo", "directory", "dangling"])
def test_a_parent_that_is_not_a_file_is_refused_without_hanging(scratch_with_base, make, message):
    make(scratch_with_base.project.profiles_dir / "odd.yaml")
    scratch_with_base.write("s", "inherits: [base, odd]\n")
    issue = one(problems(scratch_with_base))
    assert (str(issue.loc), issue.message) == ("profiles/odd.yaml", message)


@pytest.mark.parametrize(("make", "message"), NOT_FILES, ids=["fifo", "directory", "dangling"])
def test_a_species_that_is_not_a_file_is_refused_and_listed_as_broken(scratch_with_base, clipbuild, make,
                                                                      message):
    make(scratch_with_base.project.profiles_dir / "odd.yaml")
    assert one(problems(scratch_with_base, "odd")).message == message
    assert [p.problems for p in list_profiles(scratch_with_base.project) if p.species == "odd"] == [1]
    for command in (("profile", "show", "odd"), ("profile", "show", "odd", "--json"), ("plan", "odd")):
        result = clipbuild(*command)
        assert (result.code, result.err) == (2, f"error: profiles/odd.yaml: {message}\n"), command


def test_a_profile_too_large_or_not_utf8_is_refused(scratch_with_base, clipbuild):
    profiles = scratch_with_base.project.profiles_dir
    (profiles / "big.yaml").write_bytes(b"# padding\n" * (MAX_BYTES // 10 + 1))
    (profiles / "latin.yaml").write_bytes(b"description: ok\ninherits: base\ndescription2: caf\xe9\n")
    assert one(problems(scratch_with_base, "big")).message == "larger than 1 MiB: not a profile"
    issue = one(problems(scratch_with_base, "latin"))
    assert (str(issue.loc), issue.message) == ("profiles/latin.yaml:3",
                                               "not UTF-8 text (invalid continuation byte at byte 48)")
    result = clipbuild("profile", "show", "latin")
    assert (result.code, result.err.splitlines()[0]) == (2, f"error: profiles/latin.yaml:3: {issue.message}")


# -- hostile YAML ------------------------------------------------------------------------------------------------

YAML_CASES = [
    # (id, body after `inherits: base`, line, key, message)
    ("python-object", "description: !!python/object/apply:os.system ['true']\n", 2, "description",
     "YAML tag !!python/object/apply:os.system is not allowed"),
    ("python-name-key", "!!python/name:os.system description: x\n", 2, "",
     "YAML tag !!python/name:os.system is not allowed"),
    ("python-module", "portage: {use: [!!python/module:os x]}\n", 2, "portage.use[0]",
     "YAML tag !!python/module:os is not allowed"),
    ("binary", "description: !!binary aGVsbG8=\n", 2, "description", "YAML tag !!binary is not allowed"),
    ("set", "jails: !!set {a, b}\n", 2, "jails", "YAML tag !!set is not allowed"),
    ("omap", "jails: !!omap [a: 1]\n", 2, "jails", "YAML tag !!omap is not allowed"),
    ("verbatim", "description: !<tag:example.com,2000:x> y\n", 2, "description",
     "YAML tag tag:example.com,2000:x is not allowed"),
    ("merge-key", "x: &d {timeout: 1}\nboot:\n  <<: *d\n", 4, "boot.<<", "YAML merge keys are not allowed"),
    ("bad-bool", "abstract: !!bool maybe\n", 2, "abstract", "'maybe' is not a valid bool"),
    ("bad-int", "boot: {timeout: !!int 12abc}\n", 2, "boot.timeout", "'12abc' is not a valid int"),
    ("huge-int", "boot: {timeout: " + "9" * 5000 + "}\n", 2, "boot.timeout",
     "a number of 5000 characters is too large"),
    ("huge-sexagesimal", "boot: {timeout: " + "1:" * 30 + "1}\n", 2, "boot.timeout",
     "a number of 61 characters is too large"),
    ("int-above-max", "boot: {timeout: 99999999999}\n", 2, "boot.timeout",
     "99999999999 is above the maximum 2147483647"),
    ("huge-size", "disk: {size: " + "9" * 5000 + "GiB}\n", 2, "disk.size", "a size of 5000 digits is too large"),
    ("float-size", "disk: {size: " + "9" * 400 + ".5GiB}\n", 2, "disk.size", "a size of 402 digits is too large"),
    ("bad-date", "version: 2024-99-99\n", 2, "version", "'2024-99-99' is not a Gentoo version"),
    ("equals", "description: =\nversion: =\n", 3, "version", "'=' is not a Gentoo version"),
    ("nul", "description: a\x00b\n", 2, "", "character #x0000 is not allowed in YAML"),
    ("escape", "description: \x1b[2J\n", 2, "", "character #x001b is not allowed in YAML"),
    ("mapping-key", "? [a, b]\n: c\n", 2, "", "keys must be strings, not a list"),
    ("null-key", "~: c\n", 2, "", "keys must be strings, not null"),
    ("two-documents", "---\nx: 1\n", 2, "", "YAML syntax error: but found another document"),
]


@pytest.mark.parametrize(("body", "line", "key", "message"), [c[1:] for c in YAML_CASES],
                         ids=[c[0] for c in YAML_CASES])
def test_hostile_yaml_is_refused_at_its_line_and_key(scratch_with_base, body, line, key, message):
    issues = child(scratch_with_base, body)
    assert (f"profiles/s.yaml:{line}", key, message) in [(str(i.loc), i.key, i.message) for i in issues], \
        "\n".join(map(str, issues))


def nested(depth: int, block: bool) -> str:
    if block:
        return "".join(" " * i + "k:\n" for i in range(depth))
    return "description: " + "[" * depth + "]" * depth + "\n"


@pytest.mark.parametrize(("depth", "block"), [(MAX_DEPTH + 1, False), (5000, False), (100_000, False),
                                              (MAX_DEPTH + 1, True), (1000, True)])
def test_deep_nesting_is_refused_without_recursion_error(scratch_with_base, depth, block):
    issue = one(child(scratch_with_base, nested(depth, block)))
    assert issue.message == f"nested more than {MAX_DEPTH} levels deep"
    assert issue.loc.file == "profiles/s.yaml" and issue.loc.line >= 2


def test_a_recursive_alias_is_refused(scratch_with_base):
    issue = one(child(scratch_with_base, "jails: &j [a, *j]\n"))
    assert (str(issue.loc), issue.message) == ("profiles/s.yaml:2", f"nested more than {MAX_DEPTH} levels deep")


def test_an_alias_bomb_is_refused(scratch_with_base):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)]
    issue = one(child(scratch_with_base, "\n".join(lines) + "\n"))
    assert (str(issue.loc), issue.message) == ("profiles/s.yaml",
                                               "more than 100000 YAML nodes (alias expansion?)")


def test_plain_yaml_keeps_working_as_before():
    node, issues = load_text("a: 2024-01-01\nb: [1, 2.5, true, null, '<<', =]\n", "f.yaml")
    assert issues == [] and node is not None
    assert node.plain() == {"a": "2024-01-01", "b": [1, 2.5, True, None, "<<", "="]}


# -- portage.profile and project files: inside their tree, links included ------------------------------------

@pytest.mark.parametrize("value", ["../../../../etc", "clip-build/../../..", "./clip-build/amd64",
                                   "clip-build/amd64/..", "clip-build/./amd64"])
def test_portage_profile_with_dot_segments_is_refused(scratch_with_base, value):
    issue = one(child(scratch_with_base, f"portage: {{profile: '{value}'}}\n"))
    assert (str(issue.loc), issue.key) == ("profiles/s.yaml:2", "portage.profile")
    assert issue.message == f"'{value}' leaves the overlay's profiles/: '.' and '..' are not allowed"


@pytest.mark.parametrize("value", ["/etc", "/", "clip build", "a//b"])
def test_portage_profile_that_is_no_relative_path_is_refused(scratch_with_base, value):
    issue = one(child(scratch_with_base, f"portage: {{profile: '{value}'}}\n"))
    assert (str(issue.loc), issue.key, issue.message) == ("profiles/s.yaml:2", "portage.profile",
                                                          f"'{value}' is not a Portage profile path")


@pytest.fixture
def overlay(scratch_with_base) -> Path:
    tree = scratch_with_base.root / "overlays" / "clip" / "profiles"
    shutil.copytree(ROOT / "overlays" / "clip" / "profiles", tree)
    return tree


def test_portage_profile_linked_out_of_the_overlay_is_refused(scratch_with_base, overlay, tmp_path):
    (overlay / "escape").symlink_to(tmp_path)
    (overlay / "clip-build" / "loop").symlink_to("loop")
    for value, outcome in (("escape", f"resolves to {tmp_path}, outside overlays/clip/profiles/"),
                           ("clip-build/loop", "cannot be resolved (a symbolic link loop)")):
        issue = one(child(scratch_with_base, f"portage: {{profile: {value}}}\n"))
        assert (str(issue.loc), issue.key, issue.message) == ("profiles/s.yaml:2", "portage.profile",
                                                              f"'{value}' {outcome}")


def test_portage_profile_must_be_a_folder_of_the_overlay(scratch_with_base, overlay):
    issue = one(child(scratch_with_base, "portage: {profile: clip-build/arm64}\n"))
    assert (issue.key, issue.message) == ("portage.profile",
                                          "'clip-build/arm64' is not a folder of overlays/clip/profiles/")
    scratch_with_base.write("s", "inherits: base\n")
    assert resolve(scratch_with_base.project, "s").portage.profile == "clip-build/amd64"


def test_a_kernel_fragment_linked_out_of_the_project_is_refused(scratch_with_base, tmp_path):
    secret = tmp_path / "secret.config"
    secret.write_text("CONFIG_X=y\n")
    (scratch_with_base.root / "kernel-patches" / "evil.config").symlink_to(secret)
    issue = one(child(scratch_with_base, "kernel: {fragments: [kernel-patches/evil.config]}\n"))
    assert (str(issue.loc), issue.key) == ("profiles/s.yaml:2", "kernel.fragments[2]")
    assert issue.message == f"kernel-patches/evil.config resolves to {secret}, outside ./"  # the project root


@pytest.mark.parametrize(("where", "key"), [("portage: {env: {%s: x}}", "portage.env.%s"),
                                          ("packages: {clip: {core: {env: {%s: x}}}}", "packages.clip.core.env.%s")])
@pytest.mark.parametrize(("name", "message"), [
    ("FEATURES", "FEATURES is written by clipbuild: set it with portage.features"),
    ("CFLAGS", "CFLAGS is written by clipbuild: set it with portage.cflags"),
    ("DEB_PRIORITY", "DEB_PRIORITY is written by clipbuild: set it with the package set"),
    ("PORTAGE_BINHOST", "PORTAGE_BINHOST is written by clipbuild or steers where Portage reads, writes or fetches"),
    ("DISTDIR", "DISTDIR is written by clipbuild or steers where Portage reads, writes or fetches"),
    ("ROOT", "ROOT is written by clipbuild or steers where Portage reads, writes or fetches")])
def test_make_conf_variables_clipbuild_writes_are_not_overridden(scratch_with_base, where, key, name, message):
    issue = one(child(scratch_with_base, where % name + "\n"))
    assert (str(issue.loc), issue.key, issue.message) == ("profiles/s.yaml:2", key % name, message)


# -- boot.cmdline: the allowlist ------------------------------------------------------------------------------

RESERVED = ["root=/dev/sda5", "ro", "rw", "rootfstype=ext4", "rootflags=rw", "rootwait", "init=/bin/sh",
            "rdinit=/bin/sh", "clip.slot=b", "clip.anything=1", "dm-mod.create=x", "dm_mod.create=x",
            "dm-mod.waitfor=x", "dm_verity.require_signatures=0", "dm-verity.error_behavior=0",
            "systemd.verity=0", "systemd.verity_root_data=/dev/sda", "systemd.verity-root-hash=00",
            "initrd=/evil", "BOOT_IMAGE=x", "oldclip", "nfsroot=1.2.3.4:/x", "dm_init.x=1"]
WEAKENING = ["nokaslr", "nopti", "selinux=0", "lsm=", "single", "S", "1", "emergency", "systemd.unit=rescue.target",
             "rd.break", "kgdboc=ttyS0", "iomem=relaxed"]
WEAKER_VALUE = ["module.sig_enforce=0", "lockdown=none", "oops=continue", "pti=off", "init_on_alloc=0",
                "mitigations=off", "debugfs=on", "vsyscall=emulate", "module.sig_enforce", "quiet=0",
                "loglevel=8", "spectre_v2=off", "efi=novamap"]
UNKNOWN = ["foo", "FOO=bar", "nomodule=0", "ROOT=/dev/sda", "slub_debug=-", "hugepages=1"]
BAD_TEXT = ['a="b', 'dm-mod.create="', "caf\u00e9", "--"]


def cmdline_issue(scratch, argument: str) -> Issue:
    issue = one(child(scratch, f"boot:\n  cmdline: ['{argument}']\n"))
    assert (str(issue.loc), issue.key) == ("profiles/s.yaml:3", f"boot.cmdline[{BASE_CMDLINE}]")
    return issue


@pytest.mark.parametrize("argument", RESERVED)
def test_cmdline_may_not_override_what_clipbuild_sets(scratch_with_base, argument):
    assert cmdline_issue(scratch_with_base, argument).message.startswith(
        f"'{argument}' overrides what clipbuild sets: ")


@pytest.mark.parametrize("argument", WEAKENING)
def test_cmdline_may_not_turn_a_protection_off(scratch_with_base, argument):
    message = cmdline_issue(scratch_with_base, argument).message
    assert message.startswith(f"'{argument}' ") and "not among" not in message


@pytest.mark.parametrize("argument", WEAKER_VALUE)
def test_cmdline_allowed_names_take_only_their_safe_values(scratch_with_base, argument):
    name = argument.partition("=")[0]
    message = cmdline_issue(scratch_with_base, argument).message
    assert message.startswith(f"'{argument}': {name} is accepted only with ")
    assert message.endswith("(the others weaken the image)")


@pytest.mark.parametrize("argument", UNKNOWN)
def test_cmdline_unknown_arguments_are_refused(scratch_with_base, argument):
    issue = cmdline_issue(scratch_with_base, argument)
    assert issue.message == f"'{argument}' is not among the kernel arguments clipbuild accepts"
    assert issue.hint == "boot.cmdline in docs/profiles.md lists what is accepted"


@pytest.mark.parametrize("argument", BAD_TEXT)
def test_cmdline_arguments_are_plain_ascii_words(scratch_with_base, argument):
    message = cmdline_issue(scratch_with_base, argument.replace("'", "''")).message
    assert message.startswith(f"'{argument}'")


def test_cmdline_refused_also_through_replace(scratch_with_base, clipbuild):
    issue = one(child(scratch_with_base, "boot: {cmdline: !replace [console=tty0, rw]}\n"))
    assert (str(issue.loc), issue.key) == ("profiles/s.yaml:2", "boot.cmdline[1]")
    result = clipbuild("profile", "validate", "profiles/s.yaml")
    assert result.code == 2
    assert "profiles/s.yaml:2: boot.cmdline[1]: 'rw' overrides what clipbuild sets: the read-only root" \
        in result.err + result.out


def safe_arguments() -> list[str]:
    out = []
    for name, allowed in ALLOWED.items():
        out += [f"{name}={v}" for v in allowed.values] + ([name] if allowed.flag else [])
    return [*out, "console=ttyS0,115200n8", "loglevel=3", "panic=-1", "kfence.sample_interval=100"]


def test_cmdline_accepts_every_argument_of_the_allowlist(scratch_with_base):
    arguments = safe_arguments()
    quoted = ", ".join(f"'{a}'" for a in arguments)
    scratch_with_base.write("s", f"inherits: base\nboot:\n  cmdline: [{quoted}]\n")
    assert resolve(scratch_with_base.project, "s").boot.cmdline[BASE_CMDLINE:] == tuple(arguments)


# -- jail definitions: the same loader ----------------------------------------------------------------------------

def test_a_hostile_jail_file_is_refused_with_its_line(scratch_with_base):
    jails = scratch_with_base.project.jails_dir
    (jails / "evil.yaml").write_text("description: x\nmounts: !!python/object/apply:os.system ['true']\n")
    (jails / "deep.yaml").write_text(nested(5000, block=False))
    os.mkfifo(jails / "fifo.yaml")
    expected = {"evil": ("jails/evil.yaml:2", "YAML tag !!python/object/apply:os.system is not allowed"),
                "deep": ("jails/deep.yaml:1", f"nested more than {MAX_DEPTH} levels deep"),
                "fifo": ("jails/fifo.yaml", "a FIFO, not a regular file")}
    for name, (where, message) in expected.items():
        with pytest.raises(ProfileError) as exc:
            load_jail(scratch_with_base.project, name)
        assert (where, message) in [(str(i.loc), i.message) for i in exc.value.issues], name
