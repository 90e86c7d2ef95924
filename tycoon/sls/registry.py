"""The SLS core, sans-IO: live hosts, their latest prices, availability and price statistics.

Times: ``ts_ns`` is the signed timestamp of an update (the host's clock, checked fresh by
the bus); ``now_ns`` is the local clock. Everything a reply reports (availability,
statistics, last seen) is a function of the signed updates only, so replicas that saw
the same updates answer the same; only liveness (expiry) uses the local clock.

Registered time: after an update at ``t_i`` with heartbeat ``h_i`` the host counts as
registered until its next update or until ``t_i + missed * h_i``, whichever comes
first. Availability = registered time / (last update - first seen), 1.0 for one update.
A host is live while ``now < received + missed * heartbeat``; a host silent for longer
drops out of every answer, and is forgotten (slot, statistics, first seen) after
``forget_after_s`` more.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import numpy as np

from tycoon.bus.keys import subject_id
from tycoon.errors import Rejected
from tycoon.resources import RESOURCES
from tycoon.sls.columns import Columns
from tycoon.sls.query import Query
from tycoon.sls.tables import DEFAULT_BINS, DEFAULT_BUCKETS, HistogramTable, MomentTable
from tycoon.sls.update import OfferTuple, ParsedUpdate
from tycoon.units import NS

NR = len(RESOURCES)
RES_INDEX = {r: j for j, r in enumerate(RESOURCES)}
_NO_OFFER: OfferTuple = (0, 0.0, 0.0, 0)


@dataclass(slots=True)
class HostRecord:
    """What the registry knows of one host (live or dormant)."""

    host: str
    public_key: str
    slot: int
    name: str
    driver: str
    seq: int
    heartbeat_s: float
    offers: tuple[OfferTuple | None, ...]
    first_seen_ns: int
    last_seen_ns: int
    registered_ns: int = 0
    updates: int = 1
    live: bool = True

    @property
    def availability(self) -> float:
        span = self.last_seen_ns - self.first_seen_ns
        return 1.0 if span <= 0 else min(1.0, self.registered_ns / span)


class Registry:
    """The registry of hosts; see the module docstring for the exact rules."""

    def __init__(
        self,
        *,
        missed_heartbeats: int = 3,
        windows: dict[str, int] | None = None,
        buckets: int = DEFAULT_BUCKETS,
        bins: int = DEFAULT_BINS,
        forget_after_s: float = 86_400.0,
        flush_at: int = 16_384,
        slots: int = 256,
    ) -> None:
        if missed_heartbeats < 1:
            raise ValueError("missed_heartbeats must be >= 1")
        self.missed = missed_heartbeats
        self.forget_after_ns = int(forget_after_s * NS)
        self.flush_at = flush_at
        self.counters: collections.Counter[str] = collections.Counter()
        self.cols = Columns(MomentTable(0, windows, buckets), HistogramTable(0, bins))
        self._by_host: dict[str, HostRecord] = {}
        self._records: list[HostRecord | None] = []
        self._free: list[int] = []
        self._key_host: dict[str, str] = {}
        self._pend_i: list[tuple[int, ...]] = []
        self._pend_f: list[tuple[float, ...]] = []
        self._rng = np.random.default_rng()
        """Breaks ties of ``ties="random"`` queries."""
        self._grow(slots)

    def __len__(self) -> int:
        """Hosts known (live or dormant)."""
        return len(self._by_host)

    def _grow(self, slots: int) -> None:
        old = self.cols.size
        self.cols.grow(slots)
        self._records.extend([None] * (slots - old))
        self._free.extend(range(slots - 1, old - 1, -1))

    def _slot(self) -> int:
        if not self._free:
            self._grow(self.cols.size + max(64, self.cols.size // 2))
        return self._free.pop()

    def flush(self) -> None:
        """Apply pending updates to the columns and statistics (done before every read)."""
        if self._pend_i:
            pend_i, pend_f = self._pend_i, self._pend_f
            self._pend_i, self._pend_f = [], []
            self.cols.write(pend_i, pend_f)

    # ---------------------------------------------------------------- ingest
    def host_of(self, public_key: str) -> str:
        """The host id of a public key (cached)."""
        host = self._key_host.get(public_key)
        if host is None:
            if len(self._key_host) > 1_000_000:
                self._key_host.clear()
            try:
                host = subject_id(public_key)
            except ValueError as exc:
                raise Rejected("forbidden", "the sender is not a public key") from exc
            self._key_host[public_key] = host
        return host

    def ingest(self, update: ParsedUpdate, *, sender: str, ts_ns: int, now_ns: int) -> bool:
        """Apply one verified, parsed update signed by ``sender`` at ``ts_ns``.

        Returns False (and counts ``out_of_order``) for an update whose seq is not above the one
        held; raises ``forbidden`` (counted) when ``sender`` is not the host's own key.
        """
        host, seq, heartbeat, name, driver, offers = update
        if host != self.host_of(sender):
            self.counters["forbidden"] += 1
            raise Rejected("forbidden", f"key {sender[:12]}… may not speak for host {host!r}")
        rec = self._by_host.get(host)
        if rec is None:
            slot = self._slot()
            rec = HostRecord(
                host, sender, slot, name, driver, seq, heartbeat, offers, ts_ns, ts_ns
            )
            self._by_host[host] = rec
            self._records[slot] = rec
            self.cols.hid[slot] = host.encode()
            t = ts_ns
        else:
            if seq <= rec.seq:
                self.counters["out_of_order"] += 1
                return False
            slot = rec.slot
            t = max(ts_ns, rec.last_seen_ns)
            rec.registered_ns += min(t - rec.last_seen_ns, int(rec.heartbeat_s * NS) * self.missed)
            rec.last_seen_ns = t
            rec.seq = seq
            rec.heartbeat_s = heartbeat
            rec.name, rec.driver, rec.offers = name, driver, offers
            rec.updates += 1
            rec.live = True
        self.counters["accepted"] += 1
        o0, o1, o2, o3 = offers
        o0, o1, o2, o3 = o0 or _NO_OFFER, o1 or _NO_OFFER, o2 or _NO_OFFER, o3 or _NO_OFFER
        self._pend_i.append(
            (slot, t, now_ns + int(heartbeat * NS) * self.missed, o0[0], o1[0], o2[0], o3[0])
        )
        self._pend_f.append(
            (rec.availability, o0[1], o1[1], o2[1], o3[1], o0[2], o1[2], o2[2], o3[2],
             o0[3], o1[3], o2[3], o3[3])
        )  # fmt: skip
        if len(self._pend_i) >= self.flush_at:
            self.flush()
        return True

    # ---------------------------------------------------------------- liveness
    def live_hosts(self, now_ns: int) -> list[str]:
        """The ids of every live host, sorted."""
        self.flush()
        idx = np.flatnonzero(self.cols.live_until > now_ns).tolist()
        return sorted(self._records[i].host for i in idx)  # type: ignore[union-attr]

    def expire(self, now_ns: int) -> tuple[list[str], list[str]]:
        """Mark hosts silent past their heartbeats as gone; forget long-gone ones.

        Returns (newly expired host ids, forgotten host ids). Queries already skip silent
        hosts without this; it is for logging and for bounding memory.
        """
        self.flush()
        until = self.cols.live_until
        expired: list[str] = []
        forgotten: list[str] = []
        for slot in np.flatnonzero((until <= now_ns) & (until > 0)).tolist():
            rec = self._records[slot]
            assert rec is not None
            if rec.live:
                rec.live = False
                expired.append(rec.host)
            if int(until[slot]) + self.forget_after_ns <= now_ns:
                forgotten.append(rec.host)
                del self._by_host[rec.host]
                self._records[slot] = None
                self.cols.clear(slot)
                self._free.append(slot)
        self.counters["expired"] += len(expired)
        self.counters["forgotten"] += len(forgotten)
        return expired, forgotten

    # ---------------------------------------------------------------- reads
    def query(self, q: Query, now_ns: int) -> dict[str, Any]:
        """Answer a query: ``{"total": matches, "offset": int, "rows": [row]}``."""
        self.flush()
        j = RES_INDEX[q.resource]
        idx = self.cols.select(
            j,
            now_ns,
            min_capacity=q.min_capacity,
            max_unit_price=q.max_unit_price,
            max_price=q.max_price,
        )
        rng = self._rng if q.ties == "random" else None
        page = self.cols.order(idx, j, q.sort, q.offset + q.limit, rng)[q.offset :]
        rows = [self._row(slot, j) for slot in page.tolist()]
        if q.statistics and rows:
            for row, stats in zip(rows, self.cols.statistics(page, j), strict=True):
                row["statistics"] = stats
        return {"total": int(idx.size), "offset": q.offset, "rows": rows}

    def _row(self, slot: int, j: int) -> dict[str, Any]:
        rec = self._records[slot]
        assert rec is not None
        capacity, price, utilization, bidders = rec.offers[j]  # type: ignore[misc]
        return {
            "host": rec.host,
            "public_key": rec.public_key,
            "name": rec.name,
            "driver": rec.driver,
            "resource": RESOURCES[j],
            "capacity": capacity,
            "price": price,
            "unit_price": price / capacity,
            "utilization": utilization,
            "bidders": bidders,
            "availability": rec.availability,
            "seq": rec.seq,
            "heartbeat_s": rec.heartbeat_s,
            "last_seen_ns": rec.last_seen_ns,
        }

    def host(self, host: str, now_ns: int) -> dict[str, Any]:
        """Everything about one live host, with the statistics of every resource it sells."""
        self.flush()
        rec = self._by_host.get(host)
        if rec is None or self.cols.live_until[rec.slot] <= now_ns:
            raise Rejected("unknown_host", f"no live host {host[:64]!r}")
        slots = np.array([rec.slot], dtype=np.int64)
        resources: dict[str, Any] = {}
        for j, name in enumerate(RESOURCES):
            offer = rec.offers[j]
            if offer is None or offer[0] <= 0:
                continue
            capacity, price, utilization, bidders = offer
            resources[name] = {
                "capacity": capacity,
                "price": price,
                "unit_price": price / capacity,
                "utilization": utilization,
                "bidders": bidders,
                "statistics": self.cols.statistics(slots, j)[0],
            }
        return {
            "host": rec.host,
            "public_key": rec.public_key,
            "name": rec.name,
            "driver": rec.driver,
            "seq": rec.seq,
            "heartbeat_s": rec.heartbeat_s,
            "first_seen_ns": rec.first_seen_ns,
            "last_seen_ns": rec.last_seen_ns,
            "registered_s": rec.registered_ns / NS,
            "availability": rec.availability,
            "updates": rec.updates,
            "resources": resources,
        }

    def snapshot(self, now_ns: int) -> dict[str, Any]:
        """A market summary: live hosts and, per resource, totals and prices; counters."""
        self.flush()
        return {
            "hosts": int(np.count_nonzero(self.cols.live_until > now_ns)),
            "resources": self.cols.summary(now_ns),
            "counters": dict(sorted(self.counters.items())),
        }
