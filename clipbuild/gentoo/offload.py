"""One emerge run's way out of its sandbox, to the listed distcc hosts and ccache remote only.

The build sandbox keeps its own network namespace (loopback only, `--unshare-all`). For each distcc host and the
ccache remote, clipbuild listens on a unix socket in a scratch folder bind-mounted into the sandbox at /build/relay
and relays each stream to that one address (clipbuild.gentoo.guest.relay). Inside, the same relay, started by the
command's wrapper before emerge, listens on 127.0.0.1:PORT and relays to the socket. DISTCC_HOSTS and ccache's
remote_storage name those loopback ports. Nothing else is reachable: there is no route, no DNS, no proxy.

The counts of the run (compiles per distcc host from distcc's own log, fallbacks, relay failures, ccache hits
local/remote and misses from `ccache --print-stats`) are returned as a dict for the step's compiles.json.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipbuild.gentoo import distcc
from clipbuild.gentoo.buildroot import Mount
from clipbuild.gentoo.guest import relay
from clipbuild.gentoo.scaleout import ScaleOut, distcc_hosts, makeopts

RELAY_MOUNT = "/build/relay"
RELAY_SCRIPT = "/build/relay.py"
DISTCC_PORT_BASE = 36320  # inside the sandbox: host i is 127.0.0.1:36320+i
CCACHE_PORT = 38080
DISTCC_LOG = "/var/log/portage/distcc.log"
READY_TRIES = 100  # tenths of a second the wrapper waits for the sandbox's relay to listen
CCACHE_COUNTERS = {"local_storage_hit": "local_hits", "remote_storage_hit": "remote_hits",
                   "cache_miss": "misses", "remote_storage_error": "remote_errors"}


class HostRelay:
    """The host side: one unix socket per route in `directory`, each relayed to its (host, port)."""

    def __init__(self, directory: Path, routes: Mapping[str, tuple[str, int]]):
        self.directory = directory
        self.routes = dict(routes)
        self.stats = {name: relay.RouteStats() for name in routes}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listeners: list[socket.socket] = []

    def socket_path(self, name: str) -> Path:
        return self.directory / f"{name}.sock"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, (host, port) in self.routes.items():
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(self.socket_path(name)))
            listener.listen(64)
            listener.settimeout(0.5)
            self._listeners.append(listener)
            thread = threading.Thread(target=relay.serve, daemon=True,
                                      args=(listener, relay.tcp_connector(host, port), self.stats[name], self._stop))
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for listener in self._listeners:
            listener.close()

    def __enter__(self) -> HostRelay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wrapper(forwards: Mapping[int, str]) -> tuple[str, ...]:
    """argv put before the sandboxed command: start the inside relay, wait until it listens, then exec."""
    pairs = " ".join(shlex.quote(f"{port}={path}") for port, path in forwards.items())
    script = (f"/usr/bin/python3 {RELAY_SCRIPT} {pairs} > /tmp/relay.ready 2> /tmp/relay.err &\n"
              "i=0\n"
              'while [ "$(cat /tmp/relay.ready 2> /dev/null)" != ready ]; do\n'
              f'  i=$((i + 1)); if [ $i -gt {READY_TRIES} ]; then echo "the sandbox relay did not start:" >&2; '
              "cat /tmp/relay.err >&2; exit 1; fi\n"
              "  sleep 0.1\n"
              "done\n"
              'exec "$@"\n')
    return ("/bin/sh", "-c", script, "sh")


@dataclass
class Offload:
    """What an emerge run gets: extra mounts, /usr/lib entries, environment, make.conf lines, argv prefix."""

    scale: ScaleOut
    relay: HostRelay
    mounts: list[Mount] = field(default_factory=list)
    usr_lib: dict[str, Path] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    make_conf: str = ""
    prefix: tuple[str, ...] = ()

    def counts(self, logs: Path, ccache_before: Mapping[str, int], ccache_after: Mapping[str, int]) -> dict[str, Any]:
        """The run's counts, hosts by their real names (the sandbox saw them as loopback ports)."""
        client = distcc.read_client_log(logs / Path(DISTCC_LOG).name)
        hosts: dict[str, dict[str, Any]] = {}
        for index, host in enumerate(self.scale.distcc):
            inside = f"127.0.0.1:{DISTCC_PORT_BASE + index}/{host.jobs}"
            stats = self.relay.stats[f"distcc-{index}"]
            hosts[str(host)] = {"compiles": client.compiled.get(inside, 0),
                                "fell_back": client.fell_back.get(inside.rsplit("/", 1)[0], 0),
                                "unreachable": stats.failures, "first_error": stats.first_error}
        result: dict[str, Any] = {}
        if self.scale.distcc:
            result["distcc"] = {"hosts": hosts, "local": client.compiled.get("localhost", 0),
                                "kept_local": client.kept_local,
                                "by_distcc_name": client.compiled}
        if ccache_after:
            result["ccache"] = ccache_delta(ccache_before, ccache_after)
            if self.scale.ccache_remote is not None:
                result["ccache"]["remote"] = str(self.scale.ccache_remote)
        return result


