"""Prediction: monotone, consistent inverses, exact for normal prices, Chebyshev guarantee."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from tycoon.agent.best_response import best_response
from tycoon.agent.prediction import (
    MODELS,
    ChebyshevPrice,
    GridPrice,
    NormalPrice,
    PointMass,
    Prediction,
    cushion_budget,
    maxent_distribution,
    predict,
)
from tycoon.errors import Rejected


def body_from_samples(samples: np.ndarray, bins: int = 32, window: str = "hour") -> dict:
    """A price statistics body as the SLS serves it (population moments, histogram)."""
    mean = float(samples.mean())
    var = float(samples.var())
    std = math.sqrt(var)
    z = (samples - mean) / std if std > 0 else samples * 0
    counts, edges = np.histogram(samples, bins=bins)
    return {
        "windows": {
            window: {
                "count": int(samples.size),
                "mean": mean,
                "var": var,
                "skew": float((z**3).mean()),
                "kurt": float((z**4).mean() - 3),
            }
        },
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def body(mean: float, var: float, skew: float = 0.0, kurt: float = 0.0, count: int = 1000) -> dict:
    moments = {"count": count, "mean": mean, "var": var, "skew": skew, "kurt": kurt}
    return {"windows": {"hour": moments}, "histogram": {"edges": [], "counts": []}}


SAMPLES = {
    "normal": np.random.default_rng(1).normal(50, 8, 20000),
    "exponential": np.random.default_rng(2).exponential(20, 20000),
    "uniform": np.random.default_rng(3).uniform(10, 30, 20000),
    "lognormal": np.random.default_rng(4).lognormal(2, 0.6, 20000),
}
GRID = [0.0, 0.05, 0.2, 0.5, 0.8, 0.95, 0.999, 1.0]


def predictions() -> list[Prediction]:
    return [predict(body_from_samples(s), model) for s in SAMPLES.values() for model in MODELS]


@pytest.mark.parametrize("pred", predictions(), ids=lambda p: p.model)
def test_monotone_in_each_argument(pred: Prediction) -> None:
    prices = [0.0, 0.1, 1.0, 5.0, 20.0, 50.0, 100.0, 1e4]
    for p in GRID:
        row = [pred.get_price(p, q) for q in GRID]
        assert row == sorted(row)  # more certainty costs more
        row = [pred.get_probability(p, x) for x in prices]
        assert row == sorted(row)  # a higher bid is likelier to get p
    for q in GRID:
        row = [pred.get_price(p, q) for p in GRID]
        assert row == sorted(row)  # more share costs more
        row = [pred.get_performance(q, x) for x in prices]
        assert row == sorted(row)  # a higher bid buys more
    for x in prices:
        row = [pred.get_probability(p, x) for p in GRID]
        assert row == sorted(row, reverse=True)  # more share is less likely
        row = [pred.get_performance(q, x) for q in GRID]
        assert row == sorted(row, reverse=True)  # more certainty, less share


@pytest.mark.parametrize("pred", predictions(), ids=lambda p: p.model)
def test_the_three_functions_are_consistent_inverses(pred: Prediction) -> None:
    for p in [0.01, 0.1, 0.3, 0.5, 0.7, 0.9]:
        for q in [0.05, 0.25, 0.5, 0.75, 0.9, 0.99]:
            price = pred.get_price(p, q)
            assert 0 <= price < math.inf
            if price == 0:  # nobody else bids with probability >= q: any positive bid does
                assert pred.get_probability(p, 1e-12) >= q
                assert pred.get_performance(q, 1e-12) == 1.0
                continue
            assert pred.get_performance(q, price) == pytest.approx(p, rel=1e-9)
            assert pred.get_probability(p, price) >= q - 1e-9
            assert pred.get_probability(p, price) == pytest.approx(q, abs=1e-6)
            assert pred.get_price(pred.get_performance(q, price), q) == pytest.approx(price)
            # a hair less bid does not give the share with that probability
            assert pred.get_performance(q, price * (1 - 1e-6)) < p


def test_normal_model_is_exact_on_normal_data() -> None:
    mean, std = 40.0, 6.0
    pred = predict(body(mean, std**2), "normal")
    for p in [0.1, 0.5, 0.9]:
        for q in [0.1, 0.5, 0.95]:
            y_q = st.norm.ppf(q, mean, std)
            assert pred.get_price(p, q) == pytest.approx(p / (1 - p) * y_q, rel=1e-12)
            x = 3.0 + 10 * p
            assert pred.get_probability(p, x) == pytest.approx(
                st.norm.cdf(x * (1 - p) / p, mean, std), rel=1e-12, abs=1e-15
            )
            assert pred.get_performance(q, x) == pytest.approx(x / (x + y_q), rel=1e-12)
    # and on samples: the promised probability is what happens
    rng = np.random.default_rng(9)
    samples = rng.normal(mean, std, 200_000)
    fitted = predict(body_from_samples(samples), "normal")
    for p, q in [(0.5, 0.9), (0.2, 0.5), (0.8, 0.99)]:
        bid = fitted.get_price(p, q)
        achieved = np.mean(bid / (bid + samples) >= p)
        assert achieved == pytest.approx(q, abs=0.005)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_chebyshev_holds_whatever_the_distribution(name: str) -> None:
    samples = SAMPLES[name]
    pred = predict(body_from_samples(samples), "chebyshev")
    for p in [0.2, 0.5, 0.8]:
        for q in [0.5, 0.75, 0.9, 0.99]:
            bid = pred.get_price(p, q)
            assert np.mean(bid / (bid + samples) >= p) >= q


@pytest.mark.parametrize("name", list(SAMPLES))
def test_maxent_and_histogram_track_the_data(name: str) -> None:
    samples = SAMPLES[name]
    stats_body = body_from_samples(samples, bins=64)
    for model, tol in [("maxent", 0.05), ("histogram", 0.01)]:
        pred = predict(stats_body, model)
        assert isinstance(pred.dist, GridPrice)  # the fit succeeded (no fallback)
        for q in [0.1, 0.5, 0.9]:
            bid = pred.get_price(0.5, q)  # share 1/2 iff Y <= bid
            assert np.mean(samples <= bid) == pytest.approx(q, abs=tol), (model, q)


def test_maxent_matches_its_moments_and_is_normal_for_normal_moments() -> None:
    fitted = maxent_distribution(100.0, 10.0, 0.0, 0.0)
    assert fitted is not None
    for q in [0.05, 0.5, 0.9]:
        assert fitted.quantile(q) == pytest.approx(st.norm.ppf(q, 100, 10), rel=1e-4)
    for skew, kurt in [(0.5, 1.0), (1.0, 1.5), (-0.3, -0.5), (2.0, 6.0), (0.0, -1.2)]:
        fitted = maxent_distribution(50.0, 10.0, skew, kurt)
        assert fitted is not None
        y, cum = fitted.grid, fitted.cum
        mids, mass = (y[1:] + y[:-1]) / 2, np.diff(cum)
        mu = float((mids * mass).sum())
        var = float(((mids - mu) ** 2 * mass).sum())
        z = (mids - mu) / math.sqrt(var)
        assert mu == pytest.approx(50.0, rel=1e-3)
        assert var == pytest.approx(100.0, rel=1e-3)
        assert float((z**3 * mass).sum()) == pytest.approx(skew, abs=1e-2)
        assert float((z**4 * mass).sum()) - 3 == pytest.approx(kurt, abs=3e-2)
    assert maxent_distribution(10.0, 1.0, 2.0, 0.0) is None  # kurt + 3 <= skew² + 1: impossible


def test_degenerate_statistics() -> None:
    still = predict(body(7.0, 0.0))
    assert isinstance(still.dist, PointMass)
    assert still.get_price(0.5, 0.9) == pytest.approx(7.0)
    assert still.get_probability(0.5, 7.0) == 1.0
    assert still.get_probability(0.5, 6.9) == 0.0
    free = predict(body(0.0, 0.0))
    assert free.get_price(0.9, 0.99) == 0.0
    assert free.get_performance(0.99, 1e-9) == 1.0
    one = predict(body(5.0, 4.0, count=1), "maxent")
    assert isinstance(one.dist, PointMass)
    pred = Prediction(NormalPrice(10.0, 2.0))
    assert pred.get_price(0.0, 0.9) == 0.0
    assert pred.get_price(1.0, 0.9) == math.inf
    assert pred.get_performance(1.0, 5.0) == 0.0
    assert pred.get_performance(0.5, 0.0) == 0.0
    assert pred.get_probability(0.0, 0.0) == 1.0
    assert pred.get_probability(0.5, math.inf) == 1.0
    assert Prediction(ChebyshevPrice(10.0, 2.0)).get_probability(0.5, math.inf) == 1.0
    # a normal price can be negative: that is nobody else bidding, and then any bid wins
    low = Prediction(NormalPrice(1.0, 2.0))
    assert low.get_price(0.9, 0.1) == 0.0
    assert low.get_probability(1.0, 1.0) == pytest.approx(st.norm.cdf(0, 1, 2))


def test_window_fallback_and_bad_input() -> None:
    stats_body = body(10.0, 1.0)
    stats_body["windows"]["minute"] = {"count": 0, "mean": 0, "var": 0, "skew": 0, "kurt": 0}
    assert predict(stats_body, window="minute").get_price(0.5, 0.5) == pytest.approx(10.0)
    bad = [
        ({}, {}),
        ({"windows": {"hour": {"count": 0, "mean": 1, "var": 0, "skew": 0, "kurt": 0}}}, {}),
        ({"windows": {"hour": {"count": 3, "mean": "x", "var": 0, "skew": 0, "kurt": 0}}}, {}),
        ({"windows": {"hour": {"count": 3, "mean": 1, "var": -1, "skew": 0, "kurt": 0}}}, {}),
        (body(1, 1), {"model": "magic"}),
        ({**body(1, 1), "histogram": {"edges": [2, 1], "counts": [1]}}, {}),
    ]
    for stats_body, kw in bad:
        with pytest.raises(Rejected) as err:
            predict(stats_body, **kw)
        assert err.value.code == "bad_input"
    pred = predict(body(10.0, 1.0))
    for args in [(1.5, 0.5), (-0.1, 0.5), (0.5, math.nan)]:
        with pytest.raises(Rejected):
            pred.get_price(*args)
    with pytest.raises(Rejected):
        pred.get_probability(0.5, -1.0)


def test_cushion_keeps_the_plan_with_the_chosen_probability() -> None:
    rng = np.random.default_rng(12)
    hosts = 5
    samples = [rng.normal(20 + 5 * j, 3 + j, 50_000).clip(0) for j in range(hosts)]
    preds = [predict(body_from_samples(s), "normal") for s in samples]
    current = np.array([s.mean() for s in samples])
    plan = best_response(30.0, np.full(hosts, 100.0), current)
    extra = cushion_budget(preds, plan.bids, plan.shares, 0.9, seconds=3600)
    assert extra > 0
    for j in np.flatnonzero(plan.bids):
        bid = plan.bids[j] + preds[j].cushion(plan.shares[j], plan.bids[j], 0.9)
        held = np.mean(bid / (bid + samples[j]) >= plan.shares[j] - 1e-12)
        assert held == pytest.approx(0.9, abs=0.01)
    assert preds[0].cushion(0.5, 1e9, 0.9) == 0.0  # a huge bid needs no cushion
