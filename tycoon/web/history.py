"""The dashboard's price history: raw stored envelopes, fetched for the page to verify.

The page's ``viewer`` may not send requests or touch JetStream (docs/security.md), so
``tycoon web`` fetches a host's recent price envelopes itself — through the SLS's
``sls.history`` (tycoon.streams.history), or, when no SLS answers and its key holds
JetStream read rights, straight from PRICES with direct gets — and hands them to the page
**unverified and unchanged**: the browser checks every host signature (verify.js), so
neither this server nor the SLS can make it draw a price a host did not sign.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from tycoon.bus import subjects
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import SUBJECT_ID, Identity
from tycoon.errors import Rejected
from tycoon.streams.config import PRICES
from tycoon.streams.history import history_request
from tycoon.streams.reader import read_stream
from tycoon.units import NS

HISTORY_POINTS = 60
"""Envelopes per host handed to the page: its sparklines hold the last 60 updates."""
HISTORY_SPAN_NS = 3600 * NS
"""How far back the page's history reaches."""
HOST_ID = SUBJECT_ID

Fetch = Callable[[str], tuple[str, list[bytes]]]
"""``fetch(host id) -> (source, envelopes oldest first)``; raises Rejected."""


async def stored_envelopes(bus: Bus, host: str, *, since_ns: int,
                           newest: int = HISTORY_POINTS,
                           timeout: float = 5.0) -> tuple[str, list[bytes]]:
    """The newest ``newest`` stored price envelopes of ``host`` since ``since_ns``, as
    stored (nothing verified, nothing decoded), and where they came from: ``"sls"``, or
    ``"jetstream"`` when no SLS answers. Raises Rejected("unavailable") with neither."""
    if not HOST_ID.fullmatch(host):
        raise Rejected("malformed", "host must be a 16-character host id")
    out: list[bytes] = []
    after = 0
    try:
        while True:
            page = await history_request(bus, host, since_ns, after, timeout)
            rows, before = page.messages, after
            for row in rows:
                if (isinstance(row, list) and len(row) == 3 and isinstance(row[0], int)
                        and isinstance(row[2], bytes) and row[0] > after):
                    after = row[0]
                    out.append(row[2])
            if not rows or not page.more or after == before:
                return "sls", out[-newest:]
    except Rejected as error:
        if error.code != "unavailable":
            raise
    # no SLS: direct gets, with this key's JetStream rights (the operator's), if any
    js = bus.nc.jetstream(timeout=timeout)
    stored = [msg.data async for msg in read_stream(js, PRICES, subject=subjects.price(host),
                                                     since_ns=since_ns, newest=newest)]
    return "jetstream", stored


class HistorySource:
    """A NATS connection on its own event loop thread, for the web server's handler
    threads: ``fetch(host)`` blocks until that host's envelopes are in (or ``timeout``)."""

    def __init__(self, url: str, identity: Identity, *, timeout: float = 8.0,
                 span_ns: int = HISTORY_SPAN_NS, newest: int = HISTORY_POINTS) -> None:
        self.url, self.identity, self.timeout = url, identity, timeout
        self.span_ns, self.newest = span_ns, newest
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tycoon-web-history",
                                       daemon=True)
        self.thread.start()
        self._bus: Bus | None = None
        self._lock: asyncio.Lock | None = None

    async def _connected(self) -> Bus:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._bus is None or self._bus.nc.is_closed:
                self._bus = await open_bus(self.url, self.identity, name="tycoon-web-history")
            return self._bus

    async def _fetch(self, host: str) -> tuple[str, list[bytes]]:
        bus = await self._connected()
        return await stored_envelopes(bus, host, since_ns=time.time_ns() - self.span_ns,
                                      newest=self.newest, timeout=self.timeout / 2)

    def fetch(self, host: str) -> tuple[str, list[bytes]]:
        """``(source, envelopes)`` of ``host``, oldest first (see :func:`stored_envelopes`)."""
        future = asyncio.run_coroutine_threadsafe(self._fetch(host), self.loop)
        try:
            return future.result(self.timeout)
        except TimeoutError as exc:
            future.cancel()
            raise Rejected("timeout", "no history within the time limit") from exc
        except Rejected:
            raise
        except Exception as exc:  # nats-py's errors: the page says why
            raise Rejected("unavailable", f"cannot read history: {exc!r}"[:200]) from exc

    def close(self) -> None:
        """Close the connection and stop the loop thread."""
        async def _close() -> None:
            if self._bus is not None:
                await self._bus.close()

        if self.thread.is_alive():
            with contextlib.suppress(Exception):  # on shutdown: nothing to report to
                asyncio.run_coroutine_threadsafe(_close(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


def history_json(fetch: Fetch | None, host: str) -> dict[str, Any]:
    """The body of ``/history?host=<id>``: the envelopes base64-encoded, or why not."""
    if fetch is None:
        return {"host": host, "source": "none", "envelopes": [],
                "error": "this server fetches no history"}
    if not HOST_ID.fullmatch(host):
        return {"host": host, "source": "none", "envelopes": [],
                "error": "host must be a 16-character host id"}
    try:
        source, envelopes = fetch(host)
    except Rejected as error:
        return {"host": host, "source": "none", "envelopes": [],
                "error": f"{error.code}: {error.message}"}
    return {"host": host, "source": source,
            "envelopes": [base64.b64encode(raw).decode() for raw in envelopes]}
