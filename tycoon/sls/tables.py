"""Vectorised statistics for many price series at once (numpy, sans-IO).

:class:`MomentTable` keeps, for every row (one price series) and every moving window,
a ring of ``buckets`` sub-window buckets of shifted power sums ``n, Σd, Σd², Σd³, Σd⁴``
with ``d = x - ref`` (``ref`` = the row's first sample, so that the sums stay small and
central moments do not cancel). A sample lands in bucket ``t // (window / buckets)``;
a bucket is reset when a newer epoch reuses its ring slot. Reading a window at time
``t`` sums the buckets whose epoch is in ``(e(t) - buckets, e(t)]``: the window slides
one bucket at a time and covers between ``(buckets-1)/buckets`` and all of its span.

:class:`HistogramTable` keeps a fixed number of equal-width bins per row. A value
outside a row's range grows it by ``2**k`` (merging bins in groups of ``2**k``, so no
count is ever split or estimated): to the right with the low edge fixed, to the left
with the high edge fixed.

Both accept batches and give the result of adding the samples one at a time in batch
order (moments bit for bit; a histogram value within rounding of a bin edge may land
in the neighbouring bin), so replicas that batch differently agree.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tycoon.errors import Rejected
from tycoon.units import NS

WINDOWS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}
"""The default moving windows, in seconds."""
DEFAULT_BUCKETS = 12
DEFAULT_BINS = 32
_NO_EPOCH = np.iinfo(np.int64).min // 2

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def moments_from_sums(sums: FloatArray, ref: FloatArray) -> FloatArray:
    """Turn shifted power sums ``(..., 5)`` into ``(..., 5)`` = count, mean, var, skew, kurt.

    Population (biased) moments, as ``numpy.var`` and ``scipy.stats.skew/kurtosis`` give
    by default; kurt is the excess kurtosis. A window with no spread (var at rounding
    level) reports var, skew and kurt as 0; an empty window reports all zeros.
    """
    n = sums[..., 0]
    safe_n = np.where(n > 0, n, 1.0)
    m1 = sums[..., 1] / safe_n
    r2 = sums[..., 2] / safe_n
    r3 = sums[..., 3] / safe_n
    r4 = sums[..., 4] / safe_n
    c2 = r2 - m1 * m1
    c3 = r3 - 3.0 * m1 * r2 + 2.0 * m1**3
    c4 = r4 - 4.0 * m1 * r3 + 6.0 * m1 * m1 * r2 - 3.0 * m1**4
    spread = c2 > 1e-12 * np.maximum(r2, np.finfo(np.float64).tiny)
    safe_c2 = np.where(spread, c2, 1.0)
    with np.errstate(all="ignore"):  # ratios ordered so that tiny spreads do not underflow
        skew = np.where(spread, c3 / safe_c2 / np.sqrt(safe_c2), 0.0)
        kurt = np.where(spread, c4 / safe_c2 / safe_c2 - 3.0, 0.0)
    out = np.zeros(sums.shape, dtype=np.float64)
    out[..., 0] = n
    out[..., 1] = np.where(n > 0, ref + m1, 0.0)
    out[..., 2] = np.where(spread, c2, 0.0)
    out[..., 3] = np.where(np.isfinite(skew), skew, 0.0)
    out[..., 4] = np.where(np.isfinite(kurt), kurt, 0.0)
    return out


class MomentTable:
    """Moving-window moments of ``rows`` series, O(1) amortised per sample."""

    def __init__(
        self,
        rows: int,
        windows: dict[str, int] | None = None,
        buckets: int = DEFAULT_BUCKETS,
    ) -> None:
        self.windows = dict(WINDOWS if windows is None else windows)
        if buckets < 1 or not self.windows:
            raise ValueError("need at least one window and one bucket")
        self.names = tuple(self.windows)
        self.buckets = buckets
        self.width_ns = np.array(
            [max(1, s * NS // buckets) for s in self.windows.values()], dtype=np.int64
        )
        nw = len(self.names)
        self.sums = np.zeros((rows, nw, buckets, 5), dtype=np.float64)
        self.epochs = np.full((rows, nw, buckets), _NO_EPOCH, dtype=np.int64)
        self.ref = np.full(rows, np.nan, dtype=np.float64)

    @property
    def rows(self) -> int:
        return self.ref.shape[0]

    def resize(self, rows: int) -> None:
        """Grow to ``rows`` rows (new rows empty)."""
        old = self.rows
        if rows <= old:
            return
        nw = len(self.names)
        sums = np.zeros((rows, nw, self.buckets, 5), dtype=np.float64)
        epochs = np.full((rows, nw, self.buckets), _NO_EPOCH, dtype=np.int64)
        ref = np.full(rows, np.nan, dtype=np.float64)
        sums[:old], epochs[:old], ref[:old] = self.sums, self.epochs, self.ref
        self.sums, self.epochs, self.ref = sums, epochs, ref

    def clear(self, rows: IntArray) -> None:
        """Forget everything about ``rows``."""
        self.sums[rows] = 0.0
        self.epochs[rows] = _NO_EPOCH
        self.ref[rows] = np.nan

    def add(self, rows: IntArray, t_ns: IntArray, x: FloatArray) -> None:
        """Add samples ``x`` taken at ``t_ns`` to ``rows`` (same as adding them in order)."""
        if rows.size == 0:
            return
        if np.isnan(self.ref[rows]).any():  # a row's first sample becomes its shift
            first_rows, first_at = np.unique(rows, return_index=True)
            unset = np.isnan(self.ref[first_rows])
            self.ref[first_rows[unset]] = x[first_at[unset]]
        d = x - self.ref[rows]
        d2 = d * d
        powers = np.stack([np.ones_like(d), d, d2, d2 * d, d2 * d2], axis=1)
        b, nw = self.buckets, len(self.names)
        flat_sums = self.sums.reshape(-1)
        flat_epochs = self.epochs.reshape(-1)
        for w in range(nw):
            epoch = t_ns // self.width_ns[w]
            cell = (rows * nw + w) * b + epoch % b  # flat index into epochs
            order = np.lexsort((epoch, cell))
            sorted_cells = cell[order]
            last = np.append(sorted_cells[1:] != sorted_cells[:-1], True)
            cells, newest = sorted_cells[last], epoch[order][last]
            reset = flat_epochs[cells] < newest
            self.sums.reshape(-1, 5)[cells[reset]] = 0.0
            flat_epochs[cells[reset]] = newest[reset]
            keep = epoch == flat_epochs[cell]  # older epochs than the bucket's are dropped
            at = (cell[keep][:, None] * 5 + np.arange(5)).reshape(-1)
            np.add.at(flat_sums, at, powers[keep].reshape(-1))  # in order: exact replay

    def read(self, rows: IntArray, at_ns: IntArray) -> FloatArray:
        """Moments of ``rows``, each evaluated at its own time: shape (rows, windows, 5)."""
        out = np.zeros((rows.size, len(self.names), 5), dtype=np.float64)
        if rows.size == 0:
            return out
        sums = np.empty((rows.size, len(self.names), 5), dtype=np.float64)
        for w in range(len(self.names)):
            now_epoch = (at_ns // self.width_ns[w])[:, None]
            held = self.epochs[rows, w]
            live = (held > now_epoch - self.buckets) & (held <= now_epoch)
            sums[:, w] = np.einsum("rb,rbk->rk", live.astype(np.float64), self.sums[rows, w])
        ref = np.where(np.isnan(self.ref[rows]), 0.0, self.ref[rows])[:, None]
        out[:] = moments_from_sums(sums, ref)
        return out


def grow_layout(
    lo: FloatArray, width: FloatArray, bins: int, x: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """The (lo, width) of histograms after widening each until its ``x`` falls inside.

    ``width == 0`` means empty: the range starts at ``x`` with a width of 2**-10 of x's
    binary order of magnitude (2**-30 for x == 0). Growing to the right keeps ``lo``;
    growing to the left keeps the high edge; the width doubles until ``x`` fits (the
    smallest such power), so every new edge is an old edge and old bins merge whole.
    """
    lo, width = lo.copy(), width.copy()
    empty = width <= 0.0
    if empty.any():
        exponent = np.where(x[empty] != 0.0, np.frexp(x[empty])[1], -20)
        lo[empty], width[empty] = x[empty], np.ldexp(1.0, exponent - 10)
    hi = lo + bins * width
    right, left = ~empty & (x >= hi), ~empty & (x < lo)
    k = np.where(right | left, 1, 0)
    while True:  # the smallest k >= 1 that covers x, vectorised over rows
        span = bins * np.ldexp(width, k)
        short = (right & (lo + span <= x)) | (left & (hi - span > x))
        if not short.any():
            break
        k[short] += 1
    with np.errstate(over="ignore"):
        new_width = np.ldexp(width, k)
        new_lo = np.where(left, hi - bins * new_width, lo)
    if not (np.isfinite(new_lo).all() and np.isfinite(new_width * bins).all()):
        raise Rejected("malformed", "value out of the representable histogram range")
    return new_lo, new_width


def rebin(counts: IntArray, lo: FloatArray, width: FloatArray, new_lo: FloatArray,
          new_width: FloatArray) -> IntArray:
    """Merge histograms ``counts`` (rows, bins) into coarser layouts whose edges are theirs.

    Each old bin goes whole to the new bin holding its midpoint (exact, no splitting).
    """
    rows, bins = counts.shape
    mids = lo[:, None] + (np.arange(bins) + 0.5) * width[:, None]
    safe = np.where(new_width > 0, new_width, 1.0)[:, None]
    idx = np.clip(np.floor((mids - new_lo[:, None]) / safe), 0, bins - 1).astype(np.int64)
    flat = (np.arange(rows)[:, None] * bins + idx).reshape(-1)
    merged = np.bincount(flat, weights=counts.reshape(-1), minlength=rows * bins)
    return merged.reshape(rows, bins).round().astype(np.int64)


class HistogramTable:
    """Fixed-bin, dynamically ranged histograms of ``rows`` series."""

    def __init__(self, rows: int, bins: int = DEFAULT_BINS) -> None:
        if bins < 2:
            raise ValueError("a histogram needs at least 2 bins")
        self.bins = bins
        self.counts = np.zeros((rows, bins), dtype=np.int64)
        self.lo = np.zeros(rows, dtype=np.float64)
        self.width = np.zeros(rows, dtype=np.float64)

    def resize(self, rows: int) -> None:
        """Grow to ``rows`` rows (new rows empty)."""
        old = self.counts.shape[0]
        if rows <= old:
            return
        counts = np.zeros((rows, self.bins), dtype=np.int64)
        lo = np.zeros(rows, dtype=np.float64)
        width = np.zeros(rows, dtype=np.float64)
        counts[:old], lo[:old], width[:old] = self.counts, self.lo, self.width
        self.counts, self.lo, self.width = counts, lo, width

    def clear(self, rows: IntArray) -> None:
        """Forget everything about ``rows``."""
        self.counts[rows] = 0
        self.lo[rows] = 0.0
        self.width[rows] = 0.0

    def add(self, rows: IntArray, x: FloatArray) -> None:
        """Count values ``x`` into ``rows``, in order (ranges grow as the values arrive)."""
        if rows.size == 0:
            return
        bins = self.bins
        lo, width = self.lo[rows], self.width[rows]
        outside = ~((width > 0) & (x >= lo) & (x < lo + bins * width))
        if outside.any():
            self._grow(rows[outside], x[outside])
            lo, width = self.lo[rows], self.width[rows]
        idx = np.clip(np.floor((x - lo) / width), 0, bins - 1).astype(np.int64)
        cells, n = np.unique(rows * bins + idx, return_counts=True)
        self.counts.reshape(-1)[cells] += n

    def _grow(self, rows: IntArray, x: FloatArray) -> None:
        """Widen the ranges of ``rows`` as the values ``x`` (outside them) arrive, in order.

        The n-th outside value of every row is handled in the n-th vectorised round.
        """
        order = np.argsort(rows, kind="stable")
        r, v = rows[order], x[order]
        first = np.r_[True, r[1:] != r[:-1]]
        group = np.cumsum(first) - 1
        nth = np.arange(r.size) - np.flatnonzero(first)[group]
        changed = r[first]
        lo, width = self.lo[changed], self.width[changed]
        for n in range(int(nth.max()) + 1):
            sel = nth == n
            g = group[sel]
            lo[g], width[g] = grow_layout(lo[g], width[g], self.bins, v[sel])
        self.counts[changed] = rebin(
            self.counts[changed], self.lo[changed], self.width[changed], lo, width
        )
        self.lo[changed], self.width[changed] = lo, width

    def edges(self, row: int) -> list[float]:
        """The ``bins + 1`` bin edges of one row."""
        return (self.lo[row] + self.width[row] * np.arange(self.bins + 1)).tolist()
