"""Equilibrium mode: users best-respond until no bid moves, with adaptive damping.

Each round every user ``i`` computes its Best Response ``BR_i`` to the others' current bids
and moves part of the way there: ``x_i ← x_i + α (BR_i − x_i)``. ``method="simultaneous"``
solves all users at once (one vectorised batch per round, Jacobi style);
``"sequential"`` updates users in turn, each seeing the bids already moved this round
(Gauss-Seidel). Plain undamped best response can cycle, so ``α`` starts at ``damping`` and
is halved whenever the largest move has not reached a new low for ``patience`` rounds
(down to ``min_damping``).

The run has converged when the largest move ``max_i ‖BR_i − x_i‖₁ / budget_i`` is below
``tol`` (every user is within ``tol`` of its best response), or when, checked every
``check_every`` rounds, the Nash gap (the largest relative utility a user could still
gain by deviating) is below ``gap_tol``: an ε-Nash equilibrium even if some bids on hosts a
user barely values still flicker. A run that hits ``max_rounds`` is reported as not
converged, and its figures must not be quoted as equilibrium results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tycoon.agent.best_response import best_response_batch, best_response_bids, utility
from tycoon.errors import Rejected
from tycoon.sim.market import Game, allocate

METHODS = ("simultaneous", "sequential")


@dataclass
class Equilibrium:
    """The outcome of an equilibrium run."""

    bids: np.ndarray
    shares: np.ndarray
    converged: bool
    criterion: str
    """Why it stopped: "bids" (no bid moves more than ``tol``), "utility" (nobody can gain
    more than ``gap_tol`` of its utility by deviating: an ε-Nash equilibrium) or ""."""
    rounds: int
    residual: float
    """The largest relative bid move of the last round."""
    nash_gap: float
    """max_i (u_i(BR_i) − u_i(x)) / u_i(BR_i) at the end."""
    damping: float
    history: list[float] = field(default_factory=list)
    """The residual of each round."""
    prices: list[np.ndarray] = field(default_factory=list)
    """Each host's price (Σ bids) after each recorded round (``record=True``)."""


def initial_bids(market: Game) -> np.ndarray:
    """Everyone spreads its budget in proportion to its values."""
    w = market.values
    total = w.sum(axis=1, keepdims=True)
    spread = np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0)
    return spread * market.budgets[:, None]


def solve_equilibrium(
    market: Game,
    *,
    tol: float = 1e-9,
    max_rounds: int = 5000,
    method: str = "sequential",
    damping: float = 1.0,
    min_damping: float = 1e-3,
    patience: int = 20,
    gap_tol: float = 1e-10,
    check_every: int = 10,
    record: bool = False,
    start: np.ndarray | None = None,
) -> Equilibrium:
    """Iterate damped best responses from ``start`` (default :func:`initial_bids`)."""
    if method not in METHODS:
        raise Rejected("bad_input", f"method must be one of {METHODS}, not {method!r}")
    if not (0 < min_damping <= damping <= 1) or not (tol > 0 and gap_tol > 0) or max_rounds < 1:
        raise Rejected(
            "bad_input", "need 0 < min_damping <= damping <= 1, tolerances > 0, rounds >= 1"
        )
    budgets = market.budgets
    scale = np.where(budgets > 0, budgets, 1.0)
    x = initial_bids(market) if start is None else np.array(start, dtype=np.float64)
    history: list[float] = []
    prices: list[np.ndarray] = []
    alpha = damping
    best = np.inf
    stall = 0
    criterion = ""
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        if method == "simultaneous":
            move = _simultaneous_round(market, x, alpha, scale)
        else:
            move = _sequential_round(market, x, alpha, scale)
        history.append(move)
        if record:
            prices.append(x.sum(axis=0))
        if move < tol:
            criterion = "bids"
            break
        if rounds % check_every == 0 and _nash_gap(market, x) < gap_tol:
            criterion = "utility"  # an ε-Nash equilibrium, though some tiny bids still move
            break
        if move < best * (1 - 1e-3):
            best, stall = move, 0
        else:  # no new low for `patience` rounds: cycling, so damp more
            stall += 1
            if stall >= patience and alpha > min_damping:
                alpha, stall = max(alpha / 2, min_damping), 0
    return Equilibrium(
        bids=x,
        shares=allocate(x),
        converged=bool(criterion),
        criterion=criterion,
        rounds=rounds,
        residual=history[-1] if history else 0.0,
        nash_gap=_nash_gap(market, x),
        damping=alpha,
        history=history,
        prices=prices,
    )


def _simultaneous_round(market: Game, x: np.ndarray, alpha: float, scale: np.ndarray) -> float:
    """All users best-respond to the same bids; returns the largest relative move."""
    others = x.sum(axis=0)[None, :] - x
    np.maximum(others, 0.0, out=others)  # rounding in the column sums
    response, _ = best_response_batch(market.budgets, market.values, others)
    delta = response - x
    move = float(np.max(np.abs(delta).sum(axis=1) / scale))
    x += alpha * delta
    return move


def _sequential_round(market: Game, x: np.ndarray, alpha: float, scale: np.ndarray) -> float:
    """Users best-respond in turn, each to the bids as they are now."""
    total = x.sum(axis=0)
    move = 0.0
    for i in range(market.users):
        others = np.maximum(total - x[i], 0.0)
        response = best_response_bids(market.budgets[i], market.values[i], others)
        delta = response - x[i]
        move = max(move, float(np.abs(delta).sum() / scale[i]))
        x[i] += alpha * delta
        total = others + x[i]
    return move


def _nash_gap(market: Game, x: np.ndarray) -> float:
    """max_i (u_i(BR_i) − u_i(x_i)) / u_i(BR_i): what the most tempted user would gain."""
    others = np.maximum(x.sum(axis=0)[None, :] - x, 0.0)
    response, _ = best_response_batch(market.budgets, market.values, others)
    now = utility(x, market.values, others)
    best = utility(response, market.values, others)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.where(best > 0, (best - now) / np.where(best > 0, best, 1.0), 0.0)
    return float(max(gap.max(), 0.0)) if gap.size else 0.0
