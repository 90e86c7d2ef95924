"""Simulated markets: hosts with capacities, users with budgets and linear values.

A market of ``N`` hosts and ``M`` users is three arrays: ``capacities`` (N,), ``values``
(M×N, what the WHOLE host ``j`` is worth to user ``i``, capacity included) and
``budgets`` (M,, spending rates). A user holding share ``s_ij`` of host ``j`` gets utility
``Σ_j values_ij · s_ij``. Shares come from the auctioneer's allocation core
(:func:`tycoon.auctioneer.allocation.water_fill`), called in one place: :func:`allocate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tycoon.auctioneer.allocation import water_fill
from tycoon.errors import Rejected


@dataclass(frozen=True)
class Game:
    """Hosts, users, values and budgets of one simulated market."""

    capacities: np.ndarray
    values: np.ndarray
    budgets: np.ndarray

    def __post_init__(self) -> None:
        c, w, b = self.capacities, self.values, self.budgets
        if c.ndim != 1 or w.ndim != 2 or b.ndim != 1 or w.shape != (b.size, c.size):
            raise Rejected("bad_input", "capacities (N,), values (M,N) and budgets (M,) expected")
        for name, arr in (("capacities", c), ("values", w), ("budgets", b)):
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise Rejected("bad_input", f"{name} must be finite and >= 0")

    @property
    def users(self) -> int:
        return int(self.budgets.size)

    @property
    def hosts(self) -> int:
        return int(self.capacities.size)


def balanced_game(users: int, hosts: int, rng: np.random.Generator) -> Game:
    """Zhang's balanced game: equal budgets (1) and linear values with Σ_j w_ij = 1.

    Values are uniform random before normalising; capacities are 1 (a value already is
    the worth of the whole host).
    """
    _check_size(users, hosts)
    values = rng.uniform(0.0, 1.0, (users, hosts))
    values /= values.sum(axis=1, keepdims=True)
    return Game(np.ones(hosts), values, np.ones(users))


def random_market(
    users: int,
    hosts: int,
    rng: np.random.Generator,
    *,
    budget_spread: float = 1.0,
    sparsity: float = 0.0,
    capacity_spread: float = 0.5,
) -> Game:
    """Heterogeneous market: lognormal budgets (σ = ``budget_spread``) and capacities
    (σ = ``capacity_spread``), values = capacity × a uniform preference, a fraction
    ``sparsity`` of (user, host) pairs worth nothing, each user valuing at least one host."""
    _check_size(users, hosts)
    capacities = rng.lognormal(0.0, capacity_spread, hosts)
    prefs = rng.uniform(0.0, 1.0, (users, hosts))
    prefs[rng.random((users, hosts)) < sparsity] = 0.0
    empty = prefs.sum(axis=1) == 0
    prefs[empty, rng.integers(0, hosts, int(empty.sum()))] = 1.0
    values = prefs * capacities
    values /= values.sum(axis=1, keepdims=True)  # each user values the cluster at 1
    budgets = rng.lognormal(0.0, budget_spread, users)
    return Game(capacities, values, budgets / budgets.mean())


def allocate(bids: np.ndarray) -> np.ndarray:
    """Shares (M×N, fractions of each host) from bid rates (M×N): proportional share.

    The one place the simulator calls the auctioneer's allocation core: one water-fill
    row per host, bidders without bounds (lo = 0, hi = 1), capacity 1 (a fraction).
    """
    rates = np.ascontiguousarray(np.asarray(bids, dtype=np.float64).T)
    if rates.size == 0:
        return np.zeros_like(rates.T)
    zeros = np.zeros_like(rates)
    return water_fill(rates, zeros, np.ones_like(rates), 1.0, validate=False).T


def proportional_share(values: np.ndarray) -> np.ndarray:
    """Plain proportional share: every user who values a host gets an equal part of it
    (every user the same weight, no bidding), through the same allocation core."""
    return allocate((np.asarray(values) > 0).astype(np.float64))


def _check_size(users: int, hosts: int) -> None:
    if not (isinstance(users, int) and isinstance(hosts, int) and users >= 1 and hosts >= 1):
        raise Rejected("bad_input", f"need at least one user and one host, not {users}×{hosts}")
