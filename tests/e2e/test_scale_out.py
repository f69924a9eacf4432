"""End to end: compiles on distcc helpers started from the build root, and ccache's HTTP remote, on 127.0.0.1.

A small species (clip-sysinfo: musl, the kernel headers, zlib and itself, all compiled) is built three times
into fresh package stores: with two helpers, locally, and with a helper killed mid-build. The binpkgs have the
same keys and the same files byte for byte (their own build times and saved environments differ, as between
any two builds); distcc's logs, the client's and the helpers', show where the compiles ran. Then a test-only
ebuild that compiles through ccache as the kernel does is built twice with fresh local caches and one HTTP
remote: the second build's compiles are remote hits.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import tarfile
import threading
import time
from pathlib import Path

import pytest

from clipbuild.core.run import alive, spawn
from clipbuild.formats import gpkg
from clipbuild.gentoo import distcc
from tests.ccache_http import Store
from tests.e2e.support import CLIPBUILD, DATE, Project

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
SPECIES = "scale"
PROFILE = ("inherits: base\ndescription: a few compiled packages, for the scale-out tests\n"
           "packages: !replace {clip: {core: [app-clip/clip-sysinfo]}}\n")
PORTS = (36501, 36502, 36503)  # two helpers, and the one killed mid-build
HELPER_LIFETIME = 900


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    proj = Project(tmp_path_factory.mktemp("scale"))
    proj.env["SOURCE_DATE_EPOCH"] = DATE
    (proj.root / "profiles" / f"{SPECIES}.yaml").write_text(PROFILE)
    assert proj.clipbuild("fetch", SPECIES).returncode == 0
    return proj


def start_helper(port: int, logs: Path) -> int:
    """`clipbuild sdk distccd` on 127.0.0.1:port (it stops by itself after HELPER_LIFETIME); its pid."""
    pid = spawn([CLIPBUILD, "sdk", "distccd", "--listen", "127.0.0.1", "--port", str(port), "--jobs", "2",
                 "--lifetime", str(HELPER_LIFETIME), "--log", logs / f"distccd-{port}.log"], logs / f"{port}.out")
    for _ in range(300):
        if "listening on 127.0.0.1" in _read(logs / f"distccd-{port}.log"):
            return pid
        time.sleep(0.1)
    raise AssertionError(_read(logs / f"{port}.out"))


def stopped(pid: int) -> bool:
    """Whether the helper (this test's child) has exited, reaped within 10 s."""
    for _ in range(100):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
        time.sleep(0.1)
    return False


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


@pytest.fixture(scope="module")
def helpers(tmp_path_factory):
    logs = tmp_path_factory.mktemp("helpers")
    pids = {port: start_helper(port, logs) for port in PORTS}
    yield {"logs": logs, "pids": pids}
    for pid in pids.values():
        if alive(pid):
            os.kill(pid, signal.SIGTERM)


def build(project: Project, name: str, *args: str) -> tuple[dict, str, Path]:
    """A build into a fresh store and work directory: its --json report, its stderr, its build step's output."""
    project.env["CLIPBUILD_BINPKGS"] = str(project.root.parent / f"store-{name}")
    workdir = project.root.parent / f"work-{name}"
    result = project.clipbuild("build", SPECIES, "--json", *args, workdir=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), result.stderr, workdir / "steps" / SPECIES / "build" / "clip-core" / "out"


def contents(store: Path) -> dict[str, dict[str, tuple]]:
    """Each binpkg by key: every file of its image with type, mode, owner, link target and content digest."""
    found = {}
    for binpkg in store.glob("*/*.gpkg.tar"):
        _, image = gpkg.read(binpkg)
        with tarfile.open(fileobj=io.BytesIO(image)) as tar:
            found[binpkg.parent.name] = {
                m.name: (m.type, m.mode, m.uid, m.gid, m.linkname,
                         hashlib.sha256(tar.extractfile(m).read()).hexdigest() if m.isfile() else "")
                for m in tar.getmembers()}
    return found


@pytest.fixture(scope="module")
def local(project) -> dict[str, dict[str, tuple]]:
    report, _, _ = build(project, "local")
    assert {row["status"] for s in report["sets"] for row in s["packages"]} == {"built"}
    return contents(project.root.parent / "store-local")


def test_two_helpers_build_the_same_binpkgs_and_run_the_compiles(project, helpers, local):
    report, err, out = build(project, "distcc", "--distcc", f"127.0.0.1:{PORTS[0]}/2",
                             "--distcc", f"127.0.0.1:{PORTS[1]}/2")
    assert f"distcc: 127.0.0.1:{PORTS[0]}/2, 127.0.0.1:{PORTS[1]}/2; MAKEOPTS=-j" in err
    assert contents(project.root.parent / "store-distcc") == local  # same keys, same files
    counts = report["sets"][0]["compiles"]["distcc"]
    for port in PORTS[:2]:
        helper_log = helpers["logs"] / f"distccd-{port}.log"
        served = distcc.read_server_log(helper_log).get("COMPILE_OK", 0)
        assert served > 50, _read(helper_log)[-2000:]  # distccd's own job summaries
        assert counts["hosts"][f"127.0.0.1:{port}/2"]["compiles"] == served  # the client's log agrees
    assert counts["kept_local"] == 0  # the musl specs did not keep clip-toolchain's compiles here
    config = (out / "portage" / "make.conf" / "91-scale-out.conf").read_text()
    assert 'FEATURES="${FEATURES} distcc"' in config and ",cpp" not in config  # no pump mode


def test_a_helper_killed_mid_build_falls_back_here_and_says_so(project, helpers, local):
    port = PORTS[2]
    helper_log = helpers["logs"] / f"distccd-{port}.log"

    def kill_after_some_compiles() -> None:
        for _ in range(3000):
            if distcc.read_server_log(helper_log).get("COMPILE_OK", 0) >= 20:
                os.kill(helpers["pids"][port], signal.SIGTERM)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_after_some_compiles)
    killer.start()
    report, err, _ = build(project, "killed", "--distcc", f"127.0.0.1:{PORTS[0]}/2", "--distcc", f"127.0.0.1:{port}/2")
    killer.join()
    assert stopped(helpers["pids"][port])
    row = report["sets"][0]["compiles"]["distcc"]["hosts"][f"127.0.0.1:{port}/2"]
    assert row["compiles"] >= 20 and row["unreachable"] + row["fell_back"] > 0, row
    assert f"distcc host 127.0.0.1:{port}/2 failed" in err and "ran elsewhere (here at the latest)" in err
    assert contents(project.root.parent / "store-killed") == local


