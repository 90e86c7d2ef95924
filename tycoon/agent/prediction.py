"""Price prediction (Sandholm, Lai): what a bid buys when the others' price is random.

On a host the others bid a random total rate ``Y ≥ 0``; a bid ``x`` gets the share
``x/(x+Y)``, which is at least ``p`` exactly when ``Y ≤ x(1−p)/p``. So with ``F`` the
distribution of ``Y`` and ``F⁻¹`` its quantile:

- ``get_probability(p, x) = F(x(1−p)/p)``: how likely a bid ``x`` buys share ``p``;
- ``get_price(p, q) = p/(1−p) · F⁻¹(q)``: the least bid that buys ``p`` with probability ``q``;
- ``get_performance(q, x) = x/(x + F⁻¹(q))``: the share ``x`` buys with probability ``q``.

``F`` comes from the SLS's price statistics (see ``docs/agent-math.md``) through one of:
``normal`` (censored at 0), ``maxent`` (maximum entropy density matching the first four
moments, fitted numerically on a grid), ``chebyshev`` (distribution-free: Cantelli's bound,
the least favourable distribution with that mean and variance) and ``histogram`` (the
SLS's histogram, linear inside a bin).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Protocol

import numpy as np

from tycoon.errors import Rejected

MODELS = ("normal", "maxent", "chebyshev", "histogram")
WINDOWS = ("minute", "hour", "day")
_STD_NORMAL = NormalDist()


class PriceDistribution(Protocol):
    """The distribution of the others' price ``Y ≥ 0`` on a host."""

    def cdf(self, y: float) -> float:
        """P(Y ≤ y)."""
        ...

    def quantile(self, q: float) -> float:
        """The least ``y ≥ 0`` with P(Y ≤ y) ≥ q (``inf`` if there is none)."""
        ...


@dataclass(frozen=True)
class PointMass:
    """A price that does not vary (no variance, or a single sample)."""

    value: float

    def cdf(self, y: float) -> float:
        return 1.0 if y >= self.value else 0.0

    def quantile(self, q: float) -> float:
        return 0.0 if q <= 0 else self.value


@dataclass(frozen=True)
class NormalPrice:
    """N(mean, std²) censored at 0: a negative draw means nobody else bids."""

    mean: float
    std: float

    def cdf(self, y: float) -> float:
        return 0.0 if y < 0 else _STD_NORMAL.cdf((y - self.mean) / self.std)

    def quantile(self, q: float) -> float:
        if q >= 1:
            return math.inf
        if q <= 0:
            return 0.0
        return max(0.0, self.mean + self.std * _STD_NORMAL.inv_cdf(q))


@dataclass(frozen=True)
class ChebyshevPrice:
    """Cantelli: P(Y − μ ≥ t) ≤ σ²/(σ² + t²) for every distribution with mean μ, std σ.

    The distribution here, F(y) = t²/(σ² + t²) with t = y − μ ≥ 0 (else 0), is below every
    such distribution's CDF, so its quantile μ + σ·sqrt(q/(1−q)) is a price that holds with
    probability at least ``q`` whatever the real distribution is.
    """

    mean: float
    std: float

    def cdf(self, y: float) -> float:
        t = y - self.mean
        if math.isinf(t):
            return 1.0 if t > 0 else 0.0
        return 0.0 if t <= 0 else t * t / (self.std**2 + t * t)

    def quantile(self, q: float) -> float:
        if q >= 1:
            return math.inf
        if q <= 0:
            return 0.0
        return max(0.0, self.mean + self.std * math.sqrt(q / (1 - q)))


@dataclass(frozen=True)
class GridPrice:
    """A distribution given by its CDF on a grid, linear in between (maxent, histogram)."""

    grid: np.ndarray
    cum: np.ndarray  # nondecreasing, cum[-1] == 1

    def cdf(self, y: float) -> float:
        if y < self.grid[0]:
            return 0.0
        return float(np.interp(y, self.grid, self.cum))

    def quantile(self, q: float) -> float:
        if q <= 0:
            return max(0.0, float(self.grid[0]))
        if q >= 1:
            return float(self.grid[np.searchsorted(self.cum, 1.0, side="left")])
        i = int(np.searchsorted(self.cum, q, side="left"))  # first cum >= q
        if i == 0:
            return max(0.0, float(self.grid[0]))
        c0, c1 = self.cum[i - 1], self.cum[i]
        g0, g1 = self.grid[i - 1], self.grid[i]
        return max(0.0, float(g0 + (g1 - g0) * (q - c0) / (c1 - c0)))


