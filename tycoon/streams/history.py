"""Price history for everyone, JetStream rights for no one: the SLS's ``sls.history`` API.

Users, agents and brokers hold no JetStream API right at all (a JetStream answer goes to
whatever reply subject the request names, so even a read right lets a user steer the
server's own answers, e.g. onto the purge API: docs/security.md). They ask the SLS,
which owns PRICES, for one host's stored price envelopes a page at a time; every
envelope is the host's own signed message, so the client verifies each one itself (the
SLS can omit messages, never forge one). The SLS's reply goes only to the requester's
inbox, like any service's.

Request body: :class:`~tycoon.messages.sls.SlsHistory` (``host``, ``since_ns``,
``after_seq`` (0: from since_ns), ``limit`` (1..PAGE)); reply body:
:class:`~tycoon.messages.sls.SlsHistoryReply` (``messages``: ``[[seq, stored_ns, envelope
bytes], ...]``, ``more``; at most ``PAGE`` messages and ``PAGE_BYTES``).
"""

from __future__ import annotations

import collections
from typing import Any

from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.keys import SUBJECT_ID
from tycoon.errors import Rejected
from tycoon.messages.sls import SlsHistory, SlsHistoryReply
from tycoon.streams.config import PRICES
from tycoon.streams.prices import History, PricePoint, price_point
from tycoon.streams.reader import StoredMsg, read_stream

PAGE = 1000
PAGE_BYTES = 512 * 1024
"""A page stays well under the 1 MiB envelope limit whatever the envelopes' sizes."""
_HOST_ID = SUBJECT_ID


async def history_page(js: Any, body: Any) -> dict[str, Any]:
    """One page of ``host``'s stored price envelopes (the SLS's ``sls.history`` handler)."""
    request = SlsHistory.from_body(body)
    host, since_ns = request.host, request.since_ns
    after_seq, limit = request.after_seq or 0, request.limit or PAGE
    if not _HOST_ID.fullmatch(host):
        raise Rejected("malformed", "host must be a 16-character host id")
    if since_ns < 0 or after_seq < 0 or not 1 <= limit <= PAGE:
        raise Rejected("malformed", f"since_ns, after_seq >= 0; limit in 1..{PAGE}")
    start = {"start_seq": after_seq + 1} if after_seq else {"since_ns": since_ns}
    out: list[list[Any]] = []
    size = 0
    async for msg in read_stream(js, PRICES, subject=subjects.price(host), limit=limit + 1,
                                 **start):
        if len(out) == limit or size + len(msg.data) > PAGE_BYTES:
            return SlsHistoryReply(out, True).to_body()
        out.append([msg.seq, msg.stored_ns, msg.data])
        size += len(msg.data) + 24
    return SlsHistoryReply(out, False).to_body()


async def price_history_via_sls(bus: Bus, host: str, resource: str, *, since_ns: int,
                                limit: int | None = None, timeout: float = 10.0) -> History:
    """Like :func:`tycoon.streams.prices.price_history`, through the SLS: every verified
    update of ``host``'s ``resource`` stored since ``since_ns`` (the newest ``limit``),
    oldest first, and the count of envelopes refused (by code)."""
    points: list[PricePoint] = []
    refused: collections.Counter[str] = collections.Counter()
    after = 0
    subject = subjects.price(host)
    while True:
        page = await history_request(bus, host, since_ns, after, timeout)
        rows, before = page.messages, after
        for row in rows:
            try:
                seq, stored_ns, data = _row(row)
                if seq <= after:
                    raise Rejected("malformed", "sequence numbers must increase")
                after = seq
                point = price_point(StoredMsg(seq, subject, data, {}, stored_ns), host,
                                    resource)
            except Rejected as error:
                refused[error.code] += 1
                continue
            if point is not None:
                points.append(point)
        if not rows or not page.more or after == before:
            break  # the end, or a page that did not move forward
    points.sort(key=lambda p: (p.ts_ns, p.seq))
    return (points[-limit:] if limit else points), refused


async def history_request(bus: Bus, host: str, since_ns: int, after_seq: int,
                          timeout: float) -> SlsHistoryReply:
    """Ask the SLS for one page of ``host``'s stored price envelopes after ``after_seq``
    (0: from ``since_ns``); the reply, checked (``malformed`` naming the bad field)."""
    reply = await bus.request(subjects.sls("history"), "sls.history",
                              SlsHistory(host, since_ns, after_seq, PAGE).to_body(),
                              timeout=timeout)
    return SlsHistoryReply.from_body(reply.body)  # type: ignore[no-any-return]


def _row(row: Any) -> tuple[int, int, bytes]:
    if (not isinstance(row, list) or len(row) != 3 or not isinstance(row[0], int)
            or not isinstance(row[1], int) or not isinstance(row[2], bytes)):
        raise Rejected("malformed", "a history row is [seq, stored_ns, bytes]")
    return row[0], row[1], row[2]
