"""A tiny HTTP server with ccache's http remote storage protocol, for tests and bench/ on 127.0.0.1 only.

ccache (>= 4.4, "HTTP storage backend" in its manual) stores an entry with PUT /<path>/<key>, reads it with
GET (404 when absent) and may ask with HEAD; any layout of the key in the path (its default "subdirs": the key's
first two characters as a folder) maps to files under the served folder. A real team uses a web server with
WebDAV PUT (nginx, Apache) or a ccache-aware store; this one counts what it served and stops by itself.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Store(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path, port: int = 0):
        super().__init__(("127.0.0.1", port), Handler)
        self.folder = folder
        self.counts = {"GET hit": 0, "GET miss": 0, "PUT": 0, "HEAD": 0}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/cache"

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def __enter__(self) -> Store:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: Store

    def _path(self) -> Path | None:
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if not parts or any(p in (".", "..") or not p.replace("-", "").replace("_", "").isalnum() for p in parts):
            return None
        return self.server.folder.joinpath(*parts)

    def _reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self._path()
        found = path is not None and path.is_file()
        self.server.count("GET hit" if found else "GET miss")
        self._reply(200, path.read_bytes()) if found and path else self._reply(404)

    def do_HEAD(self) -> None:
        path = self._path()
        self.server.count("HEAD")
        self._reply(200 if path is not None and path.is_file() else 404)

    def do_PUT(self) -> None:
        path = self._path()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if path is None:
            self._reply(400)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        self.server.count("PUT")
        self._reply(201)

    def log_message(self, format: str, *args: object) -> None:
        pass
