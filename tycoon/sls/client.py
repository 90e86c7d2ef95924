"""``SLSClient``: ask the SLS which hosts sell what, at what price, and how prices behave."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.keys import is_key_of
from tycoon.errors import Rejected
from tycoon.messages.sls import SlsHost, SlsHostReply, SlsQueryReply
from tycoon.sls.query import DEFAULT_LIMIT, Query
from tycoon.sls.stats import PriceStatistics


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise Rejected("malformed", f"SLS row field {name!r} is missing or mistyped")
    return value


@dataclass(frozen=True)
class HostRow:
    """One row of a query reply: one host's offer of the queried resource."""

    host: str
    public_key: str
    name: str
    driver: str
    resource: str
    capacity: int
    price: float
    unit_price: float
    utilization: float
    bidders: int
    availability: float
    seq: int
    heartbeat_s: float
    last_seen_ns: int
    statistics: PriceStatistics | None = None

    @property
    def capacity_per_price(self) -> float:
        """Capacity per credit/s of price (inf on a host nobody bids on)."""
        return self.capacity / self.price if self.price > 0 else float("inf")

    @classmethod
    def from_body(cls, body: Any) -> HostRow:
        """Read one reply row (``malformed`` if it is not one)."""
        if not isinstance(body, dict):
            raise Rejected("malformed", "an SLS row is a map")
        number = (int, float)
        stats = body.get("statistics")
        host, key = _field(body, "host", str), _field(body, "public_key", str)
        if not is_key_of(host, key):
            raise Rejected("malformed", "an SLS row's host id is not that of its public key")
        return cls(
            host=host,
            public_key=key,
            name=_field(body, "name", str),
            driver=_field(body, "driver", str),
            resource=_field(body, "resource", str),
            capacity=_field(body, "capacity", int),
            price=float(_field(body, "price", number)),
            unit_price=float(_field(body, "unit_price", number)),
            utilization=float(_field(body, "utilization", number)),
            bidders=_field(body, "bidders", int),
            availability=float(_field(body, "availability", number)),
            seq=_field(body, "seq", int),
            heartbeat_s=float(_field(body, "heartbeat_s", number)),
            last_seen_ns=_field(body, "last_seen_ns", int),
            statistics=None if stats is None else PriceStatistics.from_body(stats),
        )


class SLSClient:
    """Signed requests to the SLS queue group over one :class:`Bus`."""

    def __init__(self, bus: Bus, *, timeout: float = 5.0) -> None:
        self.bus = bus
        self.timeout = timeout

    async def page(
        self,
        resource: str = "cpu",
        *,
        min_capacity: int = 0,
        max_unit_price: float | None = None,
        max_price: float | None = None,
        sort: str = "capacity_per_price",
        offset: int = 0,
        limit: int = DEFAULT_LIMIT,
        statistics: bool = True,
        ties: str = "host",
    ) -> dict[str, Any]:
        """The whole reply body: ``{"total": int, "offset": int, "rows": [row]}``."""
        query = Query(
            resource=resource,
            min_capacity=min_capacity,
            max_unit_price=max_unit_price,
            max_price=max_price,
            sort=sort,
            offset=offset,
            limit=limit,
            statistics=statistics,
            ties=ties,
        )
        reply = await self.bus.request(
            subjects.sls("query"), "sls.query", query.to_body(), timeout=self.timeout
        )
        SlsQueryReply.from_body(reply.body)
        return dict(reply.body)

    async def query(self, resource: str = "cpu", **filters: Any) -> list[dict[str, Any]]:
        """The rows matching a query (see :meth:`page` for the filters), as dicts."""
        return list(SlsQueryReply.from_body(await self.page(resource, **filters)).rows)

    async def rows(self, resource: str = "cpu", **filters: Any) -> list[HostRow]:
        """The rows matching a query, typed."""
        return [HostRow.from_body(r) for r in await self.query(resource, **filters)]

    async def host(self, host_id: str) -> dict[str, Any]:
        """Everything about one live host (``unknown_host`` if it is not live)."""
        reply = await self.bus.request(
            subjects.sls("host"), "sls.host", SlsHost(host_id).to_body(), timeout=self.timeout
        )
        SlsHostReply.from_body(reply.body)
        return dict(reply.body)
