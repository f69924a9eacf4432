"""Jails: rendering (golden files for both species), every isolation rule with its message and location."""

from __future__ import annotations

import json
import os
import re

import pytest

from clipbuild.core.errors import InputError, ProfileError
from clipbuild.jails import definitions, rules
from clipbuild.spec.profile import resolve
from tests.conftest import ROOT

GOLDEN = ROOT / "tests" / "data" / "golden"
UPDATE = os.environ.get("CLIPBUILD_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("species", ["client", "gateway"])
def test_rendered_jails_match_golden(project, species):
    loaded = definitions.load_all(project, resolve(project, species).jails)
    rendered = definitions.render(project, loaded, species)
    data = {"files": rendered.files, "directories": list(rendered.directories)}
    path = GOLDEN / f"jails-{species}.json"
    if UPDATE:
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    assert json.loads(path.read_text()) == data


def test_shipped_jails_follow_the_rules(project):
    for species in ("client", "gateway"):
        issues, exceptions = rules.check(definitions.load_all(project, resolve(project, species).jails),
                                             rules.load_policy(project))
        assert issues == []
        assert [(e.jail, e.destination) for e in exceptions] == [("update", "/usr/local"), ("update", "/var/pkg")]


def test_defaults_are_stated_once_and_a_jail_says_only_what_differs(project):
    admin = definitions.load(project, "admin")
    assert admin.root == "/admin" and admin.root_source == "/mounts/admin_root"
    assert admin.cflags[0] == "fakeinit"
    assert str(admin.origin("cflags")).startswith("jails/_defaults.yaml:")
    assert str(admin.origin("bcaps")).startswith("jails/admin.yaml:")
    assert admin.mounts[0].src == "/mounts/admin_root" and admin.mounts[-1].dst == "/var/pkg"


def _write(scratch, name: str, text: str) -> None:
    (scratch.root / "jails" / f"{name}.yaml").write_text(text)


def _problems(scratch, *names: str) -> list[str]:
    loaded = definitions.load_all(scratch.project, names)
    issues, _ = rules.check(loaded, rules.load_policy(scratch.project))
    return [str(i) for i in issues]


BASE = "description: a test jail\ncontext: 700\naddr: [127.70.0.1/255.255.255.255]\n"


def test_unique_contexts_and_addresses(scratch):
    _write(scratch, "one", BASE)
    _write(scratch, "two", BASE)
    assert _problems(scratch, "one", "two") == [
        "jails/two.yaml:2: jail two: context: context 700 is also jail one's (contexts and addresses are unique)",
        "jails/two.yaml:3: jail two: addr: address 127.70.0.1 is also jail one's (contexts and addresses are "
        "unique)"]


def test_writable_mounts_are_nosuid_nodev_noexec(scratch):
    _write(scratch, "one", BASE + "mounts:\n  - {src: /mounts/one_priv/data, dst: /data, options: [bind, rw]}\n")
    assert _problems(scratch, "one") == [
        "jails/one.yaml:5: jail one: mounts[10]: writable mount /data lacks nosuid, nodev, noexec (every writable "
        "mount is nosuid, nodev and noexec (an exception for noexec needs an allow_exec entry with its reason))"]


def test_an_exec_exception_needs_a_reason_and_keeps_nosuid_nodev(scratch):
    _write(scratch, "one", BASE + """mounts:
  - {src: /mounts/one_priv/pkg, dst: /pkg, options: [bind, rw, nosuid, nodev]}
  - {src: /mounts/one_priv/bin, dst: /bin2, options: [bind, rw, nosuid]}
allow_exec: {/pkg: scripts run from there, /bin2: also, /gone: nothing there}
""")
    problems = _problems(scratch, "one")
    assert problems == [
        "jails/one.yaml:6: jail one: mounts[11]: writable mount /bin2 lacks nodev (every writable mount is "
        "nosuid, nodev and noexec (an exception for noexec needs an allow_exec entry with its reason))",
        "jails/one.yaml:7: jail one: allow_exec./gone: allows /gone to be executable, but no writable mount there "
        "needs it (remove the entry)"]
    _, exceptions = rules.check(definitions.load_all(scratch.project, ("one",)), rules.load_policy(scratch.project))
    assert [str(e) for e in exceptions] == ["one: /pkg is writable and executable: scripts run from there"]


def test_the_jail_root_is_read_only(scratch):
    _write(scratch, "one", BASE + "mounts: !replace\n  - {src: /mounts/one_root, dst: /, options: [bind, nodev]}\n")
    assert _problems(scratch, "one") == [
        "jails/one.yaml:5: jail one: mounts[0]: the jail's / (/mounts/one_root) is mounted read-write (add ro: a "
        "jail root is read-only)",
        "jails/one.yaml:5: jail one: mounts[0]: writable mount / lacks nosuid, noexec (every writable mount is "
        "nosuid, nodev and noexec (an exception for noexec needs an allow_exec entry with its reason))"]


def test_capabilities(scratch):
    _write(scratch, "one", BASE + "bcaps: [CHOWN, SYS_ADMN, SYS_ADMIN, NET_ADMIN]\n"
                                  "justify: {NET_ADMIN: routes, SYS_TIME: clocks}\nnflags: !replace [hide_netif]\n")
    assert _problems(scratch, "one") == [
        "jails/one.yaml:4: jail one: bcaps[1]: SYS_ADMN is not a Linux capability (did you mean SYS_ADMIN?)",
        "jails/one.yaml:4: jail one: bcaps[2]: SYS_ADMIN is on the deny list (drop it, or say why the jail needs "
        "it: justify: {SYS_ADMIN: REASON})",
        "jails/one.yaml:5: jail one: justify.SYS_TIME: justifies SYS_TIME, which the jail does not hold (remove the "
        "entry)"]


def test_mount_sources_stay_in_the_allowed_trees(scratch):
    _write(scratch, "one", BASE + """mounts:
  - {src: /etc/shadow, dst: /secret, options: [bind, ro]}
  - {src: tmpfs, dst: /run, type: none, options: [rw, nosuid, nodev, noexec]}
""")
    problems = _problems(scratch, "one")
    assert problems[0].endswith("mounts[10].src: source /etc/shadow lies outside the trees jail one may mount "
                                "(allowed: /mounts/usr, /mounts/var/pkg, /mounts/xauth, /vservers/one/home, /bin, "
                                "/sbin, /lib, /usr, /etc/passwd, /etc/group, /mounts/one_priv (jails/_policy.yaml: "
                                "source_trees, grants))")
    assert problems[1].endswith("mounts[11]: source tmpfs with type none (a tmpfs mount has type tmpfs)")


@pytest.mark.parametrize(("mount", "key", "hint"), [
    ("{src: /mounts/../etc, dst: /etc2, options: [bind, ro]}", "src", "a path, tmpfs or proc"),
    ("{src: /mounts/x, dst: /a/../b, options: [bind, ro]}", "dst", "absolute, without spaces")])
def test_a_path_with_dotdot_is_a_schema_error(scratch, mount, key, hint):
    _write(scratch, "one", BASE + f"mounts:\n  - {mount}\n")
    with pytest.raises(ProfileError) as exc:
        definitions.load(scratch.project, "one")
    assert [str(i) for i in exc.value.issues] == [
        f"jails/one.yaml:5: one: mounts[10].{key}: '..' is not allowed in a path ({hint})"]


def test_newlines_cannot_reach_a_line_oriented_file(scratch):
    _write(scratch, "one", BASE + 'cmd: "/bin/sh\\n/etc/evil"\n')
    with pytest.raises(ProfileError, match="cmd: '/bin/sh\\n/etc/evil' is not a command"):
        definitions.load(scratch.project, "one")


def test_templates_render_with_undefined_variables_as_errors(scratch, project):
    (scratch.root / "jails" / "templates" / "hostname.j2").write_text("{{ jail.hostnam }}\n")
    with pytest.raises(InputError, match=r"template error: .*has no attribute .hostnam."):
        definitions.render(scratch.project, [definitions.load(scratch.project, "admin")], "client")


def test_jail_commands(scratch_with_base, clipbuild, tmp_path):
    scratch_with_base.write("s", "inherits: base\n")
    out = tmp_path / "rendered"
    result = clipbuild("jails", "render", "s", "--out", str(out))
    assert result.code == 0 and (out / "etc" / "jails" / "admin" / "fstab.external").is_file()
    assert (out / "etc" / "jails" / "admin" / "context").read_text() == "504\n"
    check = clipbuild("jails", "check", "s")
    assert check.code == 0 and check.out.splitlines()[-1] == "ok: 6 jails of s follow the isolation rules"
    show = clipbuild("jails", "show", "s", "admin")
    assert re.search(r"^  /mounts/admin_priv/var +/var +- +yes +yes +yes +jails/_defaults.yaml:\d+$", show.out, re.M)
    _write(scratch_with_base, "admin", BASE.replace("700", "501"))
    broken = clipbuild("jails", "check", "s")
    assert broken.code == 2 and "context 501 is also jail update's" in broken.err
    assert clipbuild("jails", "render", "s", "--out", str(tmp_path / "no")).code == 2
    assert not (tmp_path / "no").exists()
