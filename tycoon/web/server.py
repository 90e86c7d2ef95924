"""The dashboard's web server: the package's static files and one ``config.json`` (stdlib
``http.server`` in a thread; no I/O at import).

The page trusts nothing it is told about the market: it connects to nats-server's
WebSocket listener itself and verifies every envelope. ``config.json`` tells it only where
to connect, the read-only viewer's seed (it may read the public feeds and publish
nothing: see docs/security.md), the bank's public key, the deployment's host ids and
display names and budgets. ``/history?host=<id>`` hands out a host's stored price
envelopes exactly as stored (tycoon.web.history); the page verifies each one itself.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from tycoon.web.history import Fetch, history_json

STATIC = resources.files("tycoon.web") / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".md": "text/plain; charset=utf-8"}
_FILES = ("index.html", "dashboard.css", "dashboard.js", "verify.js", "natsws.js",
          "vendor/nacl-fast.min.js", "vendor/msgpack.min.js", "VENDOR.md")
"""Everything the server hands out: a fixed list, so no path ever reaches the disk."""


@dataclass(frozen=True)
class PageConfig:
    """What ``config.json`` tells the page (none of it is market data)."""

    ws_url: str
    viewer_seed: str
    bank_key: str
    names: dict[str, str] = field(default_factory=dict)
    budgets: dict[str, int] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    """Host ids whose history the page fetches before it goes live."""

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()


def _handler(config: PageConfig, history: Fetch | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "tycoon-web"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].split("#", 1)[0].lstrip("/") or "index.html"
            if path == "config.json":
                self._send(config.to_json(), "application/json")
            elif path == "history":
                query = parse_qs(self.path.split("?", 1)[1] if "?" in self.path else "")
                host = (query.get("host") or [""])[0]
                self._send(json.dumps(history_json(history, host)).encode(), "application/json")
            elif path in _FILES:
                suffix = path[path.rfind("."):]
                self._send(STATIC.joinpath(path).read_bytes(), _TYPES[suffix])
            else:
                self.send_error(HTTPStatus.NOT_FOUND)

        def _send(self, body: bytes, kind: str) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the page polls nothing, a log line per file is noise

    return Handler


class DashboardServer:
    """Serves the dashboard on ``host:port`` (0: any free port) from a daemon thread."""

    def __init__(self, config: PageConfig, host: str = "127.0.0.1", port: int = 0,
                 history: Fetch | None = None,
                 on_stop: Callable[[], None] | None = None) -> None:
        """``history``: fetches a host's stored price envelopes for ``/history`` (None:
        the page draws live data only); ``on_stop`` runs after the server stops."""
        self.config, self.history, self.on_stop = config, history, on_stop
        self.httpd = ThreadingHTTPServer((host, port), _handler(config, history))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="tycoon-web",
                                       daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> DashboardServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.on_stop is not None:
            self.on_stop()
