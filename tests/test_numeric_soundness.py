"""Numeric soundness at the edges of float range (issue 17, point 6).

Each reproduction from the independent check is a fixed example; Hypothesis then looks for
more over wide dynamic ranges. Water-filling runs on both paths (plain Python for small
books, numpy) and on numpy's exact fallback with Newton switched off."""

from __future__ import annotations

import contextlib
import decimal
import math
import os
from collections.abc import Iterator
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tycoon.agent.best_response import (
    ZERO_PRICE_FRACTION,
    best_response,
    best_response_batch,
    utility,
)
from tycoon.agent.best_response_cap import capped_exhaustive
from tycoon.auctioneer import allocation
from tycoon.auctioneer.allocation import water_fill

PATHS = ("python", "numpy", "fallback")


@contextlib.contextmanager
def solver(path: str) -> Iterator[None]:
    """Route rows through plain Python, numpy, or numpy's exact fallback (no Newton)."""
    small, steps = allocation.SMALL, allocation.NEWTON_STEPS
    allocation.SMALL = 10**9 if path == "python" else 0
    allocation.NEWTON_STEPS = 0 if path == "fallback" else steps
    try:
        yield
    finally:
        allocation.SMALL, allocation.NEWTON_STEPS = small, steps


def check_fill(rates: np.ndarray, lo: np.ndarray, hi: np.ndarray, cap: float,
               shares: np.ndarray, rtol: float = 1e-9) -> None:
    """Σ shares = min(cap, Σ effective hi), bounds met, ∝ rate among the unclipped."""
    live = rates >= allocation.TINY * rates.max() if rates.size else rates > 0
    live &= rates > 0
    eff = np.where(live, hi, lo)
    scale = max(cap, float(hi.max(initial=0.0)))
    assert np.all(np.isfinite(shares))
    assert shares.sum() == pytest.approx(min(cap, eff.sum()), rel=rtol, abs=1e-300)
    slack = rtol * scale
    assert np.all(shares >= lo - slack) and np.all(shares <= eff + slack)
    free = live & (shares > lo + 1e-6 * scale) & (shares < hi - 1e-6 * scale)
    if free.sum() >= 2:  # one level: share/rate equal (compared as logs: rates span 1e±150)
        level = np.log(shares[free]) - np.log(rates[free])
        assert np.allclose(level, level[0], atol=1e-6)


# --- water-filling -------------------------------------------------------------------------

BOOK_14 = (  # a 14-bid book (rates 1e-24..1): the old fallback gave Σ shares 0.036, not 1
    np.array([1.2775577659056100e-23, 2.9255900879468519e-13, 4.0454904533315290e-04,
              9.1965928261774553e-06, 6.8225540789827841e-04, 1.1733472982048789e-15,
              6.6965357441427369e-24, 2.1248648036523758e-17, 1.1485786296333782e-24,
              4.1816773015479629e-21, 1.0, 6.0355499255983382e-16,
              1.5955016675448669e-06, 3.4052928443511643e-14]),
    np.array([0.00034415842743856, 0.0, 0.0, 0.0, 0.0, 0.00451696885730153, 0.0,
              0.00112600709382053, 0.0, 0.0239615595823697, 0.00113955045224796,
              0.00482876175191517, 0.0, 0.0]),
    np.array([0.00191536506365737, 0.05, 0.05, 0.05, 0.02656821396548142,
              0.03785697996855859, 0.0026435531329436, 0.3899035644715867,
              0.02283850738421291, 0.03722936879506638, 0.05113955045224796,
              0.309199687278364, 0.02176050842120008, 0.05]),
)


@pytest.mark.parametrize("path", PATHS)
def test_fallback_keeps_small_rates(path: str) -> None:
    """Rates [1, 1e-20]: the big bidder stops at 0.5, the tiny one must take the rest."""
    rates, lo, hi = np.array([1.0, 1e-20]), np.zeros(2), np.array([0.5, 1.0])
    with solver(path):
        shares = water_fill(rates, lo, hi, 1.0)
    assert shares.tolist() == pytest.approx([0.5, 0.5], rel=1e-12)


@pytest.mark.parametrize("path", PATHS)
def test_fourteen_bid_book_fills_the_capacity(path: str) -> None:
    rates, lo, hi = BOOK_14
    with solver(path):
        shares = water_fill(rates, lo, hi, 1.0)
    check_fill(rates, lo, hi, 1.0, shares)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cap", [1e200, 1e300, 1.7e308, 1e-300, 1e-310])
def test_huge_and_tiny_capacities(path: str, cap: float) -> None:
    """Solved scaled by a power of two: no overflow (was [0, 0] at 1e200), no underflow."""
    rates = np.array([0.176, 0.849])
    with solver(path):
        shares = water_fill(rates, np.zeros(2), np.array([cap, cap]), cap)
    assert shares.sum() == pytest.approx(cap, rel=1e-12)
    assert shares[1] / shares[0] == pytest.approx(0.849 / 0.176, rel=1e-9)


