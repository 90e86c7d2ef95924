"""Measures of an allocation: efficiency, fairness (uniformity, envy), utilization.

With linear values ``w_ij`` (the worth of the whole host ``j`` to user ``i``) and shares
``s_ij``: utility ``u_i = Σ_j w_ij s_ij``; welfare ``Σ_i u_i``; optimal welfare
``Σ_j max_i w_ij`` (each host to whoever values it most); efficiency = welfare / optimal.
Values are normalised per user (``Σ_j w_ij = 1``, as in Zhang's balanced game) by the
market generators, so welfare is not dominated by whoever has the largest numbers.
Utility uniformity = min_i u_i / max_i u_i (Feldman, Lai, Zhang). Envy ratio of ``i``
towards ``k`` = ``u_i(s_i) / u_i(s_k)``; an allocation is ``c``-approximately envy-free
when every ratio is ≥ ``c``. Utilization = share of the capacity held by users who value
it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Measures:
    """The figures of one allocation."""

    welfare: float
    optimal_welfare: float
    efficiency: float
    uniformity: float
    min_envy_ratio: float
    utilization: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def utilities(values: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """u_i = Σ_j w_ij s_ij."""
    return np.sum(values * shares, axis=1)


def optimal_welfare(values: np.ndarray) -> float:
    """Σ_j max_i w_ij: the best any allocation of these hosts can do with linear values."""
    return float(values.max(axis=0).sum()) if values.size else 0.0


def envy_matrix(values: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """E[i, k] = u_i(s_i) / u_i(s_k) (inf where i values k's bundle at 0; diagonal inf)."""
    cross = values @ shares.T  # cross[i, k] = u_i(s_k)
    own = np.diag(cross)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(cross > 0, own / np.where(cross > 0, cross, 1.0), np.inf)
    np.fill_diagonal(ratio, np.inf)
    return ratio


def min_envy_ratio(values: np.ndarray, shares: np.ndarray) -> float:
    """The largest c such that the allocation is c-approximately envy-free (≥ 1: envy-free;
    inf when no user values another's bundle at all)."""
    if values.shape[0] < 2:
        return float("inf")
    return float(envy_matrix(values, shares).min())


def uniformity(u: np.ndarray) -> float:
    """min_i u_i / max_i u_i (1 when every user gets the same utility)."""
    top = float(u.max()) if u.size else 0.0
    return float(u.min()) / top if top > 0 else 1.0


def utilization(values: np.ndarray, shares: np.ndarray, capacities: np.ndarray) -> float:
    """Share of the total capacity held by users who value what they hold."""
    useful = np.sum(np.where(values > 0, shares, 0.0), axis=0)
    total = float(capacities.sum())
    return float(np.sum(np.minimum(useful, 1.0) * capacities)) / total if total > 0 else 0.0


def measure(values: np.ndarray, shares: np.ndarray, capacities: np.ndarray) -> Measures:
    """All figures of one allocation."""
    u = utilities(values, shares)
    best = optimal_welfare(values)
    welfare = float(u.sum())
    return Measures(
        welfare=welfare,
        optimal_welfare=best,
        efficiency=welfare / best if best > 0 else 1.0,
        uniformity=uniformity(u),
        min_envy_ratio=min_envy_ratio(values, shares),
        utilization=utilization(values, shares, capacities),
    )
