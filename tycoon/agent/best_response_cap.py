"""Best Response on at most ``max_hosts`` hosts (see ``docs/agent-math.md``).

Which ``m`` hosts to bid on is a combinatorial choice; the plain prefix by ``w/y`` can be far
off. We minimise the convex Lagrangian dual and solve candidate sets exactly by the closed
form of :mod:`tycoon.agent.best_response`, keeping the best and reporting the dual bound.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from tycoon.agent.best_response_solve import _solve, _solve_1d, utility

SWAP_ROUNDS = 64
"""At most this many improving moves of the swap search."""

SWAP_MOVES = 1024
"""Moves tried per round at most: the pool of hosts to swap in is cut to fit (best gains)."""


def _gains(root_w: np.ndarray, root_y: np.ndarray, lam: float) -> np.ndarray:
    """Per host, max_x w·x/(x+y) − λx = (sqrt(w) − sqrt(λy))₊² (w on a free host), from
    ``root_w`` = sqrt(max(w, 0)) and ``root_y`` = sqrt(y), computed once per solve."""
    return np.maximum(root_w - math.sqrt(lam) * root_y, 0.0) ** 2


def _dual_bound(budget: float, root_w: np.ndarray, root_y: np.ndarray, lam: float,
                cap: int | None) -> float:
    """Weak-duality bound λX + Σ (top ``cap``) gains(λ) ≥ the best utility."""
    g = _gains(root_w, root_y, lam)
    if cap is not None and cap < g.size:
        g = np.partition(g, g.size - cap)[g.size - cap :]
    return float(lam * budget + g.sum())


def _on_subset(
    budget: float, w: np.ndarray, y: np.ndarray, chosen: np.ndarray, eps: float
) -> tuple[np.ndarray, float, float]:
    bids = np.zeros_like(w)
    sub, lam, _ = _solve_1d(budget, w[chosen], y[chosen], eps)
    bids[chosen] = sub
    return bids, float(utility(bids, w, y)), float(lam)


def _top(score: np.ndarray, cap: int) -> np.ndarray:
    """Indices of the ``cap`` largest positive scores, ascending."""
    chosen = np.argpartition(-score, cap - 1)[:cap] if cap < score.size else np.arange(score.size)
    chosen = np.sort(chosen)
    return chosen[score[chosen] > 0]


def _tops(root_w: np.ndarray, root_y: np.ndarray, lams: np.ndarray, cap: int) -> list[np.ndarray]:
    """:func:`_top` of the gains at each of ``lams``, in one pass over a (λ × host) matrix."""
    gains = np.maximum(root_w[None, :] - np.sqrt(lams)[:, None] * root_y[None, :], 0.0) ** 2
    n = root_w.size
    if cap < n:
        rows = np.sort(np.argpartition(-gains, cap - 1, axis=1)[:, :cap], axis=1)
    else:
        rows = np.broadcast_to(np.arange(n), (lams.size, n))
    picked = np.take_along_axis(gains, rows, axis=1) > 0
    return [row[keep] for row, keep in zip(rows, picked, strict=True)]


def capped(budget: float, w: np.ndarray, y: np.ndarray, cap: int,
           eps: float) -> tuple[np.ndarray, float, float, float]:
    """Choose at most ``cap`` hosts (a heuristic; the choice is NP-hard-looking in general).

    Candidate sets: the plain prefix (free hosts by worth, then priced ones by ``w/y``); the
    top ``cap`` hosts by Lagrangian gain at the minimiser of the convex dual
    D(λ) = λX + Σ_top-cap (sqrt(w) − sqrt(λy))₊², then at the multiplier of each new solution
    until it repeats, then along a grid of λ. Each set is solved exactly by the closed form;
    the best wins. Returns its bids, utility and λ, and min D(λ) as the upper bound.
    """
    valued = w > 0
    free = valued & (y == 0)
    priced = valued & (y > 0)
    ratio = np.where(priced, w / np.where(priced, y, 1.0), 0.0)
    order = np.lexsort((-ratio, -np.where(free, w, 0.0)))
    prefix = np.sort(order[:cap])
    best_bids, best_u, best_lam = _on_subset(budget, w, y, prefix[valued[prefix]], eps)

    rw, ry = np.sqrt(np.maximum(w, 0.0)), np.sqrt(y)
    lo, hi = 0.0, float(ratio.max())
    bound = _dual_bound(budget, rw, ry, 0.0, cap)
    lam = 0.0
    if hi > 0:  # golden-section search of the convex D(λ) on [0, max w/y]
        inv_phi = (math.sqrt(5) - 1) / 2
        c, d = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
        fc, fd = _dual_bound(budget, rw, ry, c, cap), _dual_bound(budget, rw, ry, d, cap)
        for _ in range(100):
            if fc <= fd:
                hi, d, fd = d, c, fc
                c = hi - inv_phi * (hi - lo)
                fc = _dual_bound(budget, rw, ry, c, cap)
            else:
                lo, c, fc = c, d, fd
                d = lo + inv_phi * (hi - lo)
                fd = _dual_bound(budget, rw, ry, d, cap)
            if hi - lo <= 1e-12 * hi:
                break
        lam = (lo + hi) / 2
        bound = min(bound, fc, fd, _dual_bound(budget, rw, ry, lam, cap))
    top_ratio = float(ratio.max())
    # Candidate sets: the top ``cap`` by gain at the dual's minimiser and along a grid of λ
    # (one matrix), each followed by the multiplier of its own solution until a set repeats.
    # Every set reached is solved once; the order does not change which sets are reached.
    lams = np.geomspace(top_ratio * 1e-6, top_ratio, 24) if top_ratio > 0 else np.empty(0)
    todo = _tops(rw, ry, np.append(lams, lam), cap)
    seen: set[bytes] = set()
    while todo:
        chosen = todo.pop()
        key = chosen.tobytes()
        if chosen.size and key not in seen:
            seen.add(key)
            bids, value, lam_new = _on_subset(budget, w, y, chosen, eps)
            if value > best_u:
                best_bids, best_u, best_lam = bids, value, lam_new
            todo.append(_top(_gains(rw, ry, lam_new), cap))
    if best_u < bound * (1 - 1e-12):  # not certified optimal by the dual: try swaps
        best_bids, best_u, best_lam = _swap(budget, w, y, cap, eps, (best_bids, best_u, best_lam))
    return best_bids, best_u, best_lam, bound


def _swap(
    budget: float, w: np.ndarray, y: np.ndarray, cap: int, eps: float,
    best: tuple[np.ndarray, float, float],
) -> tuple[np.ndarray, float, float]:
    """Local search from ``best``: swap one chosen host for one unchosen (or add one while
    fewer than ``cap`` are used) as long as the utility improves. All moves of a round are
    solved at once by the batch closed form; the best improving one is re-solved exactly.
    The pool of hosts to swap in is every valued unchosen host, or, when (moves per host)
    × pool would exceed :data:`SWAP_MOVES`, those with the largest Lagrangian gain at the
    current multiplier."""
    bids, value, lam = best
    valued = w > 0
    rw, ry = np.sqrt(np.maximum(w, 0.0)), np.sqrt(y)
    for _ in range(SWAP_ROUNDS):
        chosen = np.flatnonzero(bids > 0)
        outside = np.flatnonzero(valued & (bids <= 0))
        if not outside.size:
            break
        outs = chosen.size + (chosen.size < cap)  # drop one of the chosen, or none
        size = max(1, SWAP_MOVES // outs)
        if outside.size > size:
            gain = _gains(rw[outside], ry[outside], lam)
            outside = outside[np.argpartition(-gain, size - 1)[:size]]
        cols = np.concatenate([chosen, outside])
        k, p = chosen.size, outside.size
        # One row per move: the chosen hosts minus ``out`` (none for the last block), plus one.
        mask = np.zeros((outs, p, k + p), dtype=bool)
        mask[:, :, :k] = True
        mask[np.arange(min(outs, k)), :, np.arange(min(outs, k))] = False
        mask[:, np.arange(p), k + np.arange(p)] = True
        mask = mask.reshape(outs * p, k + p)
        wm = np.where(mask, w[cols], 0.0)
        ym = np.broadcast_to(y[cols], wm.shape)
        with np.errstate(invalid="ignore", divide="ignore"):  # rows with only free hosts
            moved, _ = _solve(np.full(mask.shape[0], budget), wm, ym, eps)
        values = utility(moved, wm, ym)
        move = int(np.argmax(values))
        if not values[move] > value * (1 + 1e-12):
            break
        trial, trial_u, trial_lam = _on_subset(budget, w, y, cols[mask[move]], eps)
        if not trial_u > value:
            break
        bids, value, lam = trial, trial_u, trial_lam
    return bids, value, lam


def capped_exhaustive(budget: float, w: np.ndarray, y: np.ndarray, cap: int,
                      eps: float) -> float:
    """The best utility over every subset of at most ``cap`` hosts, each solved exactly: the
    reference :func:`capped` is measured against (exponential in the hosts; small cases)."""
    best = 0.0
    for size in range(1, cap + 1):
        for subset in itertools.combinations(range(w.size), size):
            best = max(best, _on_subset(budget, w, y, np.array(subset), eps)[1])
    return best
