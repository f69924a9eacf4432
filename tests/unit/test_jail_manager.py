"""clip-jail, the jail manager in C (overlays/clip/app-clip/clip-jail/files): compiled with the build machine's
cc, its parser checked on a hand-written client tree in the format the renderer is moving to and on every
refusal, and (where unprivileged user namespaces exist) a real start / status / enter / probe / stop of busybox
jails inside `unshare --user --map-root-user`, with --etc/--run/--cgroup pointing into tmp_path."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from clipbuild.core.project import Project
from clipbuild.jails import definitions
from clipbuild.spec.profile import resolve
from tests.conftest import ROOT

FILES = ROOT / "overlays" / "clip" / "app-clip" / "clip-jail" / "files"
CC = shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no cc on the build machine to compile clip-jail with")
WARN = ["-Wall", "-Wextra", "-Werror", "-O2", "-fstack-protector-strong"]


@pytest.fixture(scope="module")
def bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("clip-jail-bin")
    probe = out / "probe"
    # Static, so that it runs inside a jail whose root is only busybox (no glibc loader there); the manager
    # executes the host's probe file inside the jail, so its path is compiled in as on the image.
    static = subprocess.run([CC, *WARN, "-static", "-o", str(probe), str(FILES / "probe.c")],
                            capture_output=True, text=True)
    if static.returncode:
        subprocess.run([CC, *WARN, "-o", str(probe), str(FILES / "probe.c")], check=True)
    manager = out / "clip-jail"
    subprocess.run([CC, *WARN, f'-DCLIP_JAIL_PROBE="{probe}"', "-o", str(manager), str(FILES / "clip-jail.c")],
                   check=True)
    return {"clip-jail": manager, "probe": probe, "static": static.returncode == 0}


# The client's jails as the renderer writes them after the lead's changes: no virt_* cflags, no nolock, IKE
# without no_sp (it holds NET_ADMIN) and without a net namespace (hence no hide_netif).
STD = "fakeinit\nhide_mount\nhide_vinfo\nvirt_uptime\n"
CLIENT = {
    "update": (501, "/update", "/update_root", "/mounts/update_priv", "127.51.0.1", "/sbin/crond",
               "CHOWN DAC_OVERRIDE FOWNER FSETID SETGID SETUID SYS_CHROOT SYS_TIME",
               ["/mounts/usr /usr/local none bind,rw,nosuid,nodev 0 0",
                "/mounts/var/pkg /var/pkg none bind,rw,nosuid,nodev 0 0",
                "/mounts/admin_root /mounts/admin_root none bind,rw,nosuid,nodev,noexec 0 0"], "pid\nnet\n", None),
    "admin": (504, "/admin", "/mounts/admin_root", "/mounts/admin_priv", "127.54.0.1", "/sbin/sshd",
              "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID NET_BIND_SERVICE SYS_CHROOT",
              ["/mounts/admin_priv/etc.admin /etc/admin none bind,rw,nosuid,nodev,noexec 0 0",
               "/mounts/var/pkg /var/pkg none bind,ro,nosuid,nodev,noexec 0 0"], "pid\nnet\n", "127.54.0.1 22"),
    "audit": (503, "/audit", "/mounts/audit_root", "/mounts/audit_priv", "127.53.0.1", "/sbin/sshd",
              "NET_BIND_SERVICE SETGID SETUID SYS_CHROOT",
              ["/var/log /var/log none bind,ro,nosuid,nodev,noexec 0 0"], "pid\nnet\n", "127.53.0.1 23"),
    "ike": (404, "/ike", "/ike_root", "/mounts/ike_priv", "127.44.0.1", "/usr/sbin/charon",
            "NET_ADMIN NET_BIND_SERVICE", ["/etc/admin/ike2 /etc/ipsec.d none bind,ro,nosuid,nodev,noexec 0 0"],
            "pid\n", None),
    "user": (502, "/user", "/mounts/user_root", "/mounts/user_priv", "127.52.0.1", "<invalid>", "", [],
             "pid\nnet\n", None),
    "x11": (505, "/x11", "/x11_root", "/mounts/x11_priv", "127.55.0.1", "<invalid>", "", [], "pid\nnet\n", None),
    "rm_h": (1001, "/vservers/rm_h/root", "/vservers/rm_h/user_root", "/vservers/rm_h/user_priv", "127.101.0.1",
             "<invalid>", "", ["/vservers/rm_h/home/user /home/user none bind,rw,nosuid,nodev,noexec 0 0",
                               "/mounts/xauth /var/run/xauth none bind,ro,nosuid,nodev,noexec 0 0"],
             "pid\nnet\n", None),
    "rm_b": (1002, "/vservers/rm_b/root", "/vservers/rm_b/user_root", "/vservers/rm_b/user_priv", "127.102.0.1",
             "<invalid>", "", ["/vservers/rm_b/home/user /home/user none bind,rw,nosuid,nodev,noexec 0 0",
                               "/mounts/xauth /var/run/xauth none bind,ro,nosuid,nodev,noexec 0 0"],
             "pid\nnet\n", None),
}


def client_files(name: str) -> dict[str, str]:
    context, root, source, priv, addr, cmd, caps, extra, nsopts, ssh = CLIENT[name]
    files = {
        "context": f"{context}\n", "root": f"{root}\n", "addr": f"{addr}/255.255.255.255\n", "cmd": f"{cmd}\n",
        "hostname": f"{name}\n", "bcaps": "".join(f"CAP_{c}\n" for c in caps.split()), "ccaps": "", "cflags": STD,
        "nflags": ("hide_netif\n" if "net" in nsopts else "") + ("no_sp\n" if "NET_ADMIN" not in caps else ""),
        "nsopts": nsopts, "nscleanup": "*/home/user\n" if name.startswith("rm_") else "",
        "fstab.external": "\n".join([
            f"# {name}: host source, then destination inside the jail; mounted after fstab.internal",
            f"{source} / none bind,ro,nodev 0 0", f"{priv}/dev /dev none bind,ro,nosuid 0 0",
            f"{priv}/var /var none bind,rw,nosuid,nodev,noexec 0 0",
            "tmpfs /tmp tmpfs rw,nosuid,nodev,noexec,size=16m,mode=1777 0 0", *extra]) + "\n",
        "fstab.internal": f"# {name}: source and destination both inside the jail root\n",
        "veriexec.ctx": "active -  -\n", "veriexec.level": "active\n",
    }
    if ssh:
        files["ssh"] = f"{ssh} /etc/ssh/ssh_host_ed25519_key\n"
    return files


def write_jail(etc: Path, name: str, files: dict[str, str | None]) -> Path:
    d = etc / "jails" / name
    d.mkdir(parents=True, exist_ok=True)
    for f, text in files.items():
        if text is not None:
            (d / f).write_text(text)
    return d


def run(bins, etc: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(bins["clip-jail"]), "--etc", str(etc), *args], capture_output=True, text=True,
                          timeout=30)


def test_hand_written_client_tree_passes_check(bins, tmp_path):
    for name in CLIENT:
        write_jail(tmp_path, name, client_files(name))
        r = run(bins, tmp_path, name, "check")
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
        assert f"mount {CLIENT[name][2]} on {CLIENT[name][1]} bind,ro,nodev (fstab.external:2)" in r.stdout
        assert f"proc on {CLIENT[name][1]}/proc" in r.stdout
    plan = run(bins, tmp_path, "ike", "check").stdout
    assert "namespaces mnt uts ipc cgroup pid time\n" in plan  # no net: IKE works on the host's network
    assert "addr 127.44.0.1/255.255.255.255 on the host's lo" in plan
    assert "caps 0x1400 CAP_NET_BIND_SERVICE CAP_NET_ADMIN" in plan
    plan = run(bins, tmp_path, "update", "check").stdout
    assert "tmpfs,rw,nosuid,nodev,noexec,size=16m,mode=1777 (fstab.external:5)" in plan
    assert "/mounts/usr on /update/usr/local bind,rw,nosuid,nodev (fstab.external:6)" in plan


@pytest.mark.parametrize("species", ["client", "gateway"])
def test_the_rendered_jails_pass_the_managers_own_check(bins, tmp_path, species):
    """What clipbuild renders and checks (jails/realisable) is exactly what clip-jail accepts: no jail the
    render-time check lets through is refused at boot."""
    project = Project(ROOT)
    jails = definitions.load_all(project, resolve(project, species).jails)
    rendered = definitions.render(project, jails, species)
    for path, text in rendered.files.items():
        if path.startswith("etc/jails/"):
            target = tmp_path / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    names = sorted(p.name for p in (tmp_path / "etc" / "jails").iterdir())
    assert len(names) == len(jails)
    for name in names:
        r = run(bins, tmp_path / "etc", name, "check")
        assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(("file", "text", "line", "message"), [
    ("cflags", "fakeinit\nvirt_mem\n", 2, "'virt_mem': util-vserver only: no Linux namespace virtualises it"),
    ("cflags", "fakeinit\nwhatever\n", 2, "'whatever': unknown flag"),
    ("cflags", ("# comment\n\nhide_mount\nfakeinit\n", {"nsopts": "net\n"}), 4, "fakeinit requires pid in nsopts"),
    ("addr", "127.51.0.1/255.255.255.255\n127.51.0.300/255.255.255.255\n", 2, "not an IPv4 address"),
    ("addr", "127.51.0.1/255.0.255.0\n", 1, "netmask not contiguous"),
    ("addr", "127.51.0.1\n", 1, "expected a.b.c.d/m.m.m.m"),
    ("addr", "".join(f"127.51.0.{i}/255.255.255.255\n" for i in range(1, 6)), 5, "more than 4 addresses"),
    ("bcaps", "CAP_CHOWN\nCAP_CHWON\n", 2, "'CAP_CHWON': not a Linux 6.1 capability"),
    ("bcaps", "CAP_CHOWN\nCAP_SETUID\nCAP_CHOWN\n", 3, "CAP_CHOWN listed twice"),
    ("ccaps", "SECURE_MOUNT\n", 1, "context capabilities have no Linux counterpart"),
    ("nsopts", "pid\nuser\n", 2, "user namespaces: not supported by this manager"),
    ("nsopts", "pid\nnet\nipc\n", 3, "unknown namespace option"),
    ("nflags", ("no_sp\nhide_netif\n", {"nsopts": "pid\n"}), 2, "hide_netif requires net in nsopts"),
    ("nflags", "no_sp\nhide_ip\n", 2, "'hide_ip': unknown or repeated flag"),
    ("bcaps", "CAP_NET_ADMIN\n", 1, None),  # the refusal lands on nflags' no_sp line: checked below
    ("cmd", "/sbin/sshd  -D\n", 1, "empty word"),
    ("cmd", "/sbin/sshd -D \n", 1, "empty word"),
    ("cmd", "sshd -D\n", 1, "an absolute path then arguments"),
    ("cmd", "/sbin/sshd\n/sbin/crond\n", 2, "more than one line"),
    ("context", "0\n", 1, "expected a decimal 1..65535"),
    ("context", "70000\n", 1, "expected a decimal 1..65535"),
    ("root", "/update/\n", 1, "absolute path without"),
    ("root", "/a/../b\n", 1, "absolute path without"),
    ("hostname", "up date\n", 1, "1..63 characters"),
    ("fstab.external", "/update_root / none bind,ro,nodev 0 0\n/m/pkg /var/pkg none bind,ro,nolock 0 0\n", 2,
     "'nolock': no Linux bind mount can disable locks"),
    ("fstab.external", "/update_root / none bind,ro,nodev 0 0\n/m/pkg /var/pkg none rbind,ro 0 0\n", 2,
     "'rbind': it would import every mount below the source"),
    ("fstab.external", "/update_root / none bind,ro,nodev 0 0\n/m/pkg /var/pkg none bind,ro,exec 0 0\n", 2,
     "'exec': not written by the renderer"),
    ("fstab.external", "/update_root / none bind,ro,nodev 0 0\n/dev/sda /var/pkg ext4 ro 0 0\n", 2,
     "type 'ext4': only 'none' (a bind) and 'tmpfs'"),
    ("fstab.external", "/update_root / none bind,ro,nodev 0 0\n/m/pkg var/pkg none bind,ro 0 0\n", 2,
     "destination 'var/pkg': not a clean absolute path"),
    ("fstab.external", "# no root line\n/m/pkg /var/pkg none bind,ro 0 0\n", 2,
     "the first line must bind the jail's root source on /"),
    ("fstab.external", "/update_root / none bind,ro,nodev 0 0\nproc /proc proc rw 0 0\n", 2,
     "proc: the manager mounts /proc itself"),
    ("fstab.external", "/update_root / none bind,ro,nodev 0 0\n/m/a /var none bind,ro,rw 0 0\n", 2, "both ro and rw"),
    ("fstab.external", "/update_root / none bind,ro,nodev 0 0\n/m/a /var none ro 0 0\n", 2, "needs option bind"),
    ("fstab.external", "/update_root / none bind,ro,nodev 0 0\n/m/a /var none bind 0 1\n", 2, "'0 0'"),
    ("fstab.external", "/update_root / none bind,ro,nodev 0 0\n/m/a /x none bind 0 0\n/m/b /x none bind 0 0\n",
     3, "/x mounted twice"),
    ("fstab.external", "/update_root / none bind,ro,nodev 0 0\ntmpfs /tmp tmpfs rw,size=lots 0 0\n", 2,
     "expected size=N[kmg] or mode=OCTAL"),
    ("fstab.internal", "/var/a / none bind,ro 0 0\n", 1, "only the first line of fstab.external may mount on /"),
    ("stray", "x\n", 0, "unknown file (fail closed"),
])
def test_refusals_name_file_and_line(bins, tmp_path, file, text, line, message):
    files: dict[str, str | None] = client_files("update")
    if isinstance(text, tuple):  # the file under test, and the other files the refusal needs
        text, others = text
        files.update(others)
    files[file] = text
    d = write_jail(tmp_path, "update", files)
    r = run(bins, tmp_path, "update", "check")
    assert r.returncode == 2
    assert r.stdout == ""
    if message is None:  # CAP_NET_ADMIN in bcaps with no_sp in nflags
        file, line, message = "nflags", 2, "no_sp with CAP_NET_ADMIN in bcaps"
    assert r.stderr.startswith(f"clip-jail: {d}/{file}:{line}: "), r.stderr
    assert message in r.stderr
    assert r.stderr.count("\n") == 1


def test_missing_mandatory_file_and_bad_name(bins, tmp_path):
    files: dict[str, str | None] = client_files("update")
    files["addr"] = None
    d = write_jail(tmp_path, "update", files)
    r = run(bins, tmp_path, "update", "check")
    assert r.returncode == 2
    assert r.stderr == f"clip-jail: {d}/addr:0: missing or empty (mandatory: 1..4 a.b.c.d/m.m.m.m)\n"
    r = run(bins, tmp_path, "Update", "check")
    assert r.returncode == 2 and "a jail name is 1..32 of [a-z0-9_]" in r.stderr
    r = run(bins, tmp_path, "nosuch", "check")
    assert r.returncode == 2 and "no such jail" in r.stderr


# ---- a real run: two busybox jails, inside an unprivileged user namespace ----

def userns_ok() -> bool:
    if shutil.which("unshare") is None or shutil.which("busybox") is None:
        return False
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--net", "--cgroup",
                        "true"], capture_output=True)
    return r.returncode == 0


def busybox_jail(tmp: Path, name: str, context: int, addr: str, cmd: str, shared_home: Path | None = None,
                 extra: str = "", nsopts: str = "pid\nnet\n") -> None:
    base = tmp / name
    src, priv, home = base / "rootsrc", base / "priv", shared_home or base / "home"
    for d in ("bin", "proc", "dev", "var", "tmp", "home/user", "etc", "mnt"):
        (src / d).mkdir(parents=True, exist_ok=True)
    (src / "etc" / "motd").write_text("")  # a file mount point, for a file bind
    (base / "motd").write_text(f"welcome to {name}\n")
    (priv / "var").mkdir(parents=True)
    home.mkdir(exist_ok=True)
    (base / "root").mkdir()
    shutil.copy(shutil.which("busybox"), src / "bin" / "busybox")
    for applet in ("sh", "cat", "hostname", "httpd", "sleep", "ls"):
        (src / "bin" / applet).symlink_to("busybox")
    write_jail(tmp / "etc", name, {
        "context": f"{context}\n", "root": f"{base}/root\n", "addr": f"{addr}/255.255.255.255\n",
        "cmd": f"{cmd}\n", "hostname": f"{name}-host\n", "bcaps": "CAP_NET_BIND_SERVICE\nCAP_SETUID\n",
        "ccaps": "", "cflags": STD, "nflags": "hide_netif\nno_sp\n" if "net" in nsopts else "no_sp\n", "nsopts": nsopts,
        "nscleanup": "*/home/user\n", "ssh": None if cmd == "<invalid>" else f"{addr} 22 /etc/ssh/key\n",
        "fstab.external": f"{src} / none bind,ro,nodev 0 0\n{priv}/var /var none bind,rw,nosuid,nodev,noexec 0 0\n"
                          "tmpfs /tmp tmpfs rw,nosuid,nodev,size=1m,mode=1777 0 0\n"
                          f"{home} /home/user none bind,rw,nosuid,nodev,noexec 0 0\n"
                          f"{base}/motd /etc/motd none bind,ro,nosuid,nodev,noexec 0 0\n" + extra,
        "fstab.internal": "/bin /mnt none bind,ro,nosuid,nodev,nosymfollow 0 0\n",
    })


@pytest.mark.skipif(not userns_ok(), reason="unprivileged user namespaces (or busybox, unshare) not available")
def test_start_probe_enter_stop_in_a_user_namespace(bins, tmp_path):
    if not bins["static"]:
        pytest.skip("no static libc to link the probe for a busybox-only jail root")
    tmp_path.chmod(0o755)
    httpd = "/bin/httpd -f -p {}:22 -h /var"
    busybox_jail(tmp_path, "one", 1001, "127.60.0.1", httpd.format("127.60.0.1"))
    busybox_jail(tmp_path, "two", 1002, "127.60.0.2", httpd.format("127.60.0.2"))
    (tmp_path / "cg").mkdir()
    cj = f"{bins['clip-jail']} --etc {tmp_path}/etc --run {tmp_path}/run --cgroup {tmp_path}/cg/clip-jails"
    script = f"""