# --- the three functions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """The three prediction functions over one host's price distribution."""

    dist: PriceDistribution
    model: str = "normal"

    def get_probability(self, performance: float, price: float) -> float:
        """Probability that bidding ``price`` buys at least the share ``performance``."""
        p, x = _fraction(performance, "performance"), _price(price)
        if p == 0:
            return 1.0
        if x == 0:
            return 0.0
        return self.dist.cdf(0.0 if p == 1 else x * (1 - p) / p)

    def get_price(self, performance: float, probability: float) -> float:
        """The least bid buying at least the share ``performance`` with ``probability``."""
        p, q = _fraction(performance, "performance"), _fraction(probability, "probability")
        if p == 0:
            return 0.0
        y = self.dist.quantile(q)
        if y == 0:
            return 0.0  # nobody else bids (with that probability): any bid takes it all
        return math.inf if p == 1 else p / (1 - p) * y

    def get_performance(self, probability: float, price: float) -> float:
        """The share that bidding ``price`` buys at least, with ``probability``."""
        q, x = _fraction(probability, "probability"), _price(price)
        if x == 0:
            return 0.0
        y = self.dist.quantile(q)
        if math.isinf(x):
            return 1.0
        return x / (x + y) if math.isfinite(y) else 0.0

    def cushion(self, performance: float, price: float, probability: float) -> float:
        """Extra bid rate on top of ``price`` so that ``performance`` holds with
        ``probability`` (0 if ``price`` already does)."""
        need = self.get_price(performance, probability)
        return max(0.0, need - _price(price))


def cushion_budget(
    predictions: list[Prediction],
    bids: Sequence[float] | np.ndarray,
    shares: Sequence[float] | np.ndarray,
    probability: float,
    seconds: float,
) -> float:
    """Extra budget (credits, for ``seconds``) keeping each planned share with ``probability``.

    ``bids`` and ``shares`` are a plan (e.g. a Best Response at the current prices, or an
    agent's plan: :meth:`tycoon.agent.core.AgentCore.cushion`).
    """
    total = 0.0
    for pred, x, s in zip(predictions, np.asarray(bids), np.asarray(shares), strict=True):
        if x > 0:
            total += pred.cushion(float(s), float(x), probability)
    return total * seconds


# --- from the SLS's price statistics --------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """The moments of one window and the histogram, read from a price statistics body."""

    count: int
    mean: float
    var: float
    skew: float
    kurt: float
    edges: np.ndarray
    counts: np.ndarray


def read_stats(body: Any, window: str = "hour") -> Stats:
    """Read a price statistics body; use ``window`` if it has samples, else the fullest one."""
    if not isinstance(body, dict) or not isinstance(body.get("windows"), dict):
        raise Rejected("bad_input", "price statistics need a 'windows' map")
    windows = body["windows"]
    chosen = windows.get(window)
    if not isinstance(chosen, dict) or _num(chosen.get("count", 0), "count") < 1:
        full = [w for w in windows.values() if isinstance(w, dict)]
        chosen = max(full, key=lambda w: _num(w.get("count", 0), "count"), default=None)
    if chosen is None or _num(chosen.get("count", 0), "count") < 1:
        raise Rejected("bad_input", "no price samples in any window")
    values = {k: _num(chosen.get(k), k) for k in ("count", "mean", "var", "skew", "kurt")}
    if values["var"] < 0:
        raise Rejected("bad_input", "var must be >= 0")
    hist = body.get("histogram") or {}
    edges = np.asarray(hist.get("edges", []), dtype=np.float64)
    counts = np.asarray(hist.get("counts", []), dtype=np.float64)
    if edges.size and (
        edges.size != counts.size + 1
        or np.any(np.diff(edges) < 0)
        or np.any(counts < 0)
        or not np.all(np.isfinite(edges))
    ):
        raise Rejected("bad_input", "histogram needs increasing edges and bins+1 of them")
    return Stats(
        int(values["count"]),
        max(values["mean"], 0.0),
        values["var"],
        values["skew"],
        values["kurt"],
        edges,
        counts,
    )


def predict(body: Any, model: str = "normal", window: str = "hour") -> Prediction:
    """A :class:`Prediction` from a price statistics body (format in ``docs/agent-math.md``)."""
    if model not in MODELS:
        raise Rejected("bad_input", f"unknown model {model!r}; one of {', '.join(MODELS)}")
    return Prediction(distribution(read_stats(body, window), model), model)


