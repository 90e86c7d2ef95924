"""``tycoon up``'s hold on its state directory: one market at a time (a ``flock``), and
the port it used last. (Readiness is a pipe per child: tycoon.supervisor.)"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tycoon.deploy import Deployment
from tycoon.natsserver import port_is_free  # noqa: F401  (cli.up and tests import it here)

LOCK_NAME = "up.lock"


class StateLock:
    """An exclusive ``flock`` on ``<state>/up.lock`` for as long as a market runs there; the
    file names the holder's pid and URL so that a second ``up`` can say who runs it."""

    def __init__(self, state: Path) -> None:
        self.path = state / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock; None on success, else why not (the holder's pid and URL)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder: dict[str, Any] = {}
            with contextlib.suppress(ValueError, OSError):
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            os.close(fd)
            pid = holder.get("pid", "?")
            return (f"a market already runs in {self.path.parent} (pid {pid}, "
                    f"{holder.get('url') or 'starting'}); stop it first (Ctrl-C in its "
                    f"terminal, or kill {pid})")
        self.fd = fd
        self.record("")
        return None

    def record(self, url: str) -> None:
        """Write who holds the lock (our pid and the market's URL)."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, json.dumps({"pid": os.getpid(), "url": url}).encode(), 0)

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases the flock)."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


def last_port(state: Path) -> int | None:
    """The loopback port this state directory's market used last, if any."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        url = Deployment.load(state).nats_url
        if url.startswith("nats://127.0.0.1:"):
            return urlsplit(url).port
    return None