mount -t cgroup2 none {tmp_path}/cg || exit 99
for j in one two; do {cj} $j start; echo "start $j=$?"; done
{cj} one status; echo "status=$?"
{cj} one start; echo "again=$?"
{cj} one enter -- /bin/sh -c 'hostname; cat /proc/uptime; cat /etc/motd; ls /mnt/busybox'; echo "enter=$?"
for j in one two; do {cj} $j probe --mark; echo "mark $j=$?"; done
for j in one two; do {cj} $j probe; echo "probe $j=$?"; done
for j in one two; do {cj} $j stop; echo "stop $j=$?"; done
{cj} one status; echo "status=$?"
"""
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--net", "--cgroup",
                        "--mount-proc", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert "start one=0" in out and "start two=0" in out, out + r.stderr
    assert re.search(r"^one running pid=\d+\nstatus=0$", out, re.M)
    assert "already running" in r.stderr and "again=1" in out
    up = re.search(r"^one-host\n(\S+) ", out, re.M)
    assert up and float(up.group(1)) < 30, out  # virt_uptime: the jail's boot time starts near 0
    assert "welcome to one\n/mnt/busybox\nenter=0" in out  # the file bind, and fstab.internal's bind
    for j in ("one", "two"):
        assert f"mark {j}=0" in out and f"probe {j}=0" in out, out
        summary = re.search(rf"^CLIP_JAIL {j} ok pid=\d+ ns=mnt:\d+,pid:\d+,net:\d+,ipc:\d+,uts:\d+,cgroup:\d+ "
                            r"rules=10/10$", out, re.M)
        assert summary, out
    for rule in ("namespaces", "processes", "root-readonly", "noexec", "capabilities", "no-new-privs", "mounts",
                 "hostname", "network", "homes"):
        assert re.search(rf"^CLIP_JAIL_RULE one {rule} ok: ", out, re.M), rule
    assert "network ok: 1 own address(es) on the jail's lo, 2 endpoint(s) as expected" in out
    assert "stop one=0" in out and "stop two=0" in out
    assert out.rstrip().endswith("one stopped\nstatus=3")
    assert not list((tmp_path / "run").glob("*.pid"))


@pytest.mark.skipif(not userns_ok(), reason="unprivileged user namespaces (or busybox, unshare) not available")
def test_probe_sees_a_shared_home_and_start_reports_failures(bins, tmp_path):
    if not bins["static"]:
        pytest.skip("no static libc to link the probe for a busybox-only jail root")
    tmp_path.chmod(0o755)
    shared = tmp_path / "shared-home"
    busybox_jail(tmp_path, "one", 1001, "127.60.0.1", "<invalid>", shared)
    busybox_jail(tmp_path, "two", 1002, "127.60.0.2", "<invalid>", shared)
    busybox_jail(tmp_path, "bad", 1003, "127.60.0.3", "/sbin/nosuchd -D")
    busybox_jail(tmp_path, "hostnet", 1005, "127.60.0.5", "<invalid>", nsopts="pid\n")
    busybox_jail(tmp_path, "nodir", 1004, "127.60.0.4", "<invalid>",
                 extra=f"{tmp_path}/nodir/motd /etc/nosuchdir/x none bind,ro,nosuid,nodev,noexec 0 0\n")
    (tmp_path / "cg").mkdir()
    cj = f"{bins['clip-jail']} --etc {tmp_path}/etc --run {tmp_path}/run --cgroup {tmp_path}/cg/clip-jails"
    script = f"""