@st.composite
def wide_books(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Rates spanning up to 1e±150 (some 0), bounds and capacity at a random scale."""
    n = draw(st.integers(1, 16))
    rate = st.tuples(st.integers(0, 4), st.floats(-150, 150))  # 1 in 5 bids nothing
    rates = np.array([10.0**e if k else 0.0
                      for k, e in draw(st.lists(rate, min_size=n, max_size=n))])
    if not rates.any():
        rates[0] = 1.0
    unit = 10.0 ** draw(st.floats(-280, 280))
    fracs = st.floats(0, 1)
    lo_raw = np.array(draw(st.lists(st.one_of(st.just(0.0), fracs), min_size=n, max_size=n)))
    width = np.array(draw(st.lists(st.one_of(fracs, st.just(1.0)), min_size=n, max_size=n)))
    lo = lo_raw / max(1.0, lo_raw.sum()) * unit
    hi = np.minimum(lo + width * unit, unit)
    cap = draw(st.floats(0.01, 2.0)) * unit
    return rates, lo, np.maximum(hi, lo), cap


@settings(max_examples=int(os.environ.get("TYCOON_NUMERIC_EXAMPLES", "400")), deadline=None)
@given(wide_books(), st.sampled_from(PATHS))
@example((np.array([1.0, 1e-20]), np.zeros(2), np.array([0.5, 1.0]), 1.0), "fallback")
@example((*BOOK_14, 1.0), "numpy")
@example((np.array([0.176, 0.849]), np.zeros(2), np.full(2, 1e200), 1e200), "python")
@example((np.array([0.176, 0.849]), np.zeros(2), np.full(2, 1e200), 1e200), "numpy")
# Found by Hypothesis in a full run: scaled by the capacity's power of two, a maximum of
# 4.9e-300 became subnormal (rounded to 1 ulp) and came back as 5.97e-300, above itself.
@example((np.array([1.0]), np.zeros(1), np.array([4.9406564584124654e-300]), 1e24), "python")
@example((np.array([1.0]), np.zeros(1), np.array([4.9406564584124654e-300]), 1e24), "numpy")
@example((np.array([1.0, 0.0]), np.zeros(2), np.array([2e-300, 1e24]), 1e24), "numpy")  # was 0
# The reverse: scaled by the largest maximum (1e24), a capacity of 1e-300 underflowed: [0, 0].
@example((np.array([1.0, 1.0]), np.zeros(2), np.full(2, 1e24), 1e-300), "python")
@example((np.array([1.0, 1.0]), np.zeros(2), np.full(2, 1e24), 1e-300), "fallback")
def test_wide_dynamic_range(case: tuple[np.ndarray, np.ndarray, np.ndarray, float],
                            path: str) -> None:
    rates, lo, hi, cap = case
    if lo.sum() > cap:  # over-committed minimums are scaled to fit: not this property
        cap = float(lo.sum())
    with solver(path):
        shares = water_fill(rates, lo, hi, cap)
    check_fill(rates, lo, hi, cap, shares)


@settings(max_examples=int(os.environ.get("TYCOON_NUMERIC_EXAMPLES", "200")), deadline=None)
@given(wide_books())
def test_paths_agree_over_wide_ranges(case: tuple[np.ndarray, np.ndarray, np.ndarray, float]
                                      ) -> None:
    rates, lo, hi, cap = case
    results = []
    for path in PATHS:
        with solver(path):
            results.append(water_fill(rates, lo, hi, cap))
    for other in results[1:]:
        assert np.allclose(other, results[0], rtol=1e-9, atol=1e-9 * max(cap, hi.max()))


# --- Best Response ---------------------------------------------------------------------------


def test_tiny_budget_uses_every_cheap_host() -> None:
    """X = 1e-260 against prices 1e-300, 1e-300, 1: both cheap hosts are nearly won whole."""
    result = best_response(1e-260, [1.0, 1.0, 1.0], [1e-300, 1e-300, 1.0])
    assert result.utility == pytest.approx(2.0, rel=1e-9)
    assert result.bound >= result.utility * (1 - 1e-12)
    assert result.bids.sum() == pytest.approx(1e-260, rel=1e-12)


def brute_capped(budget: float, w: np.ndarray, y: np.ndarray, cap: int) -> float:
    """Best utility over every subset of at most ``cap`` hosts, each solved exactly."""
    return capped_exhaustive(budget, w, y, cap, ZERO_PRICE_FRACTION)


def test_capped_swap_finds_the_better_pair() -> None:
    w, y = np.array([1.0, 1500.0, 1500.0, 2.0]), np.array([0.005, 32.0, 32.0, 0.005])
    result = best_response(0.25, w, y, max_hosts=2)
    assert result.utility == pytest.approx(brute_capped(0.25, w, y, 2), rel=1e-12)
    assert result.utility > 12.49
    assert math.isclose(result.bids.sum(), 0.25, rel_tol=1e-12)
    assert np.count_nonzero(result.bids) <= 2


def exact_reference(budget: float, w: np.ndarray, y: np.ndarray) -> float:
    """The best utility (all y > 0) in 200-digit decimals, by the KKT prefix rule with
    pairwise sums (no cancellation between a host and itself).

    With s_j = sqrt(w_j/y_j) sorted down, host k joins while its excess over the hosts
    before it, e_k = s_k X + Σ_{i<k} y_i (s_k − s_i), is positive; in the final set S,
    share_j = e_j / (s_j (X + Σ_S y)) with e_j = s_j X + Σ_{i∈S} y_i (s_j − s_i)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 200
        x = Decimal(budget)
        hosts = sorted(((Decimal(a) / Decimal(b)).sqrt(), Decimal(a), Decimal(b))
                       for a, b in zip(w.tolist(), y.tolist(), strict=True))[::-1]

        def excess(s: Decimal, chosen: list[tuple[Decimal, Decimal, Decimal]]) -> Decimal:
            return s * x + sum((b * (s - si) for si, _, b in chosen), Decimal(0))

        chosen: list[tuple[Decimal, Decimal, Decimal]] = []
        for host in hosts:
            if chosen and excess(host[0], chosen) <= 0:
                break
            chosen.append(host)
        total = x + sum((b for _, _, b in chosen), Decimal(0))
        return float(sum((a * excess(s, chosen) / (s * total) for s, a, _ in chosen),
                         Decimal(0)))


@settings(max_examples=int(os.environ.get("TYCOON_NUMERIC_EXAMPLES", "400")), deadline=None)
@given(st.integers(1, 7).flatmap(lambda n: st.tuples(
    st.floats(-300, 300), st.lists(st.floats(-300, 300), min_size=n, max_size=n),
    st.lists(st.floats(-300, 300), min_size=n, max_size=n))))
@example((-260.0, [0.0, 0.0, 0.0], [-300.0, -300.0, 0.0]))  # the independent check's case
@example((0.0, [16.0] + [0.0] * 6, [16.0] + [0.0] * 5 + [-1.0]))  # tie at the threshold: 0.91
@example((0.0, [0.0, 0.0, 14.0, 0.0], [0.0, 0.0, 14.0, -1.0]))  # rescaling moved bids: 1e-5
@example((9.0, [8.0, 0.0], [25.0, 0.0]))  # a host within 1e-16 of the threshold, left out
@example((229.0, [88.0, -227.0], [-95.0, -89.0]))  # subnormal prices at unit scale: inf·0
@example((111.0, [119.0, 0.0], [-198.0, 300.0]))  # a near 1e-198 beside a far 1e300: inf·0
def test_best_response_over_wide_ranges(case: tuple[float, list[float], list[float]]) -> None:
    """Utility equals a log-domain reference; the bound holds; the budget is spent."""
    budget = 10.0 ** case[0]
    w, y = 10.0 ** np.array(case[1]), 10.0 ** np.array(case[2])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        result = best_response(budget, w, y)
    best = exact_reference(budget, w, y)
    # A price below float range at the solver's scale (max of X and the prices, up to
    # 2^400 X) counts as 0: that host gets the documented free-host slice, worth at most
    # zero_price_fraction (1e-7) of the optimum. Utilities below 1e-300 of the largest worth
    # are subnormal, with fewer digits.
    scale = max(budget, float(y[y <= budget * 2.0**400].max(initial=0.0)))
    rel = 2e-7 if y.min() < scale * 1e-300 else 1e-9
    assert result.utility == pytest.approx(best, rel=rel, abs=1e-300 * w.max())
    assert result.bound >= best * (1 - 1e-9) - 1e-300 * w.max()
    assert result.bids.sum() == pytest.approx(budget, rel=1e-9)
    with np.errstate(over="ignore", invalid="raise", divide="raise"):  # λ may overflow
        batch, _ = best_response_batch(np.array([budget]), w[None, :], y[None, :])
    assert float(utility(batch[0], w, y)) == pytest.approx(result.utility, rel=1e-9,
                                                           abs=1e-300 * w.max())


def test_capped_against_brute_force_on_small_cases() -> None:
    """Heuristic + swap search against every subset of at most m hosts (n ≤ 7).

    Not exact by construction (a swap search can stop in a local optimum), so the claim is
    a measured one: on 20,000 such instances the largest relative gap was 8.4e-8, from the
    1e-7 free-host slice (without the swap search: 0.13). Asserted here: 1e-6."""
    rng = np.random.default_rng(1717)
    for _ in range(300):
        n = int(rng.integers(2, 8))
        cap = int(rng.integers(1, n))
        sigma = float(rng.choice([1.0, 3.0, 6.0]))
        w, y = rng.lognormal(0, sigma, n), rng.lognormal(0, sigma, n)
        if rng.random() < 0.2:
            y[rng.random(n) < 0.4] = 0.0
        budget = float(max(y.sum(), 1.0) * 10 ** rng.uniform(-3, 3))
        result = best_response(budget, w, y, max_hosts=cap)
        best = brute_capped(budget, w, y, cap)
        assert np.count_nonzero(result.bids) <= cap
        assert result.utility >= best * (1 - 1e-6)
        assert result.bound >= best * (1 - 1e-9)
        assert math.isclose(result.bids.sum(), budget, rel_tol=1e-9)
