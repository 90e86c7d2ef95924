"""Where the dashboard's browser connects and as whom (pure but for reading files).

The deployment's nats-server config carries a ``websocket { listen: "host:port" }`` block
(tycoon.natsconf.render_websocket); the browser signs the server's nkey challenge with the
home's ``viewer`` key, whose role reads the public feeds and publishes nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

from tycoon.natsconf import CONFIG_NAME, Principal
from tycoon.natsserver import free_port, port_is_free

VIEWER_KEY = "viewer"
"""The key name of a home's read-only dashboard principal (role ``viewer``)."""

_WS_LISTEN = re.compile(r'websocket\s*\{\s*(?:#[^\n]*\n\s*)*listen:\s*"([^"]+):(\d+)"')
_WS_TLS = re.compile(r"websocket\s*\{[^}]*?\btls\s*\{")


def websocket_listen(config_text: str) -> tuple[str, int] | None:
    """The ``(host, port)`` of a config's websocket listener, None without one."""
    found = _WS_LISTEN.search(config_text)
    return (found.group(1), int(found.group(2))) if found else None


def websocket_url(home: Path) -> str | None:
    """``ws://host:port`` (``wss://`` with TLS) of the home's nats.conf, None if absent."""
    try:
        text = (home / CONFIG_NAME).read_text()
    except FileNotFoundError:
        return None
    where = websocket_listen(text)
    if where is None:
        return None
    host, port = where
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"{'wss' if _WS_TLS.search(text) else 'ws'}://{host}:{port}"


def websocket_port(home: Path, host: str = "127.0.0.1") -> int:
    """The port the home's websocket listener keeps across restarts: the one in its
    current nats.conf while it is free (or its own server runs), else a new free one."""
    try:
        where = websocket_listen((home / CONFIG_NAME).read_text())
    except FileNotFoundError:
        where = None
    if where is not None and ((home / "pids" / "nats.pid").exists()
                              or port_is_free(where[1], host)):
        return where[1]
    return free_port(host)


def viewer_principal(public_key: str) -> Principal:
    """The dashboard's read-only principal."""
    return Principal(public_key, "viewer", VIEWER_KEY)


