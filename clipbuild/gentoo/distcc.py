"""distcc for the build sandbox and for helpers, from Debian bookworm, outside the build root.

The build root does not hold distcc (adding it would change the build root's key and rebuild every package for
everyone). Instead bookworm's distcc .deb and the three libraries it needs that the build root lacks are
downloaded once from the machine's Debian mirror, checked against the digests pinned here, and unpacked into a
tools tree under ~/.cache/clipbuild/tools/distcc-<key>/. The tree is mounted only into sandboxes that use
distcc: a build with --distcc hosts, and `clipbuild sdk distccd`. Both run the build root's own gcc, so a helper
compiles with the identical compiler.

    tree/          the unpacked .debs (distcc, distccd; libpopt, libavahi-client/common, libdbus)
    masquerade/    mounted at /usr/lib/distcc: bin/{gcc,cc,...} -> the masquerade script
                   (clipbuild/gentoo/guest/distcc-gcc.sh), and distccd's compiler whitelist entries
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clipbuild.core.digest import key_of, sha256_file
from clipbuild.core.errors import BuildRootError, InputError
from clipbuild.core.paths import cache_dir
from clipbuild.core.run import require, run
from clipbuild.gentoo.buildroot import DEBIAN_SUITE, BuildRoot, Mount
from clipbuild.gentoo.debarchive import Archive, Say

TREE_MOUNT = "/build/distcc"
MASQUERADE = "distcc"  # the /usr/lib entry Portage's FEATURES=distcc and distccd's whitelist look for
COMPILERS = ("gcc", "cc", "x86_64-linux-gnu-gcc", "gcc-12", "x86_64-linux-gnu-gcc-12", "g++", "c++",
             "x86_64-linux-gnu-g++")
SCRIPT = Path(__file__).parent / "guest" / "distcc-gcc.sh"
LIB_PATH = f"{TREE_MOUNT}/usr/lib/x86_64-linux-gnu:{TREE_MOUNT}/lib/x86_64-linux-gnu"


@dataclass(frozen=True)
class Deb:
    package: str
    version: str
    sha256: str


# bookworm's distcc and what it links that the build root has not (libgssapi-krb5-2 and libsystemd0 it has).
DEBS = (Deb("distcc", "3.4+really3.4-3", "765c988eb5be6a1a1d8ba8c59eee694c2b8aaa7c4695dcbe3e0344e1f4d9f1d0"),
        Deb("libpopt0", "1.19+dfsg-1", "6f94b488255acd996254f775c77ff3956557c61f860a3c9caeaf65457554194f"),
        Deb("libavahi-client3", "0.8-10+deb12u1", "a99d635f07a49cfbd24de151155c4f815a5adf867855e7ba13ecc3b25ffa52b9"),
        Deb("libavahi-common3", "0.8-10+deb12u1", "0c12791afe1be09d8362161244d7a51e82a67a55f3909f4c29ee3dd424c3a5f1"),
        Deb("libdbus-1-3", "1.14.10-1~deb12u1", "18ee0ce5fab9f7b671e87da1e9fa18660e36e04a3402f24bdb8635e0ba1d35f6"))


@dataclass(frozen=True)
class Tools:
    path: Path

    @property
    def tree(self) -> Path:
        return self.path / "tree"

    @property
    def usr_lib(self) -> dict[str, Path]:
        return {MASQUERADE: self.path / "masquerade"}

    @property
    def mounts(self) -> list[Mount]:
        return [Mount(self.tree, TREE_MOUNT)]

    def program(self, name: str) -> str:
        return f"{TREE_MOUNT}/usr/bin/{name}"


def tools_key() -> str:
    return key_of({"debs": [vars(d) for d in DEBS], "script": sha256_file(SCRIPT)})[:20]


def ensure_tools(say: Say = print) -> Tools:
    """The distcc tools tree, made first when missing: downloaded, digest-checked, unpacked."""
    final = cache_dir() / "tools" / f"distcc-{tools_key()}"
    if (final / "masquerade").is_dir():
        return Tools(final)
    require("apt-get", "dpkg-deb")
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "debs").mkdir(parents=True)
    archive = Archive(DEBIAN_SUITE)
    archive.ensure_index(say)
    say(f"distcc: downloading {', '.join(f'{d.package}={d.version}' for d in DEBS)} (bookworm)")
    run(["apt-get", *archive.options(), "download", *(f"{d.package}={d.version}" for d in DEBS)], cwd=tmp / "debs",
        timeout=600)
    for deb in DEBS:
        found = sorted((tmp / "debs").glob(f"{deb.package}_*.deb"))
        digest = sha256_file(found[0]) if found else "missing"
        if digest != deb.sha256:
            shutil.rmtree(tmp)
            raise BuildRootError(f"{deb.package} {deb.version}: sha256 {digest} is not the pinned {deb.sha256}")
        run(["dpkg-deb", "-x", found[0], tmp / "tree"])
    _write_masquerade(tmp / "masquerade")
    shutil.rmtree(tmp / "debs")
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # made meanwhile by another run
        shutil.rmtree(tmp)
    else:
        os.rename(tmp, final)
    return Tools(final)


def _write_masquerade(target: Path) -> None:
    (target / "bin").mkdir(parents=True)
    shutil.copy(SCRIPT, target / "bin" / SCRIPT.name)
    (target / "bin" / SCRIPT.name).chmod(0o755)
    for name in COMPILERS:
        (target / "bin" / name).symlink_to(SCRIPT.name)
        (target / name).symlink_to(f"bin/{name}")  # distccd's whitelist: /usr/lib/distcc/<compiler>


def client_env(log: str) -> dict[str, str]:
    """distcc's settings inside the build sandbox: its state in PORTAGE_TMPDIR, every compile logged (the
    counts come from this log), fallback to a local compile on (distcc's default, said explicitly)."""
    return {"CLIP_DISTCC_TREE": TREE_MOUNT, "DISTCC_DIR": "/var/tmp/distcc", "DISTCC_LOG": log,
            "DISTCC_VERBOSE": "1", "DISTCC_FALLBACK": "1", "DISTCC_SKIP_LOCAL_RETRY": "0"}


def distccd_argv(tools: Tools, listen: str, port: int, allow: Sequence[str], jobs: int, log: str,
                 lifetime: int | None, stats_port: int | None) -> list[str]:
    argv = [tools.program("distccd"), "--daemon", "--no-detach", "--listen", listen, "--port", str(port),
            "--jobs", str(jobs), "--log-file", log, "--log-level", "info"]
    for network in allow:
        argv += ["--allow", network]
    if lifetime:
        argv += ["--lifetime", str(lifetime)]
    if stats_port:
        argv += ["--stats", "--stats-port", str(stats_port)]
    return argv


# distcc's own verbose client log: a compile that ran on a host, and one that fell back to this machine.
_DONE = re.compile(r"distcc\[\d+\] compile (?P<src>\S+) on (?P<host>\S+) completed ok")
_FELL_BACK = re.compile(r"failed to distribute (?P<src>\S+) to (?P<host>[^\s/]+)(?:/\d+)?, running locally instead")
# A host that failed a compile is put in back-off (distcc then compiles that file, and the next ones, elsewhere).
_BACKOFF = re.compile(r"\(dcc_mark_timefile\) mark \S*/backoff_tcp_(?P<addr>[^_\s]+)_(?P<port>\d+)_")
_REFUSED = re.compile(r"\(dcc_scan_args\) (?P<arg>\S+) must be local")


@dataclass
class ClientCounts:
    """From distcc's client log: compiles completed per host ("localhost" = here), per host ADDRESS:PORT the
    compiles it failed (each then ran elsewhere, here at the latest), and commands distcc kept local by rule
    (e.g. -specs=)."""

    compiled: dict[str, int] = field(default_factory=dict)
    fell_back: dict[str, int] = field(default_factory=dict)
    kept_local: int = 0


def read_client_log(path: Path) -> ClientCounts:
    counts = ClientCounts()
    if not path.is_file():
        return counts
    with path.open(errors="replace") as lines:
        for line in lines:
            if match := _DONE.search(line):
                counts.compiled[match["host"]] = counts.compiled.get(match["host"], 0) + 1
            elif match := _BACKOFF.search(line):
                host = f"{match['addr']}:{match['port']}"
                counts.fell_back[host] = counts.fell_back.get(host, 0) + 1
            elif match := _FELL_BACK.search(line):
                counts.fell_back[match["host"]] = counts.fell_back.get(match["host"], 0) + 1
            elif _REFUSED.search(line):
                counts.kept_local += 1
    return counts


_JOB = re.compile(r"\(dcc_job_summary\) client: \S+ (?P<status>[A-Z_]+) ")


def read_server_log(path: Path) -> dict[str, int]:
    """distccd's job summaries by status (COMPILE_OK, ...): what a helper did, from its own log."""
    counts: dict[str, int] = {}
    if path.is_file():
        for match in _JOB.finditer(path.read_text(errors="replace")):
            counts[match["status"]] = counts.get(match["status"], 0) + 1
    return counts


# distccd will not keep root and cannot switch to another user in the sandbox's user namespace (only one id is
# mapped): it runs as this unprivileged id there, the build root read-only around it.
DISTCCD_UID = 1000
LOG_MOUNT = "/build/log"


@dataclass(frozen=True)
class Helper:
    """A distccd from the build root: where it listens, whom it serves, for how long, where it logs."""

    listen: str = "127.0.0.1"
    port: int = 3632
    jobs: int = 2
    allow: tuple[str, ...] = ()
    lifetime: int | None = None
    stats_port: int | None = None
    log: Path = Path("distccd.log")

    def allowed(self) -> tuple[str, ...]:
        """--allow as given; a loopback helper serves loopback only unless told otherwise."""
        if self.allow:
            return self.allow
        if self.listen.startswith("127."):
            return ("127.0.0.1",)
        raise InputError(f"distccd listening on {self.listen}: say which clients it serves with --allow "
                             "ADDRESS[/BITS] (distcc runs whatever compiler command a client sends)")


def serve(sdk: BuildRoot, helper: Helper, say: Say = print) -> int:
    """Run distccd in the foreground in the build root (its gcc, its musl-ready specs handling), sharing the
    host's network to listen; returns its exit status. Ctrl-C or SIGTERM stop it (bwrap --die-with-parent)."""
    tools = ensure_tools(say)
    helper.log.parent.mkdir(parents=True, exist_ok=True)
    argv = distccd_argv(tools, helper.listen, helper.port, helper.allowed(), helper.jobs,
                        f"{LOG_MOUNT}/{helper.log.name}", helper.lifetime, helper.stats_port)
    mounts = [*tools.mounts, Mount(helper.log.parent, LOG_MOUNT, writable=True)]
    sandbox = sdk.sandbox(mounts, {"LD_LIBRARY_PATH": LIB_PATH, "TMPDIR": "/tmp"}, network=True,
                          usr_lib=tools.usr_lib, uid=DISTCCD_UID)
    say(f"distccd {helper.listen}:{helper.port} ({helper.jobs} jobs, build root {sdk.key}), log {helper.log}")
    return run(argv, sandbox=sandbox, check=False, capture=False).returncode
