"""End to end: real emerge of the species package sets in the real build root, from source.

Runs the installed `clipbuild` command on a copy of the project, with a fresh binary package store (so the
first build compiles everything) and the machine's shared build root and distfiles (~/.cache/clipbuild).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from clipbuild.core.errors import ToolError
from clipbuild.core.run import run
from clipbuild.formats import gpkg
from clipbuild.image import bootproof, elfcheck, install
from clipbuild.signing import trust, truststore
from tests.e2e.support import Project, kernel_version

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
KERNEL = kernel_version()
# The core set's packages: clip-core-conf and what it pins (the build-only linux-headers is not packaged).
CORE_DEBS = sorted(["baselayout-clip_4.5.0_amd64.deb", "busybox_1.35.0_amd64.deb", "clip-core-conf_4.5.0_amd64.deb",
                    "clip-jail_1.0.0_amd64.deb", "clip-jails_4.5.0_amd64.deb", f"clip-kernel_{KERNEL}_amd64.deb",
                    "clip-net_1.0.0_amd64.deb", "clip-sysinfo_1.1.0_amd64.deb",
                    "clip-update-keys_4.5.0_amd64.deb", "iproute2_6.1.0_amd64.deb", "iptables_1.8.9_amd64.deb",
                    "musl_1.2.3_amd64.deb", "openssh_9.2p1_amd64.deb", "openssl_3.0.20_amd64.deb",
                    "strongswan_5.9.8_amd64.deb", "zlib_1.2.13_amd64.deb"])


def statuses(report: dict) -> dict[str, str]:
    """'set cpv' -> built / reused, or the set's own status when it was cached."""
    out = {}
    for entry in report["sets"]:
        for row in entry["packages"]:
            status = "cached" if entry["status"] == "cached" else row["status"]
            out[f"{entry['step']} {row['cpv']}"] = status
    return out


@pytest.fixture(scope="module")
def project(e2e_project, client_build) -> Project:
    return e2e_project


@pytest.fixture(scope="module")
def client(client_build) -> dict:
    return client_build


def test_client_builds_every_package_from_source(client):
    assert statuses(client) == {
        "build/clip-core sys-libs/musl-1.2.3": "built",
        f"build/clip-core sys-kernel/linux-headers-{KERNEL}": "built",
        "build/clip-core sys-libs/zlib-1.2.13": "built",
        "build/clip-core dev-libs/openssl-3.0.20": "built",
        "build/clip-core net-misc/openssh-9.2_p1": "built",
        "build/clip-core clip-layout/baselayout-clip-4.5.0": "built",
        "build/clip-core sys-apps/busybox-1.35.0": "built",
        "build/clip-core sys-apps/iproute2-6.1.0": "built",
        "build/clip-core net-firewall/iptables-1.8.9": "built",
        "build/clip-core app-clip/clip-sysinfo-1.1.0": "built",
        "build/clip-core app-clip/clip-jail-1.0.0": "built",
        "build/clip-core app-clip/clip-net-1.0.0": "built",
        "build/clip-core net-vpn/strongswan-5.9.8": "built",
        "build/clip-core clip-layout/clip-jails-4.5.0": "built",
        "build/clip-core clip-conf/clip-update-keys-4.5.0": "built",
        f"build/clip-core sys-kernel/clip-kernel-{KERNEL}": "built",
        "build/clip-core clip-conf/clip-core-conf-4.5.0": "built",
        "build/clip-apps clip-conf/clip-apps-conf-4.5.0": "built",
        # rm-core's busybox, C library and kernel headers have the same inputs as clip-core's: from the store
        "build/rm-core sys-libs/musl-1.2.3": "reused",
        f"build/rm-core sys-kernel/linux-headers-{KERNEL}": "reused",
        "build/rm-core sys-apps/busybox-1.35.0": "reused",
        "build/rm-core clip-conf/rm-core-conf-4.5.0": "built",
        "build/rm-apps clip-conf/rm-apps-conf-4.5.0": "built",
    }


