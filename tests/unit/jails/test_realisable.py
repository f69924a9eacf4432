"""What clip-jail can realise, checked at render time: the vocabulary it accepts, the flags' preconditions, the
core's trees kept read-only, the skeleton the jails' mounts need, and the boot order."""

from __future__ import annotations

import pytest

from clipbuild.jails import definitions, realisable, rules
from clipbuild.spec.profile import resolve
from tests.unit.jails.test_jails import BASE, _problems, _write


@pytest.mark.parametrize(("text", "expected"), [
    ("cflags: [virt_mem]\n", "cflags[4]: clip-jail cannot realise virt_mem (util-vserver only: no Linux namespace "
                             "virtualises /proc/meminfo) (known: fakeinit, hide_mount, hide_vinfo, virt_uptime; "
                             "remove it)"),
    ("nflags: [lback_remap]\n", "nflags[2]: clip-jail cannot realise lback_remap"),
    ("nsopts: [user]\n", "nsopts[2]: clip-jail cannot realise user (user namespaces: clip-jail does not make them)"),
    ("ccaps: [secure_mount]\n", "ccaps[0]: context capability secure_mount has no Linux counterpart"),
    ("nsopts: !replace [net]\n", "cflags: fakeinit needs a PID namespace (add pid to nsopts)"),
    ("nsopts: !replace [pid]\n", "nflags: hide_netif needs a network namespace (add net to nsopts)"),
    ("bcaps: [NET_ADMIN]\njustify: {NET_ADMIN: routes}\n",
     "nflags: no_sp cannot hold with NET_ADMIN (it sets per-socket IPsec policies) (drop no_sp or NET_ADMIN)"),
    ("mounts:\n  - {src: /mounts/usr, dst: /pkg, options: [bind, ro, nosuid, nodev, noexec, nolock]}\n",
     "mounts[10].options: clip-jail cannot realise the mount option nolock (no Linux bind mount can disable locks"),
    ("mounts:\n  - {src: /usr/share, dst: /share, options: [bind, rw, nosuid, nodev, noexec]}\n",
     "mounts[10]: /usr/share is mounted writable, but it lies in the core's /usr (add ro: the core's trees are "
     "read-only in every jail"),
])
def test_what_clip_jail_cannot_realise_is_refused_at_render_time(scratch, text, expected):
    _write(scratch, "one", BASE + text)
    assert any(expected in p for p in _problems(scratch, "one")), _problems(scratch, "one")


def test_the_shipped_jails_are_all_realisable(project):
    for species in ("client", "gateway"):
        for jail in definitions.load_all(project, resolve(project, species).jails):
            assert realisable.check(jail) == [], jail.name


def test_the_skeleton_holds_every_mount_point_and_source(project):
    """Every destination has its mount point in the tree mounted above it when that tree is the jail's own, so
    clip-jail never creates anything in a read-only root at boot; a file bind gets an empty file."""
    jails = definitions.load_all(project, resolve(project, "client").jails)
    rendered = definitions.render(project, jails, "client")
    dirs, files = set(rendered.directories), rendered.files
    assert {"mounts/admin_root/etc/ssh", "mounts/admin_root/etc/admin", "mounts/admin_priv/var/pkg",
            "mounts/admin_priv/var/empty", "ike_root/run", "update_root/mounts/admin_root",
            "vservers/rm_h/user_root/home/user", "vservers/rm_h/home/user", "home/user", "ike_root/etc/swanctl"} <= dirs
    assert not any(d.startswith("run/") for d in dirs)  # /run is a tmpfs: made at boot
    assert files["mounts/admin_root/etc/passwd"] == "" and files["ike_root/etc/strongswan.conf"] == ""
    assert "usr/local" not in dirs  # inside the core's /usr: the core's own mount point
    assert files["etc/conf.d/jails"].splitlines()[2:] == [
        'CLIP_JAILS_START="update admin audit user ike rm_h rm_b"', 'CLIP_JAILS_IDLE="x11"',
        'CLIP_JAIL_IDLE_x11="no graphics stack in this species yet (no X server is packaged)"']


@pytest.mark.parametrize("idle", ['x"; reboot; "', "$(reboot)", "`reboot`", "a\nb"])
def test_an_idle_reason_cannot_reach_the_shell(scratch, idle):
    """/etc/conf.d/jails is sourced by the boot script: the reason is a plain phrase or nothing."""
    import json
    _write(scratch, "one", BASE + f"idle: {json.dumps(idle)}\n")
    with pytest.raises(Exception, match="idle"):
        definitions.load(scratch.project, "one")


def test_policy_needs_read_only_trees(scratch):
    policy = scratch.root / "jails" / rules.POLICY
    policy.write_text("\n".join(line for line in policy.read_text().splitlines()
                                if not line.startswith("read_only_trees")))
    with pytest.raises(Exception, match="read_only_trees"):
        rules.load_policy(scratch.project)
