"""Best Response: how to split a spending rate over proportional-share hosts.

Maximise ``Σ_j w_j·x_j/(x_j+y_j)`` subject to ``Σ_j x_j = X``, ``x_j ≥ 0`` (Feldman, Lai,
Zhang 2005), where ``X`` is the budget as a spending rate, ``y_j`` the others' bid rate on
host ``j`` and ``w_j`` what the whole host is worth to us. Closed form: sort hosts by
``w_j/y_j``, keep the largest prefix ``k`` with ``sqrt(w_k/y_k) > Σ_{i≤k} sqrt(w_i y_i) /
(X + Σ_{i≤k} y_i)`` and bid ``x_j = sqrt(w_j y_j)(X + Σy)/Σ sqrt(w y) − y_j`` there.
Everything is vectorised; :func:`best_response_batch` solves many users at once.

Hosts nobody else bids on (``y_j = 0``) are won whole by any positive bid, so the optimum
is a supremum that no bid vector attains. They get a slice ``zero_price_fraction · X`` of
the budget, split in proportion to ``sqrt(w_j)`` (the limit of the closed form as those
``y_j → 0`` together), and the rest is best-responded over the priced hosts; if every
valued host is free, they share all of ``X`` that way. The utility lost is at most that
fraction of the optimum. ``docs/agent-math.md`` has the derivation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tycoon.agent.best_response_cap import capped
from tycoon.agent.best_response_solve import _solve, _solve_1d, shares, utility
from tycoon.errors import Rejected

ZERO_PRICE_FRACTION = 1e-7
"""Default share of the budget reserved for hosts with no other bidder."""


@dataclass(frozen=True)
class BestResponse:
    """The solution: bids per host, the shares they buy, and the utility."""

    bids: np.ndarray
    """Bid rate ``x_j`` per host (same order as the input); sums to the budget rate."""
    shares: np.ndarray
    """Expected share ``x_j/(x_j+y_j)`` per host (0 where we do not bid)."""
    utility: float
    """``Σ_j w_j · share_j``."""
    marginal: float
    """Utility gained per extra unit of spending rate (the KKT multiplier λ)."""
    bound: float
    """An upper bound on the best achievable utility (equal to ``utility`` up to rounding
    and the zero-price slice without ``max_hosts``; a Lagrangian bound with it)."""

    @property
    def hosts(self) -> np.ndarray:
        """Indices of the hosts we bid on, highest bid first."""
        chosen = np.flatnonzero(self.bids > 0)
        return chosen[np.argsort(-self.bids[chosen], kind="stable")]


def best_response(
    budget_rate: float,
    weights: np.ndarray,
    others: np.ndarray,
    *,
    max_hosts: int | None = None,
    zero_price_fraction: float = ZERO_PRICE_FRACTION,
) -> BestResponse:
    """Best split of ``budget_rate`` over hosts worth ``weights`` with others bidding ``others``.

    ``max_hosts`` caps how many hosts get a bid (the choice of hosts is then a heuristic
    guided by the Lagrangian dual, see ``docs/agent-math.md``; ``bound`` tells how far from
    optimal it can be). Raises ``Rejected("bad_input")`` on invalid input.
    """
    budget = _check_budget(budget_rate)
    w = _check_vector(weights, "weights")
    y = _check_vector(others, "others")
    if w.shape != y.shape:
        raise Rejected("bad_input", f"weights {w.shape} and others {y.shape} differ in shape")
    _check_fraction(zero_price_fraction)
    if max_hosts is not None and (
        isinstance(max_hosts, bool) or not isinstance(max_hosts, int) or max_hosts < 1
    ):
        raise Rejected("bad_input", f"max_hosts must be a positive integer, not {max_hosts!r}")
    x, lam, bound = _solve_1d(budget, w, y, zero_price_fraction)
    value = float(utility(x, w, y))
    if max_hosts is not None and np.count_nonzero(x) > max_hosts:
        x, value, lam, bound = capped(budget, w, y, max_hosts, zero_price_fraction)
    return BestResponse(x, shares(x, y), value, lam, max(bound, value))


def best_response_batch(
    budget_rates: np.ndarray,
    weights: np.ndarray,
    others: np.ndarray,
    *,
    zero_price_fraction: float = ZERO_PRICE_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """Best responses of ``M`` users at once: rows of ``weights``/``others`` (M×N).

    Returns ``(bids, marginal)``: bids (M×N) and each user's multiplier λ (M,). No input
    checks beyond shapes: this is the simulator's inner loop.
    """
    x = np.asarray(budget_rates, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    y = np.asarray(others, dtype=np.float64)
    if w.ndim != 2 or w.shape != y.shape or x.shape != (w.shape[0],):
        raise Rejected("bad_input", "batch shapes must be budgets (M,), weights and others (M,N)")
    return _solve(x, w, y, zero_price_fraction)


def best_response_bids(
    budget_rate: float,
    weights: np.ndarray,
    others: np.ndarray,
    *,
    zero_price_fraction: float = ZERO_PRICE_FRACTION,
) -> np.ndarray:
    """Just the bids of :func:`best_response`, without input checks (float64 1-D arrays
    of one shape, finite, >= 0): the inner loop of sequential simulations."""
    return _solve_1d(float(budget_rate), weights, others, zero_price_fraction)[0]


def _check_budget(value: object) -> float:
    try:
        budget = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise Rejected("bad_input", f"budget rate must be a number, not {value!r}") from None
    if not math.isfinite(budget) or budget < 0:
        raise Rejected("bad_input", f"budget rate must be finite and >= 0, not {budget}")
    return budget


def _check_vector(value: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise Rejected("bad_input", f"{name} must be an array of numbers") from None
    if arr.ndim != 1:
        raise Rejected("bad_input", f"{name} must be one-dimensional, not shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise Rejected("bad_input", f"{name} must be finite and >= 0")
    return arr


def _check_fraction(value: float) -> None:
    if not (isinstance(value, int | float) and 0 < value < 1):
        raise Rejected("bad_input", f"zero_price_fraction must be in (0, 1), not {value!r}")
