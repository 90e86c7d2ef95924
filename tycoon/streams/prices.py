"""The PRICES stream's readers: the SLS warm start and a host's price history.

Both verify every stored envelope exactly as live traffic is verified — signature,
subject binding, kind, the host key speaking for its own host, a well-formed body —
except freshness and replay, which a log replays by design. The SLS warm start feeds
the stored envelopes through the SLS's own ingest path (:class:`PriceIngest` without a
replay guard), with the time the server stored each message as "received", so a host
that fell silent long ago comes back dormant, not live.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Any

from tycoon.bus import subjects
from tycoon.bus.envelope import DEFAULT_LIMITS, Limits
from tycoon.bus.keys import subject_id
from tycoon.bus.verify import verify_stored
from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.messages.price import PriceUpdate
from tycoon.sls.ingest import PriceIngest, open_chunk
from tycoon.streams.config import PRICES, PRICES_SPEC, StreamSpec, ensure_stream
from tycoon.streams.reader import StoredMsg, read_stream

NS = 1_000_000_000
WARM_MAX_MESSAGES = 200_000
"""At most this many of the newest stored updates are replayed (≈ 10 s of checks)."""
CHUNK = 256


async def warm_start(sls: Any, *, since_s: float, spec: StreamSpec = PRICES_SPEC,
                     max_messages: int = WARM_MAX_MESSAGES, budget_s: float = 60.0,
                     timeout: float = 2.0) -> collections.Counter[str]:
    """Replay the last ``since_s`` seconds of PRICES into an SLS's registry.

    ``sls`` is a :class:`~tycoon.sls.service.SLSService` (its ``bus`` and ``registry``).
    Creates the stream if it is missing. Without JetStream it logs and returns at once
    (a cold start). Returns the outcomes (accepted, out_of_order, bad_signature, ...).
    """
    log = get_logger("sls.warm_start")
    counters: collections.Counter[str] = collections.Counter()
    js = sls.bus.nc.jetstream(timeout=timeout)
    started = time.monotonic()
    try:
        await ensure_stream(js, spec)
    except Rejected as error:
        log.info("cold start: no price log", reason=error.message)
        counters["unavailable"] += 1
        return counters
    replay = PriceIngest(sls.registry, guard=None, limits=sls.bus.limits, workers=0)
    chunk: list[StoredMsg] = []
    since_ns = time.time_ns() - int(since_s * NS)
    try:
        async for msg in read_stream(js, spec.name, subject=subjects.PRICES_ALL,
                                     since_ns=since_ns, newest=max_messages):
            if msg.stored_ns < since_ns:
                continue
            chunk.append(msg)
            if len(chunk) >= 2 * CHUNK:
                await _apply(replay, chunk, sls.bus.limits)
                chunk = []
                if time.monotonic() - started > budget_s:
                    counters["cut_short"] += 1
                    break
        await _apply(replay, chunk, sls.bus.limits)
    except Rejected as error:
        log.warning("price log unreadable; starting with what was replayed",
                    reason=error.message)
        counters["unavailable"] += 1
    counters.update(replay.counters)
    log.info("warm start", seconds=round(time.monotonic() - started, 2),
             hosts=len(sls.registry), **counters)
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


@dataclass(frozen=True, slots=True)
class PricePoint:
    """One verified price update of one resource of one host."""

    ts_ns: int
    seq: int
    capacity: int
    price: float
    unit_price: float
    utilization: float
    bidders: int

    def to_dict(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "seq": self.seq, "capacity": self.capacity,
                "price": self.price, "unit_price": self.unit_price,
                "utilization": self.utilization, "bidders": self.bidders}


def price_point(msg: StoredMsg, host: str, resource: str,
                limits: Limits = DEFAULT_LIMITS) -> PricePoint | None:
    """Verify one stored price envelope of ``host``; its ``resource`` offer, or None if the
    host does not sell it. Raises :class:`Rejected` for anything that does not verify."""
    if msg.subject != subjects.price(host):
        raise Rejected("wrong_subject", f"stored on {msg.subject!r}, not {host!r}'s prices")
    env = verify_stored(msg.data, msg.subject, "price", limits=limits)
    if subject_id(env.sender) != host:
        raise Rejected("forbidden", "the signer is not this host")
    update = PriceUpdate.from_body(env.body)
    if update.host != host:
        raise Rejected("forbidden", "the body names another host")
    offer = update.resources.get(resource)
    if offer is None:
        return None
    return PricePoint(env.ts_ns, update.seq, offer.capacity, offer.price, offer.unit_price,
                      offer.utilization, offer.bidders)


History = tuple[list[PricePoint], collections.Counter[str]]


async def price_history(js: Any, host: str, resource: str, *, since_ns: int,
                        limit: int | None = None) -> History:
    """Every verified update of ``host``'s ``resource`` stored since ``since_ns``, oldest
    first, and the count of stored messages refused (by code)."""
    points: list[PricePoint] = []
    refused: collections.Counter[str] = collections.Counter()
    async for msg in read_stream(js, PRICES, subject=subjects.price(host), since_ns=since_ns,
                                 newest=limit):
        try:
            point = price_point(msg, host, resource)
        except Rejected as error:
            refused[error.code] += 1
            continue
        if point is not None:
            points.append(point)
    points.sort(key=lambda p: (p.ts_ns, p.seq))
    return points, refused
