"""The SLS warm start: replay the stored PRICES log into the registry.

Stored envelopes go through the SLS's own ingest path (:class:`PriceIngest` without a replay
guard), verified as live traffic is except for freshness and replay (a log replays by design),
with the time the server stored each message as "received", so a host that fell silent long
ago comes back dormant, not live.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from tycoon.bus import subjects
from tycoon.bus.envelope import Limits
from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.sls.ingest import PriceIngest, open_chunk
from tycoon.sls.registry import Registry
from tycoon.streams.config import PRICES_SPEC, StreamSpec, ensure_stream
from tycoon.streams.reader import StoredMsg, read_stream
from tycoon.units import NS

WARM_MAX_MESSAGES = 200_000
"""At most this many of the newest stored updates are replayed (≈ 10 s of checks)."""
CHUNK = 256


async def warm_start(js: Any, registry: Registry, limits: Limits, *, since_s: float,
                     spec: StreamSpec = PRICES_SPEC, max_messages: int = WARM_MAX_MESSAGES,
                     budget_s: float = 60.0) -> collections.Counter[str]:
    """Replay the last ``since_s`` seconds of PRICES (read through the JetStream context
    ``js``) into ``registry``, opening envelopes with ``limits``.

    Creates the stream if it is missing. Without JetStream it logs and returns at once
    (a cold start). Returns the outcomes (accepted, out_of_order, bad_signature, ...).
    """
    log = get_logger("sls.warm_start")
    counters: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    try:
        await ensure_stream(js, spec)
    except Rejected as error:
        log.info("cold start: no price log", reason=error.message)
        counters["unavailable"] += 1
        return counters
    replay = PriceIngest(registry, guard=None, limits=limits, workers=0)
    chunk: list[StoredMsg] = []
    since_ns = time.time_ns() - int(since_s * NS)
    try:
        async for msg in read_stream(js, spec.name, subject=subjects.PRICES_ALL,
                                     since_ns=since_ns, newest=max_messages):
            if msg.stored_ns < since_ns:
                continue
            chunk.append(msg)
            if len(chunk) >= 2 * CHUNK:
                await _apply(replay, chunk, limits)
                chunk = []
                if time.monotonic() - started > budget_s:
                    counters["cut_short"] += 1
                    break
        await _apply(replay, chunk, limits)
    except Rejected as error:
        log.warning("price log unreadable; starting with what was replayed",
                    reason=error.message)
        counters["unavailable"] += 1
    counters.update(replay.counters)
    log.info("warm start", seconds=round(time.monotonic() - started, 2),
             hosts=len(registry), **counters)
    return counters


async def _apply(replay: PriceIngest, chunk: list[StoredMsg], limits: Limits) -> None:
    """Verify a chunk in two threads (libsodium releases the GIL), apply it in order."""
    if not chunk:
        return
    raw = [(m.subject, m.data) for m in chunk]
    halves = [raw[i : i + CHUNK] for i in range(0, len(raw), CHUNK)]
    opened = await asyncio.gather(*(asyncio.to_thread(open_chunk, h, limits) for h in halves))
    items = [item for part in opened for item in part]
    for msg, item in zip(chunk, items, strict=True):
        replay.apply(msg.subject, item, msg.stored_ns)