PROBE = """EAPI=8
# Test only: compiles through ccache as clip-kernel.eclass does (ccache in front of gcc, under emake). Portage
# exports CCACHE_DISABLE=1 without FEATURES=ccache; which of it and CCACHE_NODISABLE wins depends on the order of
# the environment ccache is given (kbuild's gives NODISABLE, a plain make's does not): the probe unsets it.
DESCRIPTION="ccache probe"
HOMEPAGE="https://example.invalid"
S="${WORKDIR}"
LICENSE="MIT"
SLOT="0"
KEYWORDS="amd64"
src_compile() {
	local i
	unset CCACHE_DISABLE
	for i in 1 2 3 4 5 6; do
		printf 'int f%d(int x) { return x * %d + 1; }\\n' ${i} ${i} > f${i}.c || die
	done
	emake CC="ccache gcc" CFLAGS=-O2 f1.o f2.o f3.o f4.o f5.o f6.o
	ccache --show-stats
}
src_install() {
	insinto /usr/share/ccache-probe
	doins f*.o
}
"""


def test_a_second_clean_build_gets_its_objects_from_the_ccache_remote(project, tmp_path):
    probe = project.root / "overlays" / "clip" / "app-clip" / "ccache-probe"
    probe.mkdir()
    (probe / "ccache-probe-1.0.ebuild").write_text(PROBE)
    (project.root / "profiles" / "probe.yaml").write_text(
        "inherits: base\ndescription: ccache probe\npackages: !replace {clip: {core: [app-clip/ccache-probe]}}\n")
    with Store(tmp_path / "remote") as remote:
        runs = []
        for name in ("first", "second"):
            project.env.update({"CLIPBUILD_BINPKGS": str(tmp_path / f"store-{name}"),
                                "CLIPBUILD_CCACHE": str(tmp_path / f"ccache-{name}")})
            result = project.clipbuild("build", "probe", "--json", "--ccache-remote", remote.url,
                                       workdir=tmp_path / f"work-{name}")
            assert result.returncode == 0, result.stderr[-3000:]
            runs.append(json.loads(result.stdout)["sets"][0]["compiles"]["ccache"])
    for key in ("CLIPBUILD_CCACHE",):
        project.env.pop(key)
    shutil.rmtree(probe)
    assert runs[0]["misses"] == 6 and runs[0]["remote_hits"] == 0
    assert runs[1]["remote_hits"] == 6 and runs[1]["misses"] == 0 and runs[1]["local_hits"] == 0
    assert remote.counts["PUT"] >= 6
