"""Water-filling and admission: properties against a brute-force reference.

Small rows are solved in plain Python and large ones with numpy: every property runs
against both (``PATHS``), and the two are checked against each other."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tycoon.auctioneer import allocation
from tycoon.auctioneer.allocation import admissible, headroom, water_fill

EPS = 1e-9
PATHS = ("python", "numpy")


@contextlib.contextmanager
def solver(path: str) -> Iterator[None]:
    """Route every row through one implementation (numpy: no row counts as small)."""
    small = allocation.SMALL
    allocation.SMALL = small if path == "python" else 0
    try:
        yield
    finally:
        allocation.SMALL = small


def brute(rates: np.ndarray, lo: np.ndarray, hi: np.ndarray, cap: float) -> np.ndarray:
    """Bisection on the level: slow but obviously right."""
    eff = np.where(rates > 0, hi, lo)
    if eff.sum() <= cap:
        return eff
    a, b = 0.0, 1e300
    for _ in range(4000):
        m = (a + b) / 2 if b < 1e300 else max(1.0, a * 2)
        if np.clip(m * rates, lo, eff).sum() < cap:
            a = m
        else:
            b = m
    return np.clip(b * rates, lo, eff)


@st.composite
def bidders(draw: st.DrawFn, max_n: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(1, max_n))
    fin = st.floats(1e-9, 1e9, allow_nan=False)
    rates = np.array(draw(st.lists(st.one_of(st.just(0.0), fin), min_size=n, max_size=n)))
    lo_raw = np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    width = np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    lo = lo_raw / max(1.0, lo_raw.sum())  # admitted: Σ lo ≤ 1
    hi = np.minimum(lo + width, 1.0)
    return rates, lo, hi


@settings(max_examples=300, deadline=None)
@given(bidders())
@pytest.mark.parametrize("path", PATHS)
def test_shares_bounded_and_capacity_respected(path: str, case: tuple[np.ndarray, ...]) -> None:
    rates, lo, hi = case
    with solver(path):
        shares = water_fill(rates, lo, hi)
    assert shares.sum() <= 1.0 + EPS
    assert np.all(shares >= lo - EPS)
    assert np.all(shares <= hi + EPS)
    assert np.allclose(shares[rates == 0], lo[rates == 0], atol=EPS)


@settings(max_examples=300, deadline=None)
@given(bidders())
@pytest.mark.parametrize("path", PATHS)
def test_proportional_among_unconstrained(path: str, case: tuple[np.ndarray, ...]) -> None:
    rates, lo, hi = case
    with solver(path):
        shares = water_fill(rates, lo, hi)
    free = (shares > lo + 1e-7) & (shares < hi - 1e-7) & (rates > 0)
    if free.sum() >= 2:
        ratio = shares[free] / rates[free]
        assert np.allclose(ratio, ratio[0], rtol=1e-6)
    # work conserving: capacity is used up unless everyone who bids is at its max
    eff = np.where(rates > 0, hi, lo)
    if eff.sum() >= 1.0:
        assert shares.sum() == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(bidders())
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.slow  # seconds: left out of make test-fast
def test_matches_reference(path: str, case: tuple[np.ndarray, ...]) -> None:
    rates, lo, hi = case
    with solver(path):
        shares = water_fill(rates, lo, hi)
    assert np.allclose(shares, brute(rates, lo, hi, 1.0), atol=1e-9)


@settings(max_examples=300, deadline=None)
@given(bidders(), st.floats(0, 2))
@example((np.array([0.0, 1e-9, 123.0]), np.array([0.0, 0.0, 0.5]), np.array([0.0, 1.0, 0.5])),
         1.0)
@example((np.array([1.0]), np.array([0.0]), np.array([1.0])), 0.0)  # no capacity at all
def test_python_and_numpy_agree(case: tuple[np.ndarray, ...], cap: float) -> None:
    rates, lo, hi = (np.stack([a, a[::-1]]) for a in case)  # two rows, solved together
    with solver("numpy"):
        expected = water_fill(rates, lo, hi, cap)
    with solver("python"):
        assert np.allclose(water_fill(rates, lo, hi, cap), expected, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(bidders())
# rates 11 orders of magnitude apart, beside a bidder whose share is pinned (or nearly)
@example((np.array([0.0, 1e-9, 123.0]), np.array([0.0, 0.0, 0.5]), np.array([0.0, 1.0, 0.5])))
@example((np.array([0.0, 1e-9, 123.0]), np.array([0.0, 0.0, 0.49]), np.array([0.0, 1.0, 0.5])))
def test_exact_fallback_matches(case: tuple[np.ndarray, ...]) -> None:
    rates, lo, hi = case
    steps = allocation.NEWTON_STEPS
    allocation.NEWTON_STEPS = 0  # force numpy's sort-based exact solver
    try:
        with solver("numpy"):
            exact = water_fill(rates, lo, hi)
    finally:
        allocation.NEWTON_STEPS = steps
    with solver("numpy"):
        assert np.allclose(exact, water_fill(rates, lo, hi), atol=1e-9)


def test_two_dimensional_rows_are_independent() -> None:
    rng = np.random.default_rng(7)
    rates = rng.exponential(size=(4, 50))
    lo = np.full((4, 50), 0.001)
    hi = rng.uniform(0.01, 0.2, size=(4, 50))
    both = water_fill(rates, lo, hi, np.array([1.0, 0.5, 1.0, 0.25]))
    for row, cap in enumerate([1.0, 0.5, 1.0, 0.25]):
        assert np.allclose(both[row], water_fill(rates[row], lo[row], hi[row], cap))


@pytest.mark.parametrize("path", PATHS)
def test_simple_cases(path: str) -> None:
    with solver(path):
        _simple_cases()


def _simple_cases() -> None:
    assert np.allclose(water_fill([3.0, 1.0], [0, 0], [1, 1]), [0.75, 0.25])
    # clipped at max: the excess goes to the other
    assert np.allclose(water_fill([3.0, 1.0], [0, 0], [0.5, 1]), [0.5, 0.5])
    # minimum guaranteed even with a small rate
    assert np.allclose(water_fill([100.0, 1.0], [0, 0.3], [1, 1]), [0.7, 0.3])
    # everyone at max: leftover stays unallocated
    assert np.allclose(water_fill([1.0, 1.0], [0, 0], [0.2, 0.3]), [0.2, 0.3])
    assert water_fill(np.zeros(0), np.zeros(0), np.zeros(0)).shape == (0,)
    # over-committed minimums are scaled down to fit
    assert water_fill([1.0, 1.0], [0.8, 0.8], [1, 1]).sum() == pytest.approx(1.0)


def test_large_and_skewed() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    rates = rng.lognormal(0, 4, size=n)
    lo = np.where(rng.random(n) < 0.1, 1e-5, 0.0)
    hi = np.minimum(lo + rng.uniform(0, 0.001, n), 1)
    shares = water_fill(rates, lo, hi)
    assert shares.sum() <= 1 + EPS
    assert np.all((shares >= lo - EPS) & (shares <= hi + EPS))


@pytest.mark.parametrize(
    ("rates", "lo", "hi"),
    [
        ([1.0, np.nan], [0, 0], [1, 1]),
        ([1.0, np.inf], [0, 0], [1, 1]),
        ([-1.0, 1.0], [0, 0], [1, 1]),
        ([1.0, 1.0], [0.5, 0], [0.4, 1]),
        ([1.0], [0, 0], [1, 1]),
    ],
)
def test_bad_inputs_raise(rates: list[float], lo: list[float], hi: list[float]) -> None:
    for path in PATHS:
        with solver(path), pytest.raises(ValueError):
            water_fill(np.array(rates), np.array(lo), np.array(hi))
    with pytest.raises(ValueError):
        water_fill(np.ones(2), np.zeros(2), np.ones(2), capacity=-1.0)


def test_admission() -> None:
    reserved = np.array([[0.3, 0.4], [0.0, 0.0]])
    assert headroom(reserved).tolist() == pytest.approx([0.3, 1.0])
    assert admissible(reserved, np.array([0.3, 1.0])).tolist() == [True, True]
    assert admissible(reserved, np.array([0.31, 0.0])).tolist() == [False, True]


@pytest.mark.parametrize("path", PATHS)
def test_negligible_rates_count_as_zero(path: str) -> None:
    with solver(path):
        _negligible_rates()


def _negligible_rates() -> None:
    shares = water_fill([1.0, 1e-250, 0.0], [0, 0, 0], [0.0, 1.0, 1.0])
    assert shares.tolist() == [0.0, 0.0, 0.0]
    shares = water_fill([1e-300, 3e-300], [0, 0], [1.0, 1.0])  # scale does not matter
    assert np.allclose(shares, [0.25, 0.75])
