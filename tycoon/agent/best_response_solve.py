"""The closed form of Best Response and its vectorised solvers (the maths behind
:mod:`tycoon.agent.best_response`, which checks inputs and is the public API).

Float-range edge cases are in :mod:`tycoon.agent.best_response_edges`; the far-price split
gets the unit solver passed in, so that module does not import this one.
"""

from __future__ import annotations

import math

import numpy as np

from tycoon.agent.best_response_edges import FAR, TIE, _far_split, _ties


def shares(bids: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Share ``x/(x+y)`` of each host (0 where we bid nothing, 1 on a free host we bid on)."""
    x = np.asarray(bids, dtype=np.float64)
    total = x + np.asarray(others, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(x > 0, x / np.where(total > 0, total, 1.0), 0.0)


def utility(bids: np.ndarray, weights: np.ndarray, others: np.ndarray) -> np.ndarray:
    """``Σ_j w_j · x_j/(x_j+y_j)`` along the last axis."""
    return np.sum(np.asarray(weights, dtype=np.float64) * shares(bids, others), axis=-1)


# --- the closed form ---------------------------------------------------------------------


def _solve_1d(
    budget: float, w: np.ndarray, y: np.ndarray, eps: float
) -> tuple[np.ndarray, float, float]:
    """One user: the same closed form as :func:`_solve`, shrinking the candidate arrays
    each filter round instead of masking. Returns bids, λ and the dual bound.

    The problem is scale-free, so it is solved with w / max w and money / max(X, max y)
    (no overflow in w/y for any finite input) and the answer scaled back; a budget far
    below the largest price is split off to :func:`_far_split`."""
    ws = float(w.max()) if w.size else 0.0
    ms = max(budget, float(y.max()) if y.size else 0.0)
    if ws <= 0 or ms <= 0:  # nothing worth buying, or no money at all
        return np.zeros(w.size), 0.0, 0.0
    if 0 < budget < ms / FAR:
        return _far_split(budget, w, y, eps, _solve_unit)
    bids, lam, bound = _solve_unit(budget / ms, w / ws, y / ms, eps)
    return bids * ms, lam * ws / ms, bound * ws


def _solve_unit(
    budget: float, w: np.ndarray, y: np.ndarray, eps: float
) -> tuple[np.ndarray, float, float]:
    bids = np.zeros(w.size)
    free = np.flatnonzero((w > 0) & (y == 0))
    idx = np.flatnonzero((w > 0) & (y > 0))
    to_free = (budget * eps if idx.size else budget) if free.size else 0.0
    rest = budget - to_free
    bound = float(w[free].sum()) if budget > 0 else 0.0
    if free.size:
        root_w = np.sqrt(w[free])
        bids[free] = root_w / root_w.sum() * to_free
    if not idx.size or rest <= 0:
        return bids, 0.0, bound
    yp = y[idx]
    sr = np.sqrt(w[idx]) / np.sqrt(yp)  # sqrt(w/y) without overflow
    top = float(sr.max())
    exact = None
    for _ in range(FILTER_ROUNDS):
        # Drop only the surely-out; hosts within TIE of the threshold are settled exactly by
        # _ties, after which the filter goes on if that dropped any.
        thr = float((yp * sr).sum()) / (rest + float(yp.sum()))
        keep = (sr > thr * (1 - TIE)) | (sr == top)
        if keep.all():
            ties = _ties(rest, yp, sr, thr)
            if ties is None:
                break
            keep, exact = ties
            if keep.all():
                break
            exact = None
        idx, yp, sr = idx[keep], yp[keep], sr[keep]
    else:  # still shrinking: sort what is left
        ones = np.ones((1, sr.size), dtype=bool)
        mask = _sorted_prefix(np.array([[rest]]), sr[None, :], yp[None, :], ones)
        idx, yp, sr = idx[mask[0]], yp[mask[0]], sr[mask[0]]
        exact = None
    a, b = float((yp * sr).sum()), float(yp.sum())
    d = float((yp * (top - sr)).sum())
    excess = _excess(sr, rest, a, b, d, top)
    if exact is not None:
        excess = np.where(np.isnan(exact), excess, exact)
    xs = np.maximum(yp / a * excess, 0.0)
    spent = float(xs.sum())
    if spent > 0:  # a Newton step on 1/sqrt(λ) (see _solve_rows)
        xs = np.maximum(xs + (rest - spent) * (yp * sr / a), 0.0)  # (yp sr / a ≤ 1)
        spent = float(xs.sum())
    if spent <= 0:  # underflow: everything on the best host
        xs[np.argmax(sr)] = spent = 1.0
    bids[idx] = xs * (rest / spent)
    root_lam = a / (rest + b)
    with np.errstate(over="ignore"):  # λ may lie beyond float range (a subnormal budget)
        lam = float(np.float64(root_lam) ** 2)
    # Dual bound λX + Σ_j (sqrt(w_j) − sqrt(λ y_j))₊²: only the chosen hosts have a gain.
    gains = (np.sqrt(w[idx]) - root_lam * np.sqrt(yp)).clip(0) ** 2
    spend_gain = root_lam * math.sqrt(budget)
    bound += spend_gain * spend_gain + float(np.sum(gains))
    return bids, lam, bound


FILTER_ROUNDS = 24
"""Threshold-filter rounds before falling back to a sort (see :func:`_prefix`)."""

Num = np.ndarray | float


def _excess(sr: np.ndarray, x: Num, a: Num, b: Num, d: Num, top: Num) -> np.ndarray:
    """sr_j (X + B) − A, accurately, so that x_j = y_j / A · excess_j. Two equal forms, each
    exact where the other cancels: the plain one, and sr_j X + D − B (sr_1 − sr_j) with
    D = Σ y_i (sr_1 − sr_i) ≥ 0 (no cancellation when X ≪ y; exact for ties and a single
    host). Per element the one with the smaller rounding error wins. (Membership needs no
    such care: sr_j > A/(X + B) compares two accurately computed numbers.)"""
    gap = top - sr
    plain = sr * (x + b) - a
    shifted = sr * x + d - b * gap
    return np.where(sr * (x + b) + a < sr * x + d + b * gap, plain, shifted)


def _solve(
    budget: np.ndarray, w: np.ndarray, y: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise closed form. Returns bids (M×N) and the multipliers λ (M,)."""
    m, n = w.shape
    bids = np.zeros((m, n))
    lam = np.zeros(m)
    if n == 0:
        return bids, lam
    ws = w.max(axis=1)  # scale-free: solve with w / max w and money / max(X, max y)
    ws = np.where(ws > 0, ws, 1.0)
    ms = np.maximum(budget, y.max(axis=1))
    ms = np.where(ms > 0, ms, 1.0)
    bids, lam = _solve_rows(budget / ms, w / ws[:, None], y / ms[:, None], eps)
    with np.errstate(over="ignore"):  # λ itself may be beyond float range: inf
        bids, lam = bids * ms[:, None], lam * ws / ms
    for i in np.flatnonzero((budget > 0) & (budget < ms / FAR) & (w > 0).any(axis=1)):
        bids[i], lam[i], _ = _far_split(float(budget[i]), w[i], y[i], eps, _solve_unit)
    return bids, lam


def _solve_rows(
    budget: np.ndarray, w: np.ndarray, y: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    m, n = w.shape
    bids = np.zeros((m, n))
    lam = np.zeros(m)
    priced = (w > 0) & (y > 0)
    free = (w > 0) & (y == 0)
    n_free = free.sum(axis=1)
    n_priced = priced.sum(axis=1)
    to_free = np.where(n_free > 0, np.where(n_priced > 0, budget * eps, budget), 0.0)
    rest = budget - to_free
    if n_free.any():
        root_w = np.sqrt(np.where(free, w, 0.0))
        total = root_w.sum(axis=1)
        bids += root_w / np.where(total > 0, total, 1.0)[:, None] * to_free[:, None]
    if not n_priced.any():
        return bids, lam  # free hosts are saturated: more money buys nothing more

    ys = np.where(priced, y, 0.0)
    sr = np.where(
        priced, np.sqrt(np.where(priced, w, 0.0)) / np.sqrt(np.where(priced, y, 1.0)), 0.0
    )
    top = sr.max(axis=1, keepdims=True)  # sr_1: the best sqrt(w/y) of each row
    x = rest[:, None]
    inside = _prefix(x, sr, ys, top, priced)
    yk = np.where(inside, ys, 0.0)
    a = np.sum(yk * sr, axis=1, keepdims=True)  # Σ sqrt(w_i y_i)
    b = np.sum(yk, axis=1, keepdims=True)  # Σ y_i
    d = np.sum(yk * (top - sr), axis=1, keepdims=True)  # Σ y_i (sr_1 − sr_i) ≥ 0
    safe_a = np.where(a > 0, a, 1.0)
    xs = np.where(inside, np.maximum(yk / safe_a * _excess(sr, x, a, b, d, top), 0.0), 0.0)
    spent = xs.sum(axis=1, keepdims=True)
    # A Newton step on u = 1/sqrt(λ): x_j = y_j sr_j u − y_j is linear in u, and rounding
    # errors (of u and of the cancelling sr_j u − 1) are ∝ y_j sr_j, so the residual goes
    # back in that proportion: mostly to heavily priced hosts, whose bids absorb it, rather
    # than rescaling every bid (which moved small bids by the heavy ones' error: 1e-5 of
    # the utility with prices 1e14 and 0.1).
    step = np.where(spent > 0, x - spent, 0.0)
    xs = np.maximum(xs + step * (yk * sr / safe_a), 0.0)  # (yk sr / a ≤ 1: no overflow)
    spent = xs.sum(axis=1)
    lost = (spent <= 0) & (rest > 0) & (n_priced > 0)
    if lost.any():  # underflow: everything on the best host
        best = np.argmax(np.where(priced, sr, -1.0), axis=1)
        xs[lost, best[lost]] = 1.0
        spent = np.where(lost, 1.0, spent)
    xs *= (rest / np.where(spent > 0, spent, 1.0))[:, None]
    bids += xs
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # λ may be inf
        lam = np.where(n_priced > 0, (a[:, 0] / (rest + b[:, 0])) ** 2, 0.0)
        t = a / (x + b)
        tied = (priced & (np.abs(sr - t) <= TIE * t)).any(axis=1)
    for i in np.flatnonzero(tied):  # near ties: the 1-D solver settles them exactly
        bids[i], lam[i], _ = _solve_unit(float(budget[i]), w[i], y[i], eps)
    return bids, lam


def _prefix(
    x: np.ndarray, sr: np.ndarray, ys: np.ndarray, top: np.ndarray, priced: np.ndarray
) -> np.ndarray:
    """Mask of the hosts in the optimal prefix of each row.

    With hosts sorted by sr = sqrt(w/y), f(k) = A_k/(X + B_k) is unimodal and the optimal
    prefix is where it peaks; a host belongs to it iff sr_j > max f. So start from all
    priced hosts and keep those with sr_j > f(current set): f only rises, the set only
    shrinks and always contains the optimum, and its fixed point is the optimum. That takes
    a few O(N) rounds and no sort; rows still moving after ``FILTER_ROUNDS`` are finished
    by sorting their remaining candidates.
    """
    inside = priced.copy()
    active = np.ones(inside.shape[0], dtype=bool)
    for _ in range(FILTER_ROUNDS):
        if not active.any():
            return inside
        sub = inside[active]
        y_sub, sr_sub, top_sub = ys[active], sr[active], top[active]
        yk = np.where(sub, y_sub, 0.0)
        a = np.sum(yk * sr_sub, axis=1, keepdims=True)
        thr = a / (x[active] + yk.sum(axis=1, keepdims=True)) * (1 - TIE)  # (see _solve_unit)
        keep = sub & (sr_sub > thr)
        keep |= sub & (sr_sub == top_sub)  # the best host always stays (X > 0)
        changed = (keep != sub).any(axis=1)
        inside[active] = keep
        active[active] = changed
    if active.any():
        inside[active] = _sorted_prefix(x[active], sr[active], ys[active], inside[active])
    return inside


def _sorted_prefix(x: np.ndarray, sr: np.ndarray, ys: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """The same mask by sorting: the largest prefix k with sr_k > A_k/(X + B_k)."""
    m, n = sr.shape
    order = np.argsort(-np.where(cand, sr, -1.0), axis=1, kind="stable")
    srs = np.take_along_axis(np.where(cand, sr, 0.0), order, axis=1)
    yss = np.take_along_axis(np.where(cand, ys, 0.0), order, axis=1)
    valid = np.take_along_axis(cand, order, axis=1)
    keep = valid & (srs > np.cumsum(yss * srs, axis=1) / (x + np.cumsum(yss, axis=1)))
    keep[:, 0] |= valid[:, 0]
    k = np.where(keep.any(axis=1), n - np.argmax(keep[:, ::-1], axis=1), 0)
    inside_sorted = np.arange(n)[None, :] < k[:, None]
    inside = np.zeros((m, n), dtype=bool)
    np.put_along_axis(inside, order, inside_sorted, axis=1)
    return inside


# --- input checks ----------------------------------------------------------------------------
