"""The registry's column store: one numpy row per host slot, so queries are vectorised.

Ingest appends plain tuples to a pending list; :meth:`Columns.write` applies a batch of
them at once (the latest update of each slot wins; every update's price is a statistics
sample, in order). Queries filter with masks and select the page with a partial sort.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tycoon.resources import RESOURCES
from tycoon.sls.stats import moments_body
from tycoon.sls.tables import HistogramTable, MomentTable

NR = len(RESOURCES)
CAP, PRICE, UNIT, UTIL, BIDDERS = range(5)


class Columns:
    """Per-slot arrays of the latest offers, liveness and availability, plus statistics."""

    def __init__(self, moments: MomentTable, histograms: HistogramTable) -> None:
        self.moments = moments
        self.histograms = histograms
        self.size = 0
        self.vals = np.zeros((0, 5, NR), dtype=np.float64)  # CAP, PRICE, UNIT, UTIL, BIDDERS
        self.capi = np.zeros((0, NR), dtype=np.int64)  # exact capacities
        self.live_until = np.zeros(0, dtype=np.int64)  # local ns; 0 = free slot
        self.last_seen = np.zeros(0, dtype=np.int64)  # signed ns of the latest update
        self.avail = np.zeros(0, dtype=np.float64)
        self.hid = np.zeros(0, dtype="S16")  # host id, the final tie-breaker

    def grow(self, slots: int) -> None:
        """Make room for ``slots`` slots (new slots free)."""
        old = self.size

        def grown(arr: np.ndarray, fill: Any = 0) -> np.ndarray:
            new = np.full((slots, *arr.shape[1:]), fill, dtype=arr.dtype)
            new[:old] = arr[:old]
            return new

        self.vals, self.capi = grown(self.vals), grown(self.capi)
        self.live_until, self.last_seen = grown(self.live_until), grown(self.last_seen)
        self.avail, self.hid = grown(self.avail), grown(self.hid, b"")
        self.moments.resize(slots * NR)
        self.histograms.resize(slots * NR)
        self.size = slots

    def clear(self, slot: int) -> None:
        """Free one slot and forget its statistics."""
        rows = np.arange(slot * NR, slot * NR + NR, dtype=np.int64)
        self.moments.clear(rows)
        self.histograms.clear(rows)
        self.vals[slot] = 0.0
        self.capi[slot] = 0
        self.live_until[slot] = 0
        self.last_seen[slot] = 0
        self.avail[slot] = 0.0
        self.hid[slot] = b""

    def write(self, pend_i: list[tuple[int, ...]], pend_f: list[tuple[float, ...]]) -> None:
        """Apply pending updates.

        ``pend_i`` rows: slot, t_ns, live_until_ns, capacity × 4;
        ``pend_f`` rows: availability, price × 4, utilization × 4, bidders × 4.
        """
        ints = np.array(pend_i, dtype=np.int64)
        floats = np.array(pend_f, dtype=np.float64)
        slots, t, caps = ints[:, 0], ints[:, 1], ints[:, 3:]
        prices = floats[:, 1:5]
        _, last = np.unique(slots[::-1], return_index=True)
        last = slots.size - 1 - last  # the latest pending update of each slot wins
        s = slots[last]
        self.live_until[s] = ints[last, 2]
        self.last_seen[s] = t[last]
        self.capi[s] = caps[last]
        self.avail[s] = floats[last, 0]
        capf = caps[last].astype(np.float64)
        self.vals[s, CAP] = capf
        self.vals[s, PRICE] = prices[last]
        self.vals[s, UNIT] = np.divide(prices[last], capf, out=np.zeros_like(capf), where=capf > 0)
        self.vals[s, UTIL] = floats[last, 5:9]
        self.vals[s, BIDDERS] = floats[last, 9:13]
        sold = caps > 0
        rows = (slots[:, None] * NR + np.arange(NR))[sold]
        times = np.broadcast_to(t[:, None], sold.shape)[sold]
        self.moments.add(rows, times, prices[sold])
        self.histograms.add(rows, prices[sold])

    def select(
        self,
        j: int,
        now_ns: int,
        *,
        min_capacity: int = 0,
        max_unit_price: float | None = None,
        max_price: float | None = None,
    ) -> np.ndarray:
        """The slots of live hosts selling resource ``j`` that pass the filters."""
        mask = (self.live_until > now_ns) & (self.capi[:, j] > max(min_capacity - 1, 0))
        if max_unit_price is not None:
            mask &= self.vals[:, UNIT, j] <= max_unit_price
        if max_price is not None:
            mask &= self.vals[:, PRICE, j] <= max_price
        return np.flatnonzero(mask)

    def order(self, idx: np.ndarray, j: int, sort: str, k: int,
              rng: np.random.Generator | None = None) -> np.ndarray:
        """The first ``k`` of ``idx`` in ``sort`` order; ties go by capacity, then host id
        (or, given ``rng``, at random)."""
        if k <= 0 or idx.size == 0:
            return idx[:0]
        unit = self.vals[idx, UNIT, j]
        cap = -self.capi[idx, j]
        primary, secondary = {
            "capacity_per_price": (unit, cap),
            "unit_price": (unit, cap),
            "price": (self.vals[idx, PRICE, j], cap),
            "capacity": (cap, unit),
            "availability": (-self.avail[idx], unit),
        }[sort]
        if k < idx.size:
            kth = np.partition(primary, k - 1)[k - 1]
            keep = primary <= kth
            idx, primary, secondary = idx[keep], primary[keep], secondary[keep]
        last = self.hid[idx] if rng is None else rng.random(idx.size)
        order = np.lexsort((last, secondary, primary))
        return idx[order[:k]]

    def statistics(self, slots: np.ndarray, j: int) -> list[dict[str, Any]]:
        """The price statistics bodies of resource ``j`` of ``slots``, at their last update."""
        rows = slots.astype(np.int64) * NR + j
        mom = self.moments.read(rows, self.last_seen[slots])
        hist = self.histograms
        edges = hist.lo[rows, None] + hist.width[rows, None] * np.arange(hist.bins + 1)
        names = self.moments.names
        return [
            {"windows": moments_body(m, names), "histogram": {"edges": e, "counts": c}}
            for m, e, c in zip(
                mom.tolist(), edges.tolist(), hist.counts[rows].tolist(), strict=True
            )
        ]

    def summary(self, now_ns: int) -> dict[str, Any]:
        """Per resource: hosts, total capacity and price, unit prices, utilization."""
        live = np.flatnonzero(self.live_until > now_ns)
        out: dict[str, Any] = {}
        for j, name in enumerate(RESOURCES):
            sel = live[self.capi[live, j] > 0]
            capacity = int(self.capi[sel, j].sum())
            price = self.vals[sel, PRICE, j]
            unit = self.vals[sel, UNIT, j]
            weights = self.vals[sel, CAP, j]
            any_ = bool(sel.size)
            out[name] = {
                "hosts": int(sel.size),
                "capacity": capacity,
                "price": float(price.sum()),
                "unit_price": float(price.sum() / capacity) if capacity else 0.0,
                "mean_unit_price": float(unit.mean()) if any_ else 0.0,
                "min_unit_price": float(unit.min()) if any_ else 0.0,
                "max_unit_price": float(unit.max()) if any_ else 0.0,
                "utilization": float((self.vals[sel, UTIL, j] * weights).sum() / weights.sum())
                if any_
                else 0.0,
                "bidders": int(self.vals[sel, BIDDERS, j].sum()),
            }
        return out
