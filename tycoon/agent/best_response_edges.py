"""Best Response at the edges of float range (see ``docs/agent-math.md``, *Numerics*).

Two cases the closed form of :mod:`tycoon.agent.best_response` cannot settle by plain
floating point: hosts whose ``sqrt(w/y)`` agrees with the membership threshold to rounding
(:func:`_ties`, exact sums), and budgets far below some prices (:func:`_far_split`, those
hosts are linear).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

TIE = 1e-12
"""Hosts whose ``sqrt(w/y)`` lies within this relative distance of the threshold are
decided, and their bids computed, by exact sums (:func:`_ties`)."""

TIE_GROUPS = 64
"""At most this many distinct near-threshold values are settled exactly."""


def _ties(
    x: float, y: np.ndarray, sr: np.ndarray, t: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Membership and excess of hosts whose ``sr`` is within :data:`TIE` of the threshold
    ``t``, exactly; None if there are none.

    ``sr_j > A/(X + B)`` decides membership, but when the two agree to rounding the answer
    is noise, and a host priced far above the others then loses (or wins) a large bid on
    it: w = (1e16, 1, …, 1, 1), y = (1e16, 1, …, 1, 0.1), X = 1 put everything on the last
    host (utility 0.91 of 1.47). So the sure members (``sr > t(1 + TIE)``) are kept and the
    near values, largest first, are added while their excess
    ``e(v) = v X + Σ_{i∈C} y_i (v − sr_i)`` is positive — summed exactly by ``math.fsum``,
    tied hosts contributing exactly 0 — which is the prefix rule on them. Returns the
    member mask and, for the near members, their excess in the final set (NaN elsewhere)."""
    near = np.abs(sr - t) <= TIE * t
    if not near.any():
        return None
    members = sr > t * (1 + TIE)

    def excess(v: float) -> float:
        return math.fsum([v * x, *(y[members] * (v - sr[members])).tolist()])

    added = []
    for v in np.unique(sr[near])[::-1][:TIE_GROUPS].tolist():
        if excess(v) <= 0 and members.any():
            break
        members |= sr == v
        added.append(v)
    exact = np.full(sr.size, np.nan)
    for v in added:
        exact[sr == v] = excess(v)
    return members, exact


FAR = 2.0**400
"""A host priced above ``FAR`` × the budget is *far*: any bid on it is below 2⁻⁴⁰⁰ of its
price, so its share is linear in the bid (``x/y``) to that precision."""


UnitSolver = Callable[[float, np.ndarray, np.ndarray, float], tuple[np.ndarray, float, float]]


@np.errstate(over="ignore", under="ignore", divide="ignore")
def _far_split(
    budget: float, w: np.ndarray, y: np.ndarray, eps: float, solve_unit: UnitSolver
) -> tuple[np.ndarray, float, float]:
    """Best Response when some hosts are far (priced above :data:`FAR` × the budget).

    Scaling money by the largest price would push the budget below float range, and
    scaling by the budget would overflow the far prices. But a far host is linear: worth
    ``r_f = w_f/y_f`` per unit of bid, so of all far hosts only the best ``r_f`` (compared
    as logarithms) can matter, and it takes money exactly while ``r_f`` beats the
    multiplier of the other hosts. So: solve the near hosts exactly (at a scale where the
    budget is ≥ 2⁻⁴⁰⁰ of their prices); if ``sqrt(r_f)`` exceeds their ``sqrt(λ)``, give them
    what they take at ``λ = r_f``, ``x_j = y_j (sqrt(w_j/y_j)/sqrt(r_f) − 1)₊``, and the far
    host the rest. Free hosts get their usual slice. Returns bids, λ, the dual bound.
    ``solve_unit`` is :func:`tycoon.agent.best_response_solve._solve_unit`."""
    bids = np.zeros(w.size)
    ws = float(w.max())
    wu = w / ws
    priced = (w > 0) & (y > 0)
    far = np.flatnonzero(priced & (y > budget * FAR))
    close = priced & (y <= budget * FAR)
    s = max(budget, float(y[close].max())) if close.any() else budget
    yu_all = y / s  # money in units of s: the budget is >= 2^-400 of every close price
    # Close hosts whose price or worth vanishes at this scale are free or worthless, as in
    # the unit-scale solve.
    near = np.flatnonzero(close & (yu_all > 0) & (wu > 0))
    free = np.flatnonzero((w > 0) & ((y == 0) | (close & (yu_all == 0))))
    if not far.size:  # only hosts worth nothing are far: the unit-scale solve
        sub, lam, bound = solve_unit(budget / s, wu, np.where(w > 0, yu_all, 0.0), eps)
        return sub * s, _lam(math.log(lam), ws, s) if lam > 0 else 0.0, bound * ws
    rest = budget * (1 - eps) if free.size else budget
    bound = float(wu[free].sum())  # worth units (× ws at the end)
    if free.size:
        root_w = np.sqrt(w[free])
        bids[free] = root_w / root_w.sum() * (budget - rest)
    log_r = np.log(w[far]) - math.log(ws) - np.log(y[far])
    best = far[np.argmax(log_r)]
    half_log_rf = 0.5 * float(log_r.max())  # log sqrt(r_f), r_f in worth units / money
    x_u = rest / s
    root_rf = math.exp(half_log_rf + 0.5 * math.log(s))  # sqrt(r_f) in these units
    if near.size:
        yu = yu_all[near]
        sr = np.sqrt(wu[near]) / np.sqrt(yu)
        xs, _, _ = solve_unit(x_u, wu[near], yu, eps)
        j = int(np.argmax(xs))
        root_lam = float(sr[j] * yu[j] / (xs[j] + yu[j]))  # sqrt(λ) of the near solution
        if root_rf <= root_lam:  # the far host is not worth its multiplier: no bid
            bids[near] = xs * s
            gains = np.maximum(np.sqrt(wu[near]) - root_lam * np.sqrt(yu), 0.0) ** 2
            spend_gain = root_lam * math.sqrt(budget / s)
            return bids, _lam(2 * math.log(root_lam), ws, s), (
                bound + spend_gain * spend_gain + float(gains.sum())) * ws
        # sqrt(w·y)/sqrt(r_f) − y, not y·(sr/sqrt(r_f) − 1): sr/sqrt(r_f) overflows for a near
        # price at the bottom of float range (y = 1e-198 beside a far 1e300, budget 1e111)
        take = (np.maximum(np.sqrt(wu[near]) * np.sqrt(yu) / root_rf - yu, 0.0) if root_rf > 0
                else np.zeros(near.size))
        spent = float(take.sum())
        if spent > x_u:  # rounding: λ = r_f spends all of it
            take *= x_u / spent
            spent = x_u
        bids[near] = take * s
        gains = np.maximum(np.sqrt(wu[near]) - root_rf * np.sqrt(yu), 0.0) ** 2
        bound += float(gains.sum())
        bids[best] = (x_u - spent) * s
    else:
        bids[best] = rest
    # λ = r_f; the far hosts' gains at λ are 0 (their ratios are at most r_f).
    bound += math.exp(2 * half_log_rf + math.log(budget))
    return bids, _lam(2 * half_log_rf, ws, 1.0), bound * ws


def _lam(log_unit_lam: float, ws: float, s: float) -> float:
    """λ in the caller's units from log λ in worth units / money units ``s`` (may be inf)."""
    with np.errstate(over="ignore", under="ignore"):
        return float(np.exp(log_unit_lam + math.log(ws) - math.log(s)))
