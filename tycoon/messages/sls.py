"""Bodies of the SLS's requests, replies and events (docs/sls.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tycoon.messages.base import Body, meta


@dataclass(frozen=True, slots=True)
class SlsQuery(Body):
    """Checked in full by :meth:`tycoon.sls.query.Query.from_body`."""

    KINDS: ClassVar[tuple[str, ...]] = ("sls.query",)
    SUMMARY: ClassVar[str] = "list live hosts of one resource, filtered, sorted, paged"
    resource: str | None = field(default=None, metadata=meta("`cpu`/`memory`/`disk`/`net`"))
    min_capacity: int | None = field(default=None)
    max_unit_price: float | None = field(default=None)
    max_price: float | None = field(default=None)
    sort: str | None = field(default=None, metadata=meta("`capacity_per_price` …"))
    offset: int | None = field(default=None, metadata=meta("0..1,000,000"))
    limit: int | None = field(default=None, metadata=meta("0..1000"))
    statistics: bool | None = field(default=None)
    ties: str | None = field(default=None, metadata=meta("`host`/`random`"))


@dataclass(frozen=True, slots=True)
class SlsQueryReply(Body):
    total: int
    offset: int
    rows: list[Any] = field(metadata=meta("rows of docs/sls.md"))


@dataclass(frozen=True, slots=True)
class SlsHost(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("sls.host",)
    SUMMARY: ClassVar[str] = "everything the SLS holds about one live host"
    host: str = field(metadata=meta("host id", max_len=64))


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
