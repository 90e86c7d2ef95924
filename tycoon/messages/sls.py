"""Bodies of the SLS's requests, replies and events (docs/sls.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tycoon.bus.schema import check_id
from tycoon.errors import Rejected
from tycoon.messages.base import Body, meta
from tycoon.resources import RESOURCES

SORTS: tuple[str, ...] = ("capacity_per_price", "price", "unit_price", "capacity", "availability")
"""Sort orders: most capacity per credit first (= lowest unit price, ties: most capacity),
lowest total price, lowest unit price, most capacity, most available."""
TIES: tuple[str, ...] = ("host", "random")
"""How equal rows are ordered: by host id (stable pages), or at random per query (agents
choosing hosts: those that ask together spread over equally good hosts instead of all
taking the same first ones)."""
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_LIMIT_WITH_STATISTICS = 500  # keeps a reply well under the 1 MiB message limit
MAX_OFFSET = 1_000_000


def _optional_number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Rejected("malformed", f"{name} must be a finite number")
    if value < 0:
        raise Rejected("malformed", f"{name} must be >= 0")
    return float(value)


def _int_in(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Rejected("malformed", f"{name} must be an integer in [{low}, {high}]")
    return value


@dataclass(frozen=True, slots=True)
class SlsQuery(Body):
    """Which hosts to list: filters on one resource, a sort order and a page. Every field
    is optional on the wire (absent: the default); a query is checked when built."""

    KINDS: ClassVar[tuple[str, ...]] = ("sls.query",)
    SUMMARY: ClassVar[str] = "list live hosts of one resource, filtered, sorted, paged"
    resource: str = field(default="cpu", metadata=meta("`cpu` (default)/`memory`/`disk`/`net`"))
    min_capacity: int = field(default=0, metadata=meta("≥ 0 (0)"))
    max_unit_price: float | None = field(default=None, metadata=meta("≥ 0"))
    max_price: float | None = field(default=None, metadata=meta("≥ 0"))
    sort: str = field(default="capacity_per_price", metadata=meta(
        "`capacity_per_price` (default)/`price`/`unit_price`/`capacity`/`availability`"))
    offset: int = field(default=0, metadata=meta("0..1,000,000 (0)"))
    limit: int = field(default=DEFAULT_LIMIT, metadata=meta(
        "0..1000 (100); at most 500 with statistics"))
    statistics: bool = field(default=True, metadata=meta("(true)"))
    ties: str = field(default="host", metadata=meta("`host` (default)/`random`"))

    def __post_init__(self) -> None:
        SlsQuery.from_body(self.to_body(), _check_only=True)

    def to_body(self) -> dict[str, Any]:
        """The ``sls.query`` body (every field; absent filters omitted)."""
        return {s.name: v for s in self.specs() if (v := getattr(self, s.attr)) is not None}

    @classmethod
    def from_body(cls, body: Any, *, _check_only: bool = False) -> SlsQuery:
        """Parse a ``sls.query`` body, or ``malformed`` naming the bad field."""
        if not isinstance(body, dict):
            raise Rejected("malformed", "a query is a map")
        resource = body.get("resource", "cpu")
        if resource not in RESOURCES:
            raise Rejected("malformed", f"resource must be one of {', '.join(RESOURCES)}")
        sort = body.get("sort", "capacity_per_price")
        if sort not in SORTS:
            raise Rejected("malformed", f"sort must be one of {', '.join(SORTS)}")
        ties = body.get("ties", "host")
        if ties not in TIES:
            raise Rejected("malformed", f"ties must be one of {', '.join(TIES)}")
        statistics = body.get("statistics", True)
        if not isinstance(statistics, bool):
            raise Rejected("malformed", "statistics must be a boolean")
        limit = _int_in(body, "limit", DEFAULT_LIMIT, 0, MAX_LIMIT)
        fields = (resource, _int_in(body, "min_capacity", 0, 0, 2**63 - 1),
                  _optional_number(body, "max_unit_price"), _optional_number(body, "max_price"),
                  sort, _int_in(body, "offset", 0, 0, MAX_OFFSET), limit, statistics, ties)
        if statistics and limit > MAX_LIMIT_WITH_STATISTICS:
            raise Rejected(
                "malformed",
                f"at most {MAX_LIMIT_WITH_STATISTICS} rows with statistics "
                f"({MAX_LIMIT} with statistics=false)",
            )
        if _check_only:
            return None  # type: ignore[return-value]
        return cls(*fields)


@dataclass(frozen=True, slots=True)
class SlsQueryReply(Body):
    total: int
    offset: int
    rows: list[Any] = field(metadata=meta("rows of docs/sls.md"))


@dataclass(frozen=True, slots=True)
class SlsHost(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("sls.host",)
    SUMMARY: ClassVar[str] = "everything the SLS holds about one live host"
    host: str = field(metadata=meta(
        "host id", max_len=64, check=lambda v: check_id(v, "host", max_len=64)))


@dataclass(frozen=True, slots=True)
class SlsHostReply(Body):
    host: str
    public_key: str
    name: str
    driver: str
    seq: int
    heartbeat_s: float
    first_seen_ns: int
    last_seen_ns: int
    registered_s: float
    availability: float
    updates: int
    resources: dict[str, Any] = field(metadata=meta(
        "resource → {`capacity`, `price`, `unit_price`, `utilization`, `bidders`, "
        "`statistics`}"))


@dataclass(frozen=True, slots=True)
class SlsHistory(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("sls.history",)
    SUMMARY: ClassVar[str] = "a page of one host's stored `price` envelopes (client verifies)"
    host: str = field(metadata=meta("host id", max_len=16))
    since_ns: int
    after_seq: int | None = field(default=None, metadata=meta("0 or absent: from since_ns"))
    limit: int | None = field(default=None, metadata=meta("1..1000"))


@dataclass(frozen=True, slots=True)
class SlsHistoryReply(Body):
    messages: list[Any] = field(metadata=meta("[[stream seq, stored_ns, envelope bin], …]"))
    more: bool


@dataclass(frozen=True, slots=True)
class SlsSnapshot(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("sls.snapshot",)
    SUMMARY: ClassVar[str] = "market totals, every `snapshot_s` (10 s), per replica"
    hosts: int = field(metadata=meta("live hosts"))
    resources: dict[str, Any] = field(metadata=meta(
        "resource → {`hosts`, `capacity`, `price`, `unit_price`, `mean_unit_price`, "
        "`min_unit_price`, `max_unit_price`, `utilization`, `bidders`}"))
    counters: dict[str, Any] = field(metadata=meta("ingest outcome → count"))


REPLIES: dict[str, type[Body]] = {
    "sls.query": SlsQueryReply, "sls.host": SlsHostReply, "sls.history": SlsHistoryReply,
}