def summary(counts: Mapping[str, Any]) -> list[str]:
    """Where this run's compiles went, one line per tool: distcc per host and here, ccache hits and misses."""
    lines = []
    if "distcc" in counts:
        spread = [f"{row['compiles']} on {host}" for host, row in counts["distcc"]["hosts"].items()]
        lines.append(f"distcc: {', '.join(spread)}, {counts['distcc']['local']} here")
    cache = counts.get("ccache", {})
    if any(cache.get(k) for k in ("local_hits", "remote_hits", "misses")):
        lines.append(f"ccache: {cache['local_hits']} local hits, {cache['remote_hits']} remote hits, "
                     f"{cache['misses']} misses" + (f", {cache['remote_errors']} remote errors"
                                                   if cache.get("remote_errors") else ""))
    return lines


def problems(counts: Mapping[str, Any]) -> list[str]:
    """One line per distcc host that failed during the run: what happened and that compiles ran here."""
    lines = []
    for host, row in counts.get("distcc", {}).get("hosts", {}).items():
        if row["unreachable"] or row["fell_back"]:
            reason = f" ({row['first_error']})" if row["first_error"] else ""
            lines.append(f"distcc host {host} failed{reason}: {row['unreachable']} connections refused or lost, "
                         f"{row['fell_back']} compiles it failed ran elsewhere (here at the latest)")
    return lines


@contextmanager
def offload(scale: ScaleOut, local_jobs: int, say: Callable[[str], None]) -> Iterator[Offload | None]:
    """The relay running for one emerge run (None when no host or remote is configured). Its sockets live in a
    short private folder under /tmp (a unix socket's path is limited to 107 bytes), removed afterwards."""
    if not scale.active:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="clipbuild-relay-"))
    try:
        with _relayed(scale, folder, local_jobs, say) as result:
            yield result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _relayed(scale: ScaleOut, folder: Path, local_jobs: int, say: Callable[[str], None]) -> Iterator[Offload]:
    routes = {f"distcc-{i}": (h.address, h.port) for i, h in enumerate(scale.distcc)}
    if scale.ccache_remote is not None:
        routes["ccache"] = (scale.ccache_remote.host.strip("[]"), scale.ccache_remote.port)
    with HostRelay(folder, routes) as host_relay:
        result = Offload(scale, host_relay, [Mount(host_relay.directory, RELAY_MOUNT, writable=True),
                                             Mount(Path(relay.__file__), RELAY_SCRIPT)])
        # Portage's network-sandbox would give each phase a network namespace of its own, without the relay's
        # ports: the phases share the build sandbox's instead, which has loopback and the relay only.
        # make.conf files are one layer: a later FEATURES= replaces the profile's unless it extends ${FEATURES}.
        result.make_conf = 'FEATURES="${FEATURES} -network-sandbox"\n'
        forwards = {DISTCC_PORT_BASE + i: f"{RELAY_MOUNT}/distcc-{i}.sock" for i in range(len(scale.distcc))}
        if scale.distcc:
            tools = distcc.ensure_tools(say)
            result.mounts += tools.mounts
            result.usr_lib.update(tools.usr_lib)
            result.env.update(distcc.client_env(DISTCC_LOG))
            ports = list(forwards)
            result.env["DISTCC_HOSTS"] = distcc_hosts(scale.distcc, ports, local_jobs)
            result.make_conf += (f'FEATURES="${{FEATURES}} distcc"\nMAKEOPTS="{makeopts(scale.distcc, local_jobs)}"\n'
                                 f'DISTCC_HOSTS="{result.env["DISTCC_HOSTS"]}"\n')
            say(f"distcc: {', '.join(str(h) for h in scale.distcc)}; MAKEOPTS={makeopts(scale.distcc, local_jobs)}")
        if scale.ccache_remote is not None:
            forwards[CCACHE_PORT] = f"{RELAY_MOUNT}/ccache.sock"
            result.env["CCACHE_REMOTE_STORAGE"] = scale.ccache_remote.inside(CCACHE_PORT)
            say(f"ccache remote: {scale.ccache_remote}")
        result.prefix = wrapper(forwards)
        yield result


def ccache_counters(run_in_sandbox: Callable[[Sequence[str]], str]) -> dict[str, int]:
    """ccache's cumulative counters (`ccache --print-stats`, tab-separated) as the sandbox sees them."""
    counters = {}
    for line in run_in_sandbox(["ccache", "--print-stats"]).splitlines():
        name, _, value = line.partition("\t")
        if value.strip().isdigit():
            counters[name] = int(value)
    return counters


def ccache_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """This run's ccache hits (local, remote), misses and remote errors: the counters' growth."""
    return {name: after.get(key, 0) - before.get(key, 0) for key, name in CCACHE_COUNTERS.items()}