def distribution(stats: Stats, model: str) -> PriceDistribution:
    """The price distribution of ``model`` for these statistics."""
    if model == "histogram":
        if stats.counts.sum() > 0 and stats.edges[-1] > stats.edges[0]:
            return histogram_distribution(stats.edges, stats.counts)
        model = "normal"
    std = math.sqrt(stats.var)
    if stats.count < 2 or std <= 1e-12 * max(abs(stats.mean), 1.0):
        return PointMass(stats.mean)
    if model == "chebyshev":
        return ChebyshevPrice(stats.mean, std)
    if model == "maxent":
        fitted = maxent_distribution(stats.mean, std, stats.skew, stats.kurt, stats.edges)
        if fitted is not None:
            return fitted
    return NormalPrice(stats.mean, std)


def histogram_distribution(edges: np.ndarray, counts: np.ndarray) -> GridPrice:
    """The histogram's CDF, linear inside each bin, clipped to prices ≥ 0."""
    cum = np.concatenate([[0.0], np.cumsum(counts)]) / counts.sum()
    grid = np.asarray(edges, dtype=np.float64)
    if grid[0] < 0:  # fold the negative part onto 0
        at0 = float(np.interp(0.0, grid, cum))
        keep = grid > 0
        grid = np.concatenate([[0.0], grid[keep]])
        cum = np.concatenate([[at0], cum[keep]])
    return GridPrice(grid, cum)


# --- maximum entropy from four moments --------------------------------------------------------

GRID_POINTS = 2001
SUPPORT_SIGMAS = 10.0


def maxent_distribution(
    mean: float, std: float, skew: float, kurt: float, edges: np.ndarray | None = None
) -> GridPrice | None:
    """The maximum-entropy density with these four moments, or None if the fit fails.

    On the standardised price z = (y − μ)/σ over the support [max(−μ/σ, −L), L] (L =
    ``SUPPORT_SIGMAS``, widened to the histogram's range), the density maximising entropy
    under E z^k = m_k (k = 1..4; m = 0, 1, skew, kurt + 3) is p(z) ∝ exp(Σ λ_k z^k). The λ
    minimise the convex dual log ∫exp(Σ λ_k z^k) − Σ λ_k m_k, solved by damped Newton from
    the normal (λ₂ = −½) with integrals by the trapezoid rule on a ``GRID_POINTS`` grid.
    """
    if not all(math.isfinite(v) for v in (mean, std, skew, kurt)) or std <= 0:
        return None
    target = np.array([0.0, 1.0, skew, kurt + 3.0])
    if target[3] <= target[2] ** 2 + 1:  # outside the moment space of any distribution
        return None
    lo, hi = -SUPPORT_SIGMAS, SUPPORT_SIGMAS
    if edges is not None and edges.size:
        lo, hi = min(lo, (edges[0] - mean) / std), max(hi, (edges[-1] - mean) / std)
    lo = max(lo, -mean / std)  # prices are never negative
    z = np.linspace(lo, hi, GRID_POINTS)
    weights = np.full(z.size, z[1] - z[0])
    weights[[0, -1]] /= 2
    powers = np.vstack([z, z**2, z**3, z**4])  # (4, n)
    lam = np.array([0.0, -0.5, 0.0, 0.0])

    def dual(lam: np.ndarray) -> tuple[float, np.ndarray]:
        expo = lam @ powers
        top = expo.max()
        dens = np.exp(expo - top) * weights
        mass = dens.sum()
        return math.log(mass) + top - float(lam @ target), dens / mass

    value, prob = dual(lam)
    for _ in range(200):
        moments = powers @ prob
        grad = moments - target
        if np.max(np.abs(grad)) < 1e-10:
            dens = prob / weights  # the density at the grid points (trapezoid rule)
            cum = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * weights[1])])
            return GridPrice(mean + std * z, cum / cum[-1])
        centred = powers - moments[:, None]
        hess = (centred * prob) @ centred.T
        try:
            step = np.linalg.solve(hess + 1e-14 * np.eye(4), grad)
        except np.linalg.LinAlgError:
            return None
        t = 1.0
        decrease = float(grad @ step)  # the Newton decrement: what a full step gains
        while t > 1e-10:
            new_value, new_prob = dual(lam - t * step)
            # near the optimum the gain drowns in rounding: take the full Newton step
            if new_value <= value - 1e-4 * t * decrease or decrease < 1e-13 * max(1, abs(value)):
                break
            t /= 2
        else:
            return None
        lam, value, prob = lam - t * step, new_value, new_prob
    return None


# --- input checks ----------------------------------------------------------------------------


def _num(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Rejected("bad_input", f"{name} must be a finite number, not {value!r}")
    return float(value)


def _fraction(value: float, name: str) -> float:
    v = _num(value, name)
    if not 0 <= v <= 1:
        raise Rejected("bad_input", f"{name} must be in [0, 1], not {v}")
    return v


def _price(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise Rejected("bad_input", f"price must be a number >= 0, not {value!r}")
    return float(value)
