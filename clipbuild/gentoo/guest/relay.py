"""A byte relay between a listening socket and a target: how the build sandbox reaches the listed distcc hosts
and the ccache HTTP remote, and nothing else.

The build sandbox has its own network namespace with loopback only. For each allowed target, clipbuild (the host
side) listens on a unix socket that is bind-mounted into the sandbox and connects each accepted stream to that
one target's TCP address. Inside the sandbox this same file runs as a script (`python3 relay.py PORT=SOCKET...`):
it listens on 127.0.0.1:PORT and connects each accepted stream to the unix socket. distcc and ccache talk to
127.0.0.1:PORT as if it were the host; no route to anything else exists.

Standard library only: the build root's own Python runs it, and clipbuild imports it for the host side.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

CONNECT_TIMEOUT = 5.0  # seconds to reach a target; a dead host then costs one fallback, not a hang
CHUNK = 65536


@dataclass
class RouteStats:
    """What went through one route: streams relayed, streams whose target could not be reached (with the
    first reason), bytes each way."""

    connections: int = 0
    failures: int = 0
    first_error: str = ""
    sent: int = 0
    received: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def failed(self, reason: str) -> None:
        with self.lock:
            self.failures += 1
            self.first_error = self.first_error or reason

    def as_dict(self) -> dict[str, int | str]:
        return {"connections": self.connections, "failures": self.failures, "first_error": self.first_error,
                "sent": self.sent, "received": self.received}


def _copy(source: socket.socket, target: socket.socket, count: Callable[[int], None]) -> None:
    """Bytes from source to target until source's end is closed; then target's writing end is closed."""
    try:
        while data := source.recv(CHUNK):
            target.sendall(data)
            count(len(data))
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def splice(client: socket.socket, upstream: socket.socket, stats: RouteStats) -> None:
    """Both directions between two connected sockets until both are done; then both are closed."""

    def up(n: int) -> None:
        with stats.lock:
            stats.sent += n

    def down(n: int) -> None:
        with stats.lock:
            stats.received += n

    back = threading.Thread(target=_copy, args=(upstream, client, down), daemon=True)
    back.start()
    _copy(client, upstream, up)
    back.join()
    client.close()
    upstream.close()


def _handle(client: socket.socket, connect: Callable[[], socket.socket], stats: RouteStats) -> None:
    try:
        upstream = connect()
    except OSError as exc:
        stats.failed(f"{exc.strerror or exc}")
        client.close()
        return
    with stats.lock:
        stats.connections += 1
    splice(client, upstream, stats)


def serve(listener: socket.socket, connect: Callable[[], socket.socket], stats: RouteStats,
          stop: threading.Event) -> None:
    """Accept on `listener` until `stop` is set (the listener has a timeout), relaying each stream to a fresh
    `connect()`; a target that cannot be reached closes the stream at once (distcc then compiles locally)."""
    while not stop.is_set():
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            if stop.is_set():
                return
            raise
        client.settimeout(None)
        threading.Thread(target=_handle, args=(client, connect, stats), daemon=True).start()


def tcp_connector(host: str, port: int) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        return socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    return connect


def unix_connector(path: str) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        sock.settimeout(None)
        return sock
    return connect


def parse_forward(text: str) -> tuple[int, str]:
    """PORT=SOCKET, as the script takes it."""
    port, sep, path = text.partition("=")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not path:
        raise ValueError(f"expected PORT=SOCKET, got {text!r}")
    return int(port), path


def main(argv: list[str]) -> int:
    """Inside the sandbox: listen on 127.0.0.1:PORT for each PORT=SOCKET and relay to SOCKET; print "ready"
    once every port listens, then serve until the sandbox ends."""
    stop = threading.Event()
    threads = []
    for port, path in (parse_forward(a) for a in argv):
        listener = socket.create_server(("127.0.0.1", port))
        listener.settimeout(1.0)
        threads.append(threading.Thread(target=serve, args=(listener, unix_connector(path), RouteStats(), stop),
                                        daemon=True))
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