def _elf(path: Path) -> tuple[str, str, str]:
    header = run(["readelf", "-h", path]).stdout
    dynamic = run(["readelf", "-d", path]).stdout
    segments = run(["readelf", "-lW", path]).stdout
    return header, dynamic, segments


MUSL_LOADER = "/lib/ld-musl-x86_64.so.1"


def _needed(dynamic: str) -> set[str]:
    return {line.split("[", 1)[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line}


IPTABLES_LIBRARIES = {"libc.so", "libxtables.so.12", "libip4tc.so.2", "libip6tc.so.2"}


@pytest.mark.parametrize(("binary", "libraries"), [("bin/busybox", {"libc.so"}),
                                                   ("usr/bin/clip-sysinfo", {"libc.so", "libz.so.1"}),
                                                   ("sbin/ip", {"libc.so"}), ("sbin/ss", {"libc.so"}),
                                                   ("usr/sbin/xtables-legacy-multi", IPTABLES_LIBRARIES)])
def test_programs_are_hardened_pie_on_the_pipeline_s_musl(project, client, binary, libraries):
    """Dynamically linked against the C library and zlib the pipeline built (never the build root's glibc):
    musl's loader as interpreter, every NEEDED library in the set's ROOT, PIE, RELRO, BIND_NOW, stack protector."""
    root = project.workdir / "steps" / "client" / "build" / "clip-core" / "out" / "root"
    header, dynamic, segments = _elf(root / binary)
    assert "DYN (Position-Independent Executable file)" in header
    assert "BIND_NOW" in dynamic and "PIE" in dynamic
    assert "GNU_RELRO" in segments
    assert f"[Requesting program interpreter: {MUSL_LOADER}]" in segments
    assert _needed(dynamic) == libraries
    assert "__stack_chk_fail" in run(["readelf", "--dyn-syms", "-W", root / binary]).stdout
    for library in libraries:
        assert (root / "usr" / "lib" / library).exists(), library


def test_the_c_library_and_zlib_are_shared_libraries_of_the_set(project, client):
    root = project.workdir / "steps" / "client" / "build" / "clip-core" / "out" / "root"
    assert os.readlink(root / MUSL_LOADER.lstrip("/")) == "../usr/lib/libc.so"
    _, dynamic, _ = _elf(root / "usr" / "lib" / "libz.so.1.2.13")
    assert "Library soname: [libz.so.1]" in dynamic and _needed(dynamic) == {"libc.so"} and "BIND_NOW" in dynamic
    assert (root / "usr" / "include" / "zlib.h").is_file()  # in the SYSROOT for the builds, not in the .deb


def test_the_kernel_headers_are_the_kernel_s_own_and_build_only(project, client, tmp_path):
    """sys-kernel/linux-headers: `make headers` of the kernel's own pinned tree, for the ROOT the packages compile
    against (clip-toolchain.eclass; emerge installs it there when something is compiled, a DEPEND); its .deb is
    empty (test_packages_are_reproducible). Read from its binpkg, which every build of the set has."""
    out = project.workdir / "steps" / "client" / "build" / "clip-core" / "out"
    _, image = gpkg.read(next((out / "binpkgs" / "sys-kernel" / "linux-headers").glob(f"*-{KERNEL}-*.gpkg.tar")))
    gpkg.extract(image, tmp_path / "headers")
    include = tmp_path / "headers" / "usr" / "include"
    major, minor, sub = (int(n) for n in KERNEL.split("."))
    version_h = (include / "linux" / "version.h").read_text()
    assert f"#define LINUX_VERSION_CODE {(major << 16) + (minor << 8) + min(sub, 255)}\n" in version_h
    assert (include / "asm" / "unistd_64.h").is_file()  # generated from the x86 syscall table
    assert (include / "linux" / "xfrm.h").is_file()
    assert {p.name for p in (tmp_path / "headers").iterdir()} == {"usr"}
    assert {p.name for p in (tmp_path / "headers" / "usr").iterdir()} == {"include"}


# Run from the set's ROOT in a sandbox of its own (no network: a fresh namespace with only a loopback):
# the programs load musl's loader and libc from that ROOT, never the host's.
@pytest.mark.parametrize(("argv", "expected"), [
    (["/sbin/ip", "-V"], "ip utility, iproute2-6.1.0"),
    (["/sbin/ss", "-V"], "ss utility, iproute2-6.1.0"),
    (["/sbin/ip", "-o", "link", "show", "lo"], "1: lo: <LOOPBACK,UP"),  # a netlink dump, answered by the kernel
    (["/sbin/ip", "xfrm", "state", "help"], "Usage: ip xfrm state { add | update } ID"),  # usage: exit 255
])
def test_the_network_tools_run_from_the_set_s_root(project, client, argv, expected):
    root = project.workdir / "steps" / "client" / "build" / "clip-core" / "out" / "root"
    ran = run(["bwrap", "--ro-bind", root, "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all", "--",
               *argv], check=False)
    assert ran.returncode == (255 if "help" in argv else 0), ran.stderr
    assert expected in ran.stdout + ran.stderr


# iptables (legacy xtables): the program and its links run from the ROOT, and find their extensions, plugins
# dlopen()ed from /usr/lib/xtables (a match or target's options are listed only when its plugin loaded).
@pytest.mark.parametrize(("argv", "expected"), [
    (["/usr/sbin/iptables", "-V"], "iptables v1.8.9 (legacy)"),
    (["/usr/sbin/iptables-legacy", "-V"], "iptables v1.8.9 (legacy)"),
    (["/usr/sbin/ip6tables", "-V"], "ip6tables v1.8.9 (legacy)"),
    (["/usr/sbin/iptables-restore", "-V"], "iptables-restore v1.8.9 (legacy)"),
    (["/usr/sbin/iptables", "-m", "policy", "--help"], "policy match options:"),
    (["/usr/sbin/iptables", "-p", "udp", "-m", "multiport", "--help"], "multiport match options:"),
    (["/usr/sbin/iptables", "-m", "conntrack", "--help"], "conntrack match options:"),
    (["/usr/sbin/ip6tables", "-j", "REJECT", "--help"], "REJECT target options:"),
])
def test_iptables_runs_from_the_set_s_root_and_loads_its_extensions(project, client, argv, expected):
    root = project.workdir / "steps" / "client" / "build" / "clip-core" / "out" / "root"
    ran = run(["bwrap", "--ro-bind", root, "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all", "--",
               *argv], check=False)
    assert ran.returncode == 0, ran.stderr
    assert expected in ran.stdout


def test_iptables_libraries_and_extensions_are_hardened(project, client):
    """The shared libraries and every extension plugin: position-independent shared objects (no interpreter),
    RELRO and BIND_NOW, linked against the set's musl and libxtables only, and accepted by the image's own ELF
    check (clipbuild.image.elfcheck: hardening, stack protector heuristic, NEEDED resolvable in the tree)."""
    root = project.workdir / "steps" / "client" / "build" / "clip-core" / "out" / "root"
    plugins = sorted(p for p in (root / "usr" / "lib" / "xtables").glob("*.so") if not p.is_symlink())
    names = {p.name for p in plugins}
    assert {"libxt_policy.so", "libxt_multiport.so", "libxt_conntrack.so", "libxt_LOG.so", "libipt_REJECT.so",
            "libip6t_REJECT.so", "libxt_standard.so", "libxt_udp.so", "libxt_esp.so"} <= names
    assert len(plugins) > 50
    libraries = [root / "usr" / "lib" / name for name in ("libxtables.so.12", "libip4tc.so.2", "libip6tc.so.2")]
    for path in [*libraries, *plugins]:
        header, dynamic, segments = _elf(path)
        assert "DYN (Shared object file)" in header, path.name
        assert "BIND_NOW" in dynamic and "GNU_RELRO" in segments and "INTERP" not in segments, path.name
        assert "libc.so" in _needed(dynamic) <= {"libc.so", "libxtables.so.12"}, path.name
        checked, failures = elfcheck.check_file(root, str(path.relative_to(root)))
        assert checked is not None and checked.kind == "shared-library" and failures == [], (path.name, failures)
    assert all("libxtables.so.12" in _needed(_elf(p)[1]) for p in plugins)
    assert os.readlink(root / "usr" / "sbin" / "iptables") == "xtables-legacy-multi"


def test_the_c_tool_runs_and_the_layout_is_clip(project, client):
    root = project.workdir / "steps" / "client" / "build" / "clip-core" / "out" / "root"
    loader = root / MUSL_LOADER.lstrip("/")  # the host has no musl: run it with the set's own loader
    ran = run([loader, "--library-path", root / "usr" / "lib", root / "usr" / "bin" / "clip-sysinfo"])
    report, boot_path = ran.stdout.splitlines()
    assert report.startswith("clip-sysinfo: release=") and report.endswith(" zlib=1.2.13")
    assert bootproof.parse_uefi(boot_path) is not None  # how the build machine booted, well formed
    assert (root / "etc" / "shared" / "clip-release").read_text() == "CLIP-RM 4.5.0\n"
    for sub in ("mounts/usr", "mounts/admin_priv", "vservers/rm_h", "update_root"):
        assert (root / sub).is_dir(), sub
    apps = project.workdir / "steps" / "client" / "build" / "clip-apps" / "out" / "root"
    assert (apps / "usr" / "local" / "share" / "clip" / "clip-apps-release").is_file()


def test_config_and_logs_are_on_disk(project, client):
    out = project.workdir / "steps" / "client" / "build" / "rm-apps" / "out"
    assert 'CPREFIX="/usr/local"' in (out / "portage" / "make.conf" / "00-profile.conf").read_text()
    assert list((out / "logs" / "build").glob("clip-conf:rm-apps-conf-4.5.0:*.log"))


def test_a_second_build_rebuilds_nothing(project, client, tmp_path):
    started = time.monotonic()
    again = project.build("client")
    assert set(statuses(again).values()) == {"cached"}
    assert time.monotonic() - started < 30
    fresh = project.build("client", workdir=tmp_path / "other-work")  # new work directory, same store
    assert set(statuses(fresh).values()) == {"reused"}


def test_gateway_shares_what_it_can(project, client):
    gateway = statuses(project.build("gateway"))
    assert gateway["build/clip-core sys-apps/busybox-1.35.0"] == "reused"
    assert gateway["build/clip-core app-clip/clip-sysinfo-1.1.0"] == "reused"
    assert gateway["build/clip-core sys-apps/iproute2-6.1.0"] == "reused"  # same USE for both species
    assert gateway["build/clip-core net-firewall/iptables-1.8.9"] == "reused"
    assert gateway["build/clip-core clip-layout/baselayout-clip-4.5.0"] == "built"  # USE clip-gtw
    assert not any(key.startswith("build/rm-") for key in gateway)


def test_editing_one_ebuild_rebuilds_that_package_only(project, client):
    ebuild = project.root / "overlays" / "clip" / "app-clip" / "clip-sysinfo" / "clip-sysinfo-1.1.0.ebuild"
    ebuild.write_text(ebuild.read_text() + f"\n# edited by a test at {time.time_ns()}\n")
    report = project.build("client")
    built = {k: v for k, v in statuses(report).items() if v == "built"}
    assert built == {"build/clip-core app-clip/clip-sysinfo-1.1.0": "built"}
    row = next(r for e in report["sets"] for r in e["packages"] if r["cpv"] == "app-clip/clip-sysinfo-1.1.0")
    assert row["reason"] == "ebuild or its files changed"
    explained = project.clipbuild("build", "client", "--explain")
    assert "build/clip-core: cached, 17 packages unchanged" in explained.stdout


def test_editing_a_library_rebuilds_it_and_what_links_it_only(project, client):
    """zlib changed: zlib, and the packages built against it (DEPEND: clip-sysinfo, OpenSSH), are rebuilt, each
    saying why; nothing else (OpenSSL, strongSwan, the kernel...) is."""
    ebuild = project.root / "overlays" / "clip" / "sys-libs" / "zlib" / "zlib-1.2.13.ebuild"
    ebuild.write_text(ebuild.read_text() + f"\n# edited by a test at {time.time_ns()}\n")
    report = project.build("client")
    built = {k for k, v in statuses(report).items() if v == "built"}
    assert built == {"build/clip-core sys-libs/zlib-1.2.13", "build/clip-core app-clip/clip-sysinfo-1.1.0",
                     "build/clip-core net-misc/openssh-9.2_p1"}
    reasons = {r["cpv"]: r["reason"] for e in report["sets"] for r in e["packages"] if r["status"] == "built"}
    assert reasons["sys-libs/zlib-1.2.13"] == "ebuild or its files changed"
    assert reasons["net-misc/openssh-9.2_p1"] == "dependency sys-libs/zlib-1.2.13 changed"
    explained = project.clipbuild("build", "client", "--explain")
    assert explained.returncode == 0 and "cached" in explained.stdout


def test_editing_a_jail_rebuilds_the_jails_package_only(project, client):
    user = project.root / "jails" / "user.yaml"
    user.write_text(user.read_text() + "hostname: user-edited\n")
    report = project.build("client")
    built = {k for k, v in statuses(report).items() if v == "built"}
    assert built == {"build/clip-core clip-layout/clip-jails-4.5.0"}
    root = project.workdir / "steps" / "client" / "build" / "clip-core" / "out" / "root"
    assert (root / "etc" / "jails" / "user" / "hostname").read_text() == "user-edited\n"
    assert (root / "etc" / "jails" / "admin" / "context").read_text() == "504\n"


def test_a_revoked_controller_rebuilds_the_trust_store_package_only(project, client, tmp_path):
    """Key rotation, build side: a release built for a policy, then a controller certificate revoked (a new CRL):
    only clip-update-keys is rebuilt, and the core set's root holds the new store."""
    project.env["CLIPBUILD_PASSPHRASE"] = "e2e only"
    pki_dir = tmp_path / "pki"
    assert project.clipbuild("pki", "init", str(pki_dir)).returncode == 0
    policy = pki_dir / "policy.yaml"
    release = ("--release", "--policy", str(policy))
    first = project.clipbuild("build", "client", "--json", *release)
    assert first.returncode == 0, first.stderr[-3000:]
    assert project.clipbuild("pki", "issue", str(pki_dir), "--role", "controller", "--name", "controller-2",
                             ).returncode == 0
    assert project.clipbuild("pki", "revoke", str(pki_dir), str(pki_dir / "controller-2.pem")).returncode == 0
    second = project.clipbuild("build", "client", "--json", *release)
    assert second.returncode == 0, second.stderr[-3000:]
    built = {k for k, v in statuses(json.loads(second.stdout)).items() if v == "built"}
    assert built == {"build/clip-core clip-conf/clip-update-keys-4.5.0"}
    root = project.workdir / "steps" / "client" / "build" / "clip-core" / "out" / "root"
    assert truststore.canonical(truststore.load(root)) == truststore.canonical(trust.load_policy(policy))
    project.build("client")  # the session's development build back in steps/ for the tests after this one


def test_a_broken_ebuild_fails_with_its_name_and_log_tail(project, client):
    pkg = project.root / "overlays" / "clip" / "app-clip" / "broken-tool"
    pkg.mkdir()
    (pkg / "broken-tool-1.0.ebuild").write_text(
        'EAPI=8\nDESCRIPTION="fails on purpose"\nHOMEPAGE="https://example.invalid"\nS="${WORKDIR}"\n'
        'LICENSE="MIT"\nSLOT="0"\nKEYWORDS="amd64"\n'
        'src_compile() {\n\techo "about to fail"\n\tdie "deliberately broken for a test"\n}\n')
    (project.root / "profiles" / "broken.yaml").write_text(
        "inherits: base\ndescription: a species with a broken package\n"
        "packages: {clip: {apps: [app-clip/broken-tool]}}\n")
    result = project.clipbuild("build", "broken")
    assert result.returncode == 1
    err = result.stderr
    assert "error: step build/clip-apps failed: app-clip/broken-tool-1.0 failed in the compile phase" in err
    assert "deliberately broken for a test" in err and "about to fail" in err
    log_line = next(line for line in err.splitlines() if line.startswith("  package log: "))
    assert Path(log_line.removeprefix("  package log: ")).is_file()
    # The set built before it succeeded and stays usable; the failed set left no steps/ link.
    assert (project.workdir / "steps" / "broken" / "build" / "clip-core").is_symlink()
    assert not (project.workdir / "steps" / "broken" / "build" / "clip-apps").exists()
    assert os.path.isdir(project.workdir / "failed" / "broken" / "build" / "clip-apps" / "out" / "logs")


SETS = ("clip-core", "clip-apps", "rm-core", "rm-apps")


def _package(project: Project, workdir: Path) -> dict[str, list[str]]:
    result = project.clipbuild("package", "client", "--json", workdir=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_packages_are_reproducible(project, client, tmp_path):
    project.env["SOURCE_DATE_EPOCH"] = "1700000000"
    first = _package(project, project.workdir)
    assert sorted(first["package/clip-core"]) == CORE_DEBS
    # The kernel headers are build-only (a DEPEND of every compiled package, no RDEPEND of any): built into the
    # set's ROOT, never packaged (CLIP has no -dev packages).
    assert "linux-headers" not in " ".join(name for names in first.values() for name in names)
    _package(project, tmp_path / "again")
    for step in first:
        for name in first[step]:
            a = project.workdir / "steps" / "client" / step / "out" / "debs" / name
            b = tmp_path / "again" / "steps" / "client" / step / "out" / "debs" / name
            assert a.read_bytes() == b.read_bytes(), name


def test_sign_countersign_publish_and_install(project, client, tmp_path):
    project.env.update({"SOURCE_DATE_EPOCH": "1700000000", "CLIPBUILD_PASSPHRASE": "e2e only"})
    _package(project, project.workdir)
    pki_dir = tmp_path / "pki"
    assert project.clipbuild("pki", "init", str(pki_dir)).returncode == 0
    policy = str(pki_dir / "policy.yaml")
    batches = []
    for name in SETS:
        box = tmp_path / "batches" / name
        shutil.copytree(project.workdir / "steps" / "client" / "package" / name / "out" / "debs", box)
        debs = sorted(str(p) for p in box.glob("*.deb"))
        signed = project.clipbuild("sign", "--role", "developer", "--key", str(pki_dir / "developer-1.key"),
                                   "--cert", str(pki_dir / "developer-1.pem"), "--policy", policy, *debs)
        assert signed.returncode == 0, signed.stderr
        countersigned = project.clipbuild("countersign", str(box), "--key", str(pki_dir / "controller-1.key"),
                                          "--cert", str(pki_dir / "controller-1.pem"), "--policy", policy)
        assert countersigned.returncode == 0, countersigned.stderr
        batches.append(str(box))
    repo = tmp_path / "repo"
    published = project.clipbuild("repo", "publish", *batches, "--policy", policy, "--out", str(repo))
    assert published.returncode == 0, published.stderr
    core = repo / "clip" / "clip-core-conf"
    assert sorted(p.name for p in (core / "pool").iterdir()) == CORE_DEBS  # what clip-core-conf pins
    # Debian's own indexer reads the same packages and agrees on every field it writes.
    from debian.deb822 import Packages

    ours = {p["Package"]: dict(p) for p in Packages.iter_paragraphs(use_apt_pkg=False, sequence=
        run(["sh", "-c", f"zcat {core}/dists/clip/main/binary-amd64/Packages.gz"]).stdout.splitlines())}
    theirs = {p["Package"]: dict(p) for p in Packages.iter_paragraphs(use_apt_pkg=False, sequence=
        run(["apt-ftparchive", "packages", "pool"], cwd=core).stdout.splitlines())}
    assert ours == theirs
    assert ours["clip-core-conf"]["Release-Date"] and ours["busybox"]["Distribution"] == "clip"
    # The run-time dependencies the .debs carry (RDEPEND, clip-toolchain.eclass), and no build-only file.
    assert ours["clip-sysinfo"]["Depends"] == "zlib (>= 1.2.13), musl (>= 1.2.3)"
    assert ours["busybox"]["Depends"] == "musl (>= 1.2.3)" == ours["iproute2"]["Depends"] == \
        ours["iptables"]["Depends"]
    listing = run(["dpkg-deb", "--contents", core / "pool" / "musl_1.2.3_amd64.deb"]).stdout
    assert "./usr/lib/libc.so" in listing and "include" not in listing and ".a\n" not in listing
    # dpkg installs the countersigned packages as they are, dependencies checked.
    root = tmp_path / "root"
    for sub in ("info", "updates", "triggers"):
        (root / "var/lib/dpkg" / sub).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    run(["dpkg", f"--root={root}", f"--log={root}/dpkg.log", "--force-not-root", "--force-script-chrootless",
         "-i", *sorted((core / "pool").glob("*.deb"))])
    assert (root / "bin" / "busybox").is_file() and (root / "usr" / "bin" / "clip-sysinfo").is_file()
    assert (root / "usr" / "lib" / "libc.so").is_file() and not (root / "usr" / "include").exists()
    assert (root / "etc" / "jails" / "admin" / "fstab.external").is_file()  # the signed jails package
    # A tampered package in the pool is refused by publishing, naming it.
    victim = Path(batches[0]) / "busybox_1.35.0_amd64.deb"
    data = bytearray(victim.read_bytes())
    data[200] ^= 0xFF
    victim.write_bytes(bytes(data))
    refused = project.clipbuild("repo", "publish", *batches, "--policy", policy, "--out", str(tmp_path / "r2"))
    assert refused.returncode == 1 and "busybox_1.35.0_amd64.deb: " in refused.stderr


def test_a_package_whose_dependency_is_missing_fails_to_install_with_dpkg_s_reason(project, client, tmp_path):
    """The .debs' Depends are enforced by dpkg when a tree is installed (what the image step and updates do): the
    core set without zlib stops at clip-sysinfo, with dpkg's own words."""
    _package(project, project.workdir)
    debs = sorted((project.workdir / "steps" / "client" / "package" / "clip-core" / "out" / "debs").glob("*.deb"))
    without_zlib = [deb for deb in debs if not deb.name.startswith("zlib_")]
    assert len(without_zlib) == len(debs) - 1
    with pytest.raises(ToolError) as failure:
        (tmp_path / "root").mkdir()
        install.install(without_zlib, tmp_path / "root", tmp_path / "dpkg.log")
    text = "\n".join(failure.value.lines())
    assert "dependency problems prevent configuration of clip-sysinfo" in text
    assert "clip-sysinfo depends on zlib (>= 1.2.13); however:" in text and "Package zlib is not installed." in text


def _verity_root(tmp_path: Path, built: Path) -> tuple[Path, Path, str, str, int]:
    """A squashfs root whose /init prints a marker, under dm-verity: (data, hash, root hash, salt, blocks). It holds
    the built busybox and the C library it runs on (musl's loader is its libc.so)."""
    tree = tmp_path / "root"
    for sub in ("bin", "lib", "usr/lib", "dev", "proc", "sys"):
        (tree / sub).mkdir(parents=True)
    shutil.copy(built / "bin" / "busybox", tree / "bin" / "busybox")
    shutil.copy(built / "usr" / "lib" / "libc.so", tree / "usr" / "lib" / "libc.so")
    (tree / MUSL_LOADER.lstrip("/")).symlink_to("../usr/lib/libc.so")
    (tree / "init").write_text("#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n"
                               "echo CLIP-VERITY-ROOT-OK $(/bin/busybox cat /proc/cmdline | /bin/busybox wc -c)\n"
                               "echo YAMA-PTRACE-SCOPE=$(/bin/busybox cat /proc/sys/kernel/yama/ptrace_scope)\n"
                               "/bin/busybox reboot -f\n")
    (tree / "init").chmod(0o755)
    data, hashes = tmp_path / "data.img", tmp_path / "hash.img"
    run(["mksquashfs", tree, data, "-noappend", "-all-root", "-comp", "zstd", "-quiet"])
    salt = "00" * 32
    out = run(["veritysetup", "format", f"--salt={salt}", data, hashes]).stdout
    root_hash = next(line.split()[-1] for line in out.splitlines() if line.startswith("Root hash"))
    return data, hashes, root_hash, salt, data.stat().st_size // 4096


def _boot(kernel: Path, data: Path, hashes: Path, root_hash: str, salt: str, blocks: int) -> str:
    table = (f"root,,,ro,0 {blocks * 8} verity 1 /dev/vda /dev/vdb 4096 4096 {blocks} 1 sha256 {root_hash} {salt} "
             "1 panic_on_corruption")
    cmdline = (f'console=ttyS0 panic=-1 dm-mod.waitfor=/dev/vda,/dev/vdb dm-mod.create="{table}" root=/dev/dm-0 '
               "rootfstype=squashfs ro init=/init")
    result = run(["qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot", "-kernel", kernel,
                  "-drive", f"file={data},if=virtio,format=raw,readonly=on",
                  "-drive", f"file={hashes},if=virtio,format=raw,readonly=on", "-append", cmdline],
                 check=False, timeout=180)
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def kernel_root(project, client) -> Path:
    return project.workdir / "steps" / "client" / "build" / "clip-core" / "out" / "root"


def test_build_dates_inside_programs_are_fixed(kernel_root):
    """A binary package is keyed on its inputs; the day it was built is not one (SOURCE_DATE_EPOCH in make.conf):
    busybox writes its build date into its banner, and two builds gave two packages before."""
    assert b"BusyBox v1.35.0 (1980-01-01 00:00:00 UTC)" in (kernel_root / "bin" / "busybox").read_bytes()


def test_the_kernel_is_built_with_its_configuration(kernel_root):
    config = (kernel_root / "boot" / f"config-{KERNEL}-clip").read_text()
    for line in ("CONFIG_DM_VERITY=y", "CONFIG_DM_INIT=y", 'CONFIG_CLIP_SPECIES="client"', "CONFIG_SECURITY_YAMA=y",
                 "# CONFIG_MODULES is not set", "# CONFIG_DEVMEM is not set", "CONFIG_POSIX_TIMERS=y"):
        assert line in config.splitlines(), line
    assert (kernel_root / "boot" / "vmlinuz-clip").stat().st_size > 1_000_000


def test_the_kernel_boots_a_verity_root_and_announces_itself(kernel_root, tmp_path):
    data, hashes, root_hash, salt, blocks = _verity_root(tmp_path, kernel_root)
    console = _boot(kernel_root / "boot" / "vmlinuz-clip", data, hashes, root_hash, salt, blocks)
    assert f"CLIP: species client, build {KERNEL}" in console
    assert "CLIP-VERITY-ROOT-OK" in console, console[-3000:]
    assert "YAMA-PTRACE-SCOPE=1" in console  # the hardening patch: relational by default, not disabled


def test_a_corrupted_root_block_does_not_boot(kernel_root, tmp_path):
    data, hashes, root_hash, salt, blocks = _verity_root(tmp_path, kernel_root)
    image = bytearray(data.read_bytes())
    image[200] ^= 0xFF  # in the first block, which mounting the root reads
    data.write_bytes(bytes(image))
    console = _boot(kernel_root / "boot" / "vmlinuz-clip", data, hashes, root_hash, salt, blocks)
    assert "CLIP-VERITY-ROOT-OK" not in console
    assert "is corrupted" in console, console[-3000:]
