"""Where compiles may go besides this machine: distcc hosts and a ccache HTTP remote (docs/scale-out.md).

Both change how fast a package builds, never what it is: they are read at run time (from `clipbuild build
--distcc ... --ccache-remote ...`, or the environment variables CLIPBUILD_DISTCC and CLIPBUILD_CCACHE_REMOTE)
and enter no cache key and no plan. The build sandbox reaches them through clipbuild.gentoo.guest.relay only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from clipbuild.core.errors import InputError

ENV_DISTCC = "CLIPBUILD_DISTCC"  # space-separated HOST[:PORT][/JOBS]
ENV_CCACHE_REMOTE = "CLIPBUILD_CCACHE_REMOTE"  # http://HOST[:PORT][/PATH][|read-only]
DISTCC_PORT = 3632
DISTCC_JOBS = 2  # a host's job slots when /JOBS is not given
READ_ONLY = "read-only"
_HOST = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)(?::(?P<port>\d+))?(?:/(?P<jobs>\d+))?$")


@dataclass(frozen=True)
class DistccHost:
    host: str
    port: int = DISTCC_PORT
    jobs: int = DISTCC_JOBS

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.jobs}"

    @property
    def address(self) -> str:
        """The host as socket.create_connection takes it (an IPv6 address without its brackets)."""
        return self.host.strip("[]")


def parse_host(text: str) -> DistccHost:
    """HOST[:PORT][/JOBS]: a name, an IPv4 address or a bracketed IPv6 address; port 3632 and 2 jobs unless
    given."""
    match = _HOST.match(text.strip())
    if match is None:
        raise InputError(f"distcc host {text!r}: expected HOST[:PORT][/JOBS], e.g. 10.0.0.5:3632/8")
    port = int(match["port"] or DISTCC_PORT)
    jobs = int(match["jobs"] or DISTCC_JOBS)
    if not 0 < port < 65536:
        raise InputError(f"distcc host {text!r}: port {port} is not between 1 and 65535")
    if jobs < 1:
        raise InputError(f"distcc host {text!r}: a host needs at least one job slot")
    return DistccHost(match["host"], port, jobs)


@dataclass(frozen=True)
class CcacheRemote:
    """ccache's http remote storage (ccache >= 4.4): read-write for builders, read-only for CI consumers."""

    host: str
    port: int
    path: str = "/"
    read_only: bool = False

    def __str__(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}" + (f"|{READ_ONLY}" if self.read_only else "")

    def inside(self, port: int) -> str:
        """remote_storage as the sandbox's ccache uses it: the relay's loopback port stands for the host."""
        return f"http://127.0.0.1:{port}{self.path}" + (f"|{READ_ONLY}" if self.read_only else "")


def parse_ccache_remote(text: str) -> CcacheRemote:
    url, _, attributes = text.strip().partition("|")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
        raise InputError(f"ccache remote {text!r}: expected http://HOST[:PORT][/PATH][|read-only] "
                         "(the build reaches it through a relay: plain http only)")
    if attributes not in ("", READ_ONLY):
        raise InputError(f"ccache remote {text!r}: the only attribute clipbuild passes is |{READ_ONLY}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return CcacheRemote(host, parts.port or 80, parts.path or "/", attributes == READ_ONLY)


@dataclass(frozen=True)
class ScaleOut:
    distcc: tuple[DistccHost, ...] = ()
    ccache_remote: CcacheRemote | None = None

    @property
    def active(self) -> bool:
        return bool(self.distcc) or self.ccache_remote is not None

    def to_env(self) -> dict[str, str]:
        return {ENV_DISTCC: " ".join(str(h) for h in self.distcc),
                ENV_CCACHE_REMOTE: str(self.ccache_remote) if self.ccache_remote else ""}


def from_env(env: Mapping[str, str] | None = None) -> ScaleOut:
    env = os.environ if env is None else env
    hosts = tuple(parse_host(h) for h in env.get(ENV_DISTCC, "").split())
    remote = env.get(ENV_CCACHE_REMOTE, "").strip()
    return ScaleOut(hosts, parse_ccache_remote(remote) if remote else None)


def from_options(hosts: Sequence[str], ccache_remote: str | None, env: Mapping[str, str] | None = None) -> ScaleOut:
    """The command line's choices; each falls back to its environment variable when not given."""
    base = from_env(env)
    return ScaleOut(tuple(parse_host(h) for h in hosts) or base.distcc,
                    parse_ccache_remote(ccache_remote) if ccache_remote else base.ccache_remote)


def total_jobs(hosts: Sequence[DistccHost], local_jobs: int) -> int:
    return local_jobs + sum(h.jobs for h in hosts)


def makeopts(hosts: Sequence[DistccHost], local_jobs: int) -> str:
    """Gentoo's distcc rule: as many make jobs as job slots in total (the hosts' and this machine's), the load
    limit this machine's own (preprocessing and links stay here)."""
    return f"-j{total_jobs(hosts, local_jobs)} -l{local_jobs}"


def distcc_hosts(hosts: Sequence[DistccHost], ports: Sequence[int], local_jobs: int) -> str:
    """DISTCC_HOSTS inside the sandbox: each host as its relay port on loopback, then this machine; distcc
    picks among them in random order (--randomize: otherwise it fills the first host before any other).
    No ",cpp": pump mode stays off, so helpers never need the sandbox's headers."""
    remote = [f"127.0.0.1:{port}/{host.jobs}" for host, port in zip(hosts, ports, strict=True)]
    return " ".join(["--randomize", *remote, f"localhost/{local_jobs}"])
