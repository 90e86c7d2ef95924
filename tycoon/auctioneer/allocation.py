"""Proportional shares by water-filling, and admission (pure numpy, no I/O).

For one resource, every bidder ``i`` has a rate ``r_i >= 0`` and bounds
``0 <= lo_i <= hi_i``. :func:`water_fill` finds the level ``λ`` such that

    share_i = clip(λ · r_i, lo_i, hi_i)  and  Σ share_i = capacity

(or every bidder sits at its ``hi`` when even that does not use the capacity up).
Shares are thus proportional to rate among the unconstrained bidders, every
minimum is met, no maximum is exceeded and the excess of a clipped bidder flows
to the others. A bidder with rate 0 (or below 1e-200 of the largest) gets exactly
its ``lo`` (pass ``lo = 0`` for bidders that should get nothing).

The total ``f(λ)`` is monotone and piecewise linear with breakpoints ``lo_i/r_i``
and ``hi_i/r_i``. A few safeguarded Newton steps (O(n) each) find the level in the
common case; a row that does not converge falls back to the exact solver, which
sorts the breakpoints (O(n log n)), finds the crossing segment by binary search with ``f``
summed afresh at each probe (a sum of non-negative terms: no cancellation, whatever the
rates' range) and interpolates the crossing there. 2-D inputs (one row per resource) are
solved in one vectorised pass. A row to solve whose capacity lies outside [2⁻⁶⁴, 2⁶⁴] is
solved scaled by a power of two, so huge or tiny capacities neither overflow nor underflow.
Only the arithmetic is scaled: a row where everyone gets its maximum returns the maximums
as given, and a row being solved has its maximums cut to the capacity first (no share can
exceed it), so the scale is the capacity itself. A bound more than 2¹⁰²² times smaller than
the capacity becomes subnormal at that scale and loses digits (not exact, unlike the rest of
the scaling); the shares are therefore clipped to the bounds as given after scaling back, and
the error left on the total is below 2⁻¹⁰⁷⁰ of the capacity.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["admissible", "check_inputs", "headroom", "water_fill"]

TINY = 1e-200
"""Rates smaller than this fraction of the largest rate (of a row) count as zero."""

TOLERANCE = 1e-9
"""Slack allowed when comparing sums of fractions against a capacity."""


def check_inputs(rates: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """Raise ValueError unless rates, lo, hi have one shape, are finite, >= 0 and lo <= hi."""
    if not (rates.shape == lo.shape == hi.shape) or rates.ndim not in (1, 2):
        raise ValueError("rates, lo and hi must be 1-D or 2-D arrays of one shape")
    for name, arr in (("rates", rates), ("lo", lo), ("hi", hi)):
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"{name} must be finite and >= 0")
    if np.any(lo > hi):
        raise ValueError("lo must not exceed hi")


def water_fill(
    rates: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    capacity: float | np.ndarray = 1.0,
    *,
    validate: bool = True,
) -> np.ndarray:
    """Shares ∝ rate, clipped to [lo, hi], excess redistributed, Σ ≤ capacity.

    ``rates``, ``lo``, ``hi``: arrays of shape ``(n,)`` or ``(R, n)`` (one row per
    resource); ``capacity``: a scalar or one value per row. If the minimums alone
    exceed the capacity (admission should prevent it), they are scaled down to fit.
    Returns float64 shares of the input's shape.
    """
    rates = np.asarray(rates, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    if validate:
        check_inputs(rates, lo, hi)
    one_d = rates.ndim == 1
    if one_d:
        rates, lo, hi = rates[None, :], lo[None, :], hi[None, :]
    rows, n = rates.shape
    if n > 0 and np.count_nonzero(rates) <= SMALL:
        caps = [float(capacity)] * rows if np.ndim(capacity) == 0 \
            else np.broadcast_to(np.asarray(capacity, dtype=np.float64), (rows,)).tolist()
        if not all(math.isfinite(c) and c >= 0 for c in caps):
            raise ValueError("capacity must be finite and >= 0")
        out = np.array([_fill_row(*row) for row in zip(rates.tolist(), lo.tolist(),
                                                               hi.tolist(), caps, strict=True)])
        return out[0] if one_d else out
    cap = np.broadcast_to(np.asarray(capacity, dtype=np.float64), (rows,)).copy()
    if np.any(~np.isfinite(cap)) or np.any(cap < 0):
        raise ValueError("capacity must be finite and >= 0")
    if n == 0:
        out = np.zeros((rows, 0))
        return out[0] if one_d else out
    out = _fill_rows(rates, lo, hi, cap)
    return out[0] if one_d else out


SCALE_LIMIT = 2.0**64
"""Rows to solve whose capacity lies outside [1/SCALE_LIMIT, SCALE_LIMIT] are solved scaled
by a power of two: breakpoints ``hi/r`` (r ≥ 1e-200 after normalising) and levels then stay
in float range."""


def _shifts(scale: np.ndarray) -> np.ndarray | None:
    """Per row, the power of two to divide by (0 where none is needed); None if no row needs it."""
    need = (scale > SCALE_LIMIT) | ((scale < 1 / SCALE_LIMIT) & (scale > 0))
    if not need.any():
        return None
    return np.where(need, np.frexp(scale)[1], 0)


def _shift(scale: float) -> int:
    """:func:`_shifts` for one row in plain Python."""
    if scale > SCALE_LIMIT or 0 < scale < 1 / SCALE_LIMIT:
        return math.frexp(scale)[1]
    return 0


def _fill_rows(rates: np.ndarray, lo: np.ndarray, hi: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """The numpy solver for 2-D rows (validated, capacity per row)."""
    # Shares do not change when a row's rates are scaled, so normalise by the largest rate
    # (keeps λ in range); rates below TINY of the largest count as zero.
    top = rates.max(axis=1, keepdims=True)
    rates = np.where(rates >= TINY * top, rates / np.where(top > 0, top, 1.0), 0.0)
    active = rates > 0
    eff_hi = np.where(active, hi, lo)  # a bidder without rate never rises above its lo
    with np.errstate(over="ignore"):  # a sum past 1.7e308 is inf: still > cap, as it should
        sum_lo = lo.sum(axis=1)
        sum_hi = eff_hi.sum(axis=1)
    full = sum_hi <= cap  # everyone gets its (effective) max
    over = (sum_lo >= cap) & ~full  # the mins alone fill (or overfill) the capacity
    solve = ~(full | over)
    if solve.all():
        return _newton_scaled(rates, lo, eff_hi, active, cap)
    out = np.empty_like(rates)
    out[full] = eff_hi[full]  # as given: no arithmetic, so no scaling
    if np.any(over):  # lo · cap/Σlo, with Σlo summed at unit scale (it may pass 1.7e308)
        top = lo[over].max(axis=1)
        unit = np.ldexp(lo[over], -np.frexp(top)[1][:, None])
        total = unit.sum(axis=1, keepdims=True)
        out[over] = unit / np.where(total > 0, total, 1.0) * cap[over][:, None]
    if np.any(solve):
        out[solve] = _newton_scaled(rates[solve], lo[solve], eff_hi[solve], active[solve],
                                    cap[solve])
    return out


def _newton_scaled(
    rates: np.ndarray, lo: np.ndarray, hi: np.ndarray, active: np.ndarray, cap: np.ndarray
) -> np.ndarray:
    """:func:`_newton`, with maximums cut to the capacity and rows whose capacity needs it
    solved at unit scale (then clipped to the bounds as given: see the module docstring)."""
    hi = np.minimum(hi, cap[:, None])  # Σ = cap, so no share exceeds it (lo < cap here)
    shift = _shifts(cap)
    if shift is None:
        return _newton(rates, lo, hi, active, cap)
    out = _newton(rates, np.ldexp(lo, -shift[:, None]), np.ldexp(hi, -shift[:, None]), active,
                  np.ldexp(cap, -shift))
    return np.clip(np.ldexp(out, shift[:, None]), lo, hi)


SMALL = 12
"""Books with at most this many bids (rows × bidders with a rate) are solved in plain
Python: there numpy's fixed cost per call (some 40 calls) is most of the time (figures in
docs/performance.md). Beyond it, and with minimums and maximums to clip, numpy's
vectorised rows win (see :func:`_fill_row`)."""


def _fill_row(rates: list[float], lo: list[float], hi: list[float], cap: float) -> list[float]:
    """One row in plain Python: everyone at its maximum (as given), the minimums scaled to
    fit, or the level found by :func:`_level_row`, at unit scale if the capacity needs it."""
    top = max(rates, default=0.0)
    if top <= 0:  # nobody bids: everyone sits at its lo
        return list(lo) if sum(lo) <= cap else _fit_row(lo, cap)
    floor = TINY * top
    active = [i for i, x in enumerate(rates) if x >= floor and x > 0]
    r = {i: rates[i] / top for i in active}
    sum_lo = sum(lo)
    fixed = sum_lo - sum(lo[i] for i in active)  # bidders without rate sit at their lo
    if fixed + sum(hi[i] for i in active) <= cap:
        out = list(lo)
        for i in active:
            out[i] = hi[i]
        return out
    if sum_lo >= cap:  # the minimums alone fill the capacity (or it is 0): scaled to fit
        return _fit_row(lo, cap)
    hi = [min(h, cap) for h in hi]  # Σ = cap, so no share exceeds it (lo < cap here)
    shift = _shift(cap)
    if not shift:
        return _level_row(r, lo, hi, cap, fixed)
    out = _level_row(r, [math.ldexp(v, -shift) for v in lo],
                     [math.ldexp(v, -shift) for v in hi], math.ldexp(cap, -shift),
                     math.ldexp(fixed, -shift))
    return [min(max(math.ldexp(v, shift), low), high) if i in r else low
            for i, (v, low, high) in enumerate(zip(out, lo, hi, strict=True))]


def _fit_row(lo: list[float], cap: float) -> list[float]:
    """The minimums scaled down to sum to ``cap`` (≤ Σ lo), summed at unit scale."""
    shift = math.frexp(max(lo, default=0.0))[1]
    unit = [math.ldexp(v, -shift) for v in lo]
    total = sum(unit)
    return [v / total * cap if total > 0 else 0.0 for v in unit]


def _level_row(
    r: dict[int, float], lo: list[float], hi: list[float], cap: float, fixed: float
) -> list[float]:
    """Σ lo < cap < Σ effective hi: the level of :func:`_solve`, found by binary search over
    the sorted breakpoints (f evaluated afresh at each), then interpolated on the crossing
    segment with f and its slope summed afresh there. ``r``: the active bidders' rates
    (largest 1); ``fixed``: Σ lo of the others."""
    out = list(lo)  # bidders without rate sit at their lo
    # The common case: nobody is clipped, shares are the rates scaled to the capacity.
    level = (cap - fixed) / sum(r.values())
    if all(lo[i] <= level * x <= hi[i] for i, x in r.items()):
        for i, x in r.items():
            out[i] = level * x
        return _trim_row(out, lo, cap)
    starts = {i: lo[i] / x for i, x in r.items()}
    stops = {i: hi[i] / x for i, x in r.items()}

    def f(level: float) -> float:
        return fixed + sum(min(max(level * x, lo[i]), hi[i]) for i, x in r.items())

    points = sorted({*starts.values(), *stops.values()})
    # f(points[0]) = Σ lo < cap and f(points[-1]) = Σ effective hi > cap: bisect.
    a, b = 0, len(points) - 1
    while b - a > 1:
        mid = (a + b) // 2
        if f(points[mid]) >= cap:
            b = mid
        else:
            a = mid
    p0, p1 = points[a], points[b]
    slope = sum(x for i, x in r.items() if starts[i] <= p0 and stops[i] >= p1)
    level = p0 + (cap - f(p0)) / slope if slope > 0 else p1
    level = min(max(level, p0), p1) if math.isfinite(level) else p1
    for i, x in r.items():
        out[i] = min(max(level * x, lo[i]), hi[i])
    return _trim_row(out, lo, cap)


def _trim_row(out: list[float], lo: list[float], cap: float) -> list[float]:
    """:func:`_trim` for one row in plain Python."""
    excess = sum(out) - cap
    if excess <= 0:
        return out
    room = [o - low for o, low in zip(out, lo, strict=True)]
    total_room = sum(room)
    if total_room <= 0:
        return out
    return [max(o - excess * (m / total_room), low)
            for o, m, low in zip(out, room, lo, strict=True)]


NEWTON_STEPS = 24
"""Safeguarded Newton steps before a row falls back to the exact sort-based solver."""


@np.errstate(all="ignore")
def _newton(
    rates: np.ndarray, lo: np.ndarray, hi: np.ndarray, active: np.ndarray, cap: np.ndarray
) -> np.ndarray:
    """Rows where Σlo < cap < Σhi: find the level by safeguarded Newton on f(λ) = Σ clip(λr).

    f is monotone and piecewise linear, so a Newton step that lands on the right linear
    piece is exact; steps leaving the bracket are replaced by bisection. Rows that have
    not converged after :data:`NEWTON_STEPS` are solved exactly by :func:`_solve`.
    """
    rows = rates.shape[0]
    low = np.zeros(rows)
    high = np.where(active, hi / rates, 0.0).max(axis=1)
    level = np.minimum(cap / rates.sum(axis=1), high)
    tol = 1e-13 * cap  # relative: capacities far below 1 are solved as accurately
    shares = np.empty_like(rates)
    done = np.zeros(rows, dtype=bool)
    total = np.zeros(rows)
    for _ in range(NEWTON_STEPS):
        np.multiply(rates, level[:, None], out=shares)
        rising = (shares > lo) & (shares < hi)
        np.maximum(shares, lo, out=shares)
        np.minimum(shares, hi, out=shares)
        total = shares.sum(axis=1)
        gap = cap - total
        done = np.abs(gap) <= tol
        if done.all():
            break
        slope = np.einsum("ij,ij->i", rates, rising)
        low = np.where(gap > 0, np.maximum(low, level), low)
        high = np.where(gap < 0, np.minimum(high, level), high)
        step = level + gap / slope
        bad = ~np.isfinite(step) | (step <= low) | (step >= high)
        level = np.where(done, level, np.where(bad, 0.5 * (low + high), step))
    if not done.all():
        todo = ~done
        shares[todo] = _solve(rates[todo], lo[todo], hi[todo], active[todo], cap[todo])
        total[todo] = shares[todo].sum(axis=1)
    return _trim(shares, lo, cap, total)


@np.errstate(all="ignore")
def _solve(
    rates: np.ndarray, lo: np.ndarray, hi: np.ndarray, active: np.ndarray, cap: np.ndarray
) -> np.ndarray:
    """Rows where Σlo < cap < Σ effective hi: find λ on the sorted breakpoints.

    ``f`` at a breakpoint is summed afresh (a sum of non-negative terms) rather than read
    off running sums of slope changes: a running sum that adds and then removes a large
    rate loses the small ones beside it (rates may span 1e-200 to 1 after scaling), which
    once put the crossing on the wrong segment (rates [1, 1e-20], hi [0.5, 1]: shares 0)."""
    rows, n = rates.shape
    safe = np.where(active, rates, 1.0)
    eff_hi = np.where(active, hi, lo)
    # Breakpoints: a bidder starts rising at lo/r and stops at hi/r (inactive ones: 0).
    starts = np.where(active, lo / safe, 0.0)
    stops = np.where(active, hi / safe, 0.0)
    pts = np.sort(np.concatenate([starts, stops], 1), axis=1)
    idx = np.arange(rows)

    def f(level: np.ndarray) -> np.ndarray:
        return np.clip(level[:, None] * rates, lo, eff_hi).sum(axis=1)

    # f(pts[0]) = Σ lo < cap ≤ Σ eff hi = f(pts[-1]): bisect over the indices, every row at once.
    a, b = np.zeros(rows, dtype=np.intp), np.full(rows, 2 * n - 1, dtype=np.intp)
    while np.any(moving := b - a > 1):
        mid = (a + b) // 2
        reached = f(pts[idx, mid]) >= cap
        a, b = np.where(moving & ~reached, mid, a), np.where(moving & reached, mid, b)
    p0, p1 = pts[idx, a], pts[idx, b]
    # On the segment, f is exactly f(p0) + slope·(λ − p0), both summed afresh.
    f0 = f(p0)
    rising = active & (np.where(active, starts, np.inf) <= p0[:, None]) & (
        np.where(active, stops, -np.inf) >= p1[:, None])
    s0 = np.where(rising, rates, 0.0).sum(axis=1)
    level = np.where(s0 > 0, p0 + (cap - f0) / s0, p1)
    level = np.clip(np.where(np.isfinite(level), level, p1), p0, p1)
    return np.clip(level[:, None] * rates, lo, eff_hi)


def _trim(shares: np.ndarray, lo: np.ndarray, cap: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Remove any floating-point overshoot of Σ (``total``) over cap from shares above lo."""
    excess = total - cap
    rows = excess > 0
    if np.any(rows):
        room = shares[rows] - lo[rows]
        total_room = room.sum(axis=1, keepdims=True)
        share = room / np.where(total_room > 0, total_room, 1.0)  # (not excess·room: overflow)
        cut = excess[rows][:, None] * share
        shares[rows] = np.maximum(shares[rows] - cut, lo[rows])
    return shares


def headroom(lo: np.ndarray, capacity: float | np.ndarray = 1.0) -> np.ndarray:
    """What remains of the capacity once every minimum is reserved (per row; may be < 0)."""
    lo = np.asarray(lo, dtype=np.float64)
    return np.asarray(capacity, dtype=np.float64) - lo.sum(axis=-1)


def admissible(
    reserved: np.ndarray, new_lo: np.ndarray, capacity: float | np.ndarray = 1.0
) -> np.ndarray:
    """Per resource, can a new minimum be met on top of the reserved ones?

    ``reserved``: the existing minimums, shape ``(n,)`` or ``(R, n)``; ``new_lo``: the
    candidate's minimum, a scalar or one per row. True where Σ reserved + new ≤ capacity.
    """
    room = headroom(reserved, capacity)
    return np.asarray(new_lo, dtype=np.float64) <= room + TOLERANCE
