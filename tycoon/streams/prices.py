"""The PRICES stream's reader for a host's price history (the SLS warm start, which replays
the same stream into its registry, is :mod:`tycoon.sls.warm`).

Every stored envelope is verified exactly as live traffic is verified — signature, subject
binding, kind, the host key speaking for its own host, a well-formed body — except freshness
and replay, which a log replays by design.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from tycoon.bus import subjects
from tycoon.bus.envelope import DEFAULT_LIMITS, Limits
from tycoon.bus.keys import subject_id
from tycoon.bus.verify import verify_stored
from tycoon.errors import Rejected
from tycoon.messages.price import PriceUpdate
from tycoon.streams.config import PRICES
from tycoon.streams.reader import StoredMsg, read_stream


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