mount -t cgroup2 none {tmp_path}/cg || exit 99
for j in one two; do {cj} $j start; done
for j in one two; do {cj} $j probe --mark; done
{cj} two probe; echo "probe two=$?"
{cj} bad start; echo "bad=$?"
{cj} nodir start; echo "nodir=$?"
for d in {tmp_path}/cg/clip-jails/*/; do basename $d; done
{cj} hostnet start; ip -o -4 addr show dev lo | grep -o "127.60.0.5/32.*lo:1005_0"
{cj} hostnet probe | grep -E "^CLIP_JAIL (hostnet|.*processes|.*network)"
{cj} hostnet stop; ip -o -4 addr show dev lo | grep -c 127.60.0.5
"""
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--net", "--cgroup",
                        "--mount-proc", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert "  another jail's mark: /home/user/.clip-probe-one" in out, out
    assert "CLIP_JAIL two FAILED rule=homes: 1 other jail mark(s) visible" in out
    assert "probe two=1" in out
    assert "clip-jail: bad: cmd /sbin/nosuchd: No such file or directory" in r.stderr
    assert "bad=1" in out
    assert "clip-jail: nodir: mount point /etc/nosuchdir/x (fstab.external:6): No such file or directory" in r.stderr
    assert "nodir=1" in out
    assert "nodir=1\none\ntwo\n" in out, out  # the failed jails' cgroups are removed
    # a jail on the host's network: its address on the host's lo while it runs, removed by stop
    assert re.search(r"^127.60.0.5/32 scope host lo:1005_0$", out, re.M), out
    assert re.search(r"^CLIP_JAIL hostnet ok pid=\d+ ns=.* rules=10/10$", out, re.M), out
    assert out.rstrip().endswith("stopped\n0")
