"""The jails' proof at boot, host side: which jails a slot starts, the console lines, the verdict."""

from __future__ import annotations

from clipbuild.image import install, jailproof
from clipbuild.image.jailproof import Expected

NS = "ns=mnt:{m},pid:{p},net:{n},ipc:{i},uts:{u},cgroup:{c}"


def _ok(name: str, caps: str = "0", **ids: str) -> str:
    values = {k: ids.get(k, f"{k}-{name}") for k in "mpniuc"}
    return (f"CLIP_JAIL_RULE {name} capabilities ok: CapEff=CapPrm=CapBnd={caps} CapAmb=0\n"
            f"CLIP_JAIL {name} ok pid=1{len(name)} " + NS.format(**values) + " rules=10/10")


def _collect(*lines: str) -> dict:
    return jailproof.collect("\n".join(lines).splitlines())


def test_shipped_reads_the_start_order_idle_jails_and_nsopts(tmp_path):
    (tmp_path / "etc/conf.d").mkdir(parents=True)
    (tmp_path / "etc/conf.d/jails").write_text('# c\nCLIP_JAILS_START="update ike"\nCLIP_JAILS_IDLE="x11"\n'
                                               'CLIP_JAIL_IDLE_x11="no X server"\n')
    for name, opts in (("update", "pid\nnet\n"), ("ike", "# only pid\npid\n"), ("x11", "pid\nnet\n")):
        (tmp_path / f"etc/jails/{name}").mkdir(parents=True)
        (tmp_path / f"etc/jails/{name}/nsopts").write_text(opts)
    assert jailproof.shipped(tmp_path) == [Expected("update", True, ("pid", "net"), caps="0"),
                                           Expected("ike", True, ("pid",), caps="0"),
                                           Expected("x11", False, ("pid", "net"), "no X server", "0")]
    assert jailproof.shipped(tmp_path / "nothing") == []


def test_every_started_jail_must_report_ok():
    expected = [Expected("update", True, ("pid", "net")), Expected("admin", True, ("pid", "net")),
                Expected("x11", False, ("pid", "net"), "no X")]
    lines = ["noise", _ok("update"), "CLIP_JAIL_RULE admin noexec FAILED: /var/x ran",
             "CLIP_JAIL admin FAILED rule=noexec: /var/x ran", "CLIP_JAIL x11 idle: no X"]
    reports = _collect(*lines)
    assert reports["admin"].rules == [{"rule": "noexec", "result": "FAILED", "detail": "/var/x ran"}]
    assert jailproof.problems(expected, reports) == ["jail admin FAILED: rule=noexec: /var/x ran"]
    assert jailproof.problems(expected, _collect(_ok("admin"))) == ["jail update did not report"]
    assert jailproof.problems(expected, _collect(_ok("admin"), _ok("update"))) == []


def test_a_namespace_two_jails_share_is_refused_unless_nsopts_leave_it_to_the_host():
    """The host checks the reported ids again: IKE has no network namespace of its own (nsopts: pid), so its
    net id may equal another's; a mount namespace shared by two jails is a failure whatever the probes said."""
    expected = [Expected("update", True, ("pid", "net")), Expected("ike", True, ("pid",)),
                Expected("admin", True, ("pid", "net"))]
    host_net = [_ok("update"), _ok("ike", n="host"), _ok("admin")]
    assert jailproof.problems(expected, _collect(*host_net)) == []
    shared = [_ok("update", m="4026532001"), _ok("ike"), _ok("admin", m="4026532001")]
    assert jailproof.problems(expected, _collect(*shared)) == [
        "jail admin shares its mnt namespace 4026532001 with jail update"]
    missing = ["CLIP_JAIL update ok pid=3 ns=mnt:1,ipc:2 rules=10/10", _ok("ike"), _ok("admin")]
    assert "jail update reported no uts namespace" in jailproof.problems(expected, _collect(*missing))


def test_what_the_core_installs_under_a_shared_partition_goes_onto_it(tmp_path):
    root, rm_h, home = tmp_path / "root", tmp_path / "rm_h", tmp_path / "home"
    for tree in (root, rm_h, home):
        tree.mkdir()
    (root / "vservers/rm_h/user_root/etc").mkdir(parents=True)
    (root / "vservers/rm_h/user_root/etc/passwd").write_text("")
    (root / "vservers/rm_b").mkdir(parents=True)
    (root / "home/user").mkdir(parents=True)
    moved = install.split_shared(root, {"/vservers/rm_h": rm_h, "/home": home, "/vservers/rm_b": tmp_path / "x"})
    assert moved == ["/home", "/vservers/rm_h"]
    assert (rm_h / "user_root/etc/passwd").is_file() and (home / "user").is_dir()
    assert list((root / "vservers/rm_h").iterdir()) == [] and list((root / "home").iterdir()) == []


def test_the_host_compares_the_capabilities_read_inside_with_the_rendered_bcaps(tmp_path):
    """A manager that mis-parsed bcaps would also hand its probe the wrong expectation: the host derives the
    mask from the slot's own rendered files instead, and checks every jail that reported, ok or not."""
    (tmp_path / "etc/conf.d").mkdir(parents=True)
    (tmp_path / "etc/conf.d/jails").write_text('CLIP_JAILS_START="ike"\n')
    (tmp_path / "etc/jails/ike").mkdir(parents=True)
    (tmp_path / "etc/jails/ike/bcaps").write_text("CAP_NET_ADMIN\nCAP_NET_BIND_SERVICE\n")
    (tmp_path / "etc/jails/ike/nsopts").write_text("pid\n")
    expected = jailproof.shipped(tmp_path)
    assert expected[0].caps == "1400"
    assert jailproof.problems(expected, _collect(_ok("ike", caps="1400"))) == []
    assert jailproof.problems(expected, _collect(_ok("ike", caps="1ffffffffff"))) == [
        "jail ike holds capabilities 1ffffffffff (ambient 0), its rendered bcaps give 1400"]
    failed = ["CLIP_JAIL_RULE ike namespaces ok: mnt:1,pid:2,net:3,ipc:4,uts:5,cgroup:6 (x)",
              "CLIP_JAIL_RULE ike capabilities FAILED: CapEff=CapPrm=CapBnd=1ffffffffff CapAmb=0",
              "CLIP_JAIL ike FAILED rule=capabilities: CapBnd is not bcaps"]
    reports = _collect(*failed)
    assert reports["ike"].namespaces["mnt"] == "1"
    assert jailproof.problems(expected, reports) == [
        "jail ike FAILED: rule=capabilities: CapBnd is not bcaps",
        "jail ike holds capabilities 1ffffffffff (ambient 0), its rendered bcaps give 1400"]
