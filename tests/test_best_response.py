"""Best Response against independent solvers: KKT bisection, SLSQP and brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import minimize

from tycoon.agent import best_response_solve as br
from tycoon.agent.best_response import (
    ZERO_PRICE_FRACTION,
    best_response,
    best_response_batch,
    utility,
)
from tycoon.errors import Rejected

REL = 1e-6


def reference(budget: float, w: np.ndarray, y: np.ndarray) -> float:
    """Supremum of Σ w x/(x+y) by bisection on the KKT multiplier (no sorting, no prefix).

    x_j(λ) = max(0, sqrt(w_j y_j / λ) − y_j) spends Σ x_j(λ), decreasing in λ; find the λ
    that spends the budget. Free hosts (y = 0, w > 0) add their whole worth to the
    supremum for any positive budget.
    """
    if budget <= 0:
        return 0.0
    free = (w > 0) & (y == 0)
    priced = (w > 0) & (y > 0)
    total = float(w[free].sum())
    if not priced.any():
        return total
    wp, yp = w[priced], y[priced]

    def spend(log_lam: float) -> np.ndarray:
        return np.maximum(np.sqrt(wp * yp / math.exp(log_lam)) - yp, 0.0)

    lo, hi = -700.0, math.log(float((wp / yp).max()))
    for _ in range(200):
        mid = (lo + hi) / 2
        if spend(mid).sum() > budget:
            lo = mid
        else:
            hi = mid
    x = spend(lo)
    x *= budget / x.sum()
    return total + float(np.sum(wp * x / (x + yp)))


def slsqp(budget: float, w: np.ndarray, y: np.ndarray) -> float:
    """A general-purpose constrained solver (priced hosts only), from several starts."""
    n = w.size
    best = 0.0
    starts = [
        np.full(n, budget / n),
        budget * w / w.sum(),
        budget * np.sqrt(w * y) / np.sqrt(w * y).sum(),
    ]
    for x0 in starts:
        res = minimize(
            lambda x: -np.sum(w * x / (x + y)),
            x0,
            jac=lambda x: -w * y / (x + y) ** 2,
            bounds=[(0.0, budget)] * n,
            constraints=[
                {"type": "eq", "fun": lambda x: x.sum() - budget, "jac": lambda x: np.ones(n)}
            ],
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 500},
        )
        x = np.clip(res.x, 0, None)
        x *= budget / x.sum()
        best = max(best, float(np.sum(w * x / (x + y))))
    return best


def random_instance(rng: np.random.Generator) -> tuple[float, np.ndarray, np.ndarray]:
    n = int(rng.integers(1, 40))
    kind = rng.integers(0, 6)
    w = rng.lognormal(0, 1.5, n)
    y = rng.lognormal(0, 1.5, n)
    if kind == 1:  # ties in w/y
        y = w / rng.choice([0.5, 1.0, 2.0], n)
    elif kind == 2:  # identical hosts
        w[:] = w[0]
        y[:] = y[0]
    elif kind == 3:  # some free hosts
        y[rng.random(n) < 0.3] = 0.0
    elif kind == 4:  # some hosts worth nothing
        w[rng.random(n) < 0.3] = 0.0
    elif kind == 5:  # integer-ish prices with repeats
        y = rng.integers(0, 4, n).astype(float)
        w = rng.integers(1, 4, n).astype(float)
    scale = float(y.sum()) if y.sum() > 0 else 1.0
    budget = scale * 10 ** float(rng.choice([-9, -6, -3, -1, 0, 1, 3, 6]) + rng.uniform(-0.5, 0.5))
    return budget, w, y


def test_against_kkt_bisection_on_random_instances() -> None:
    rng = np.random.default_rng(2005)
    count = 0
    for _ in range(1500):
        budget, w, y = random_instance(rng)
        result = best_response(budget, w, y)
        ref = reference(budget, w, y)
        x = result.bids
        assert np.all(x >= 0)
        assert np.all(x[w == 0] == 0)
        if (w > 0).any():
            assert math.isclose(x.sum(), budget, rel_tol=1e-9)
        assert result.utility == pytest.approx(ref, rel=REL, abs=1e-300)
        assert result.utility >= ref * (1 - REL)
        assert result.utility <= result.bound * (1 + 1e-9)
        assert result.bound >= ref * (1 - 1e-9)
        count += 1
    assert count >= 500


def test_against_slsqp() -> None:
    rng = np.random.default_rng(7)
    for _ in range(150):
        n = int(rng.integers(1, 12))
        w = rng.lognormal(0, 1, n)
        y = rng.lognormal(0, 1, n)
        budget = float(y.sum() * 10 ** rng.uniform(-2, 2))
        ours = best_response(budget, w, y).utility
        general = slsqp(budget, w, y)
        assert ours >= general * (1 - 1e-9)  # never below the general solver
        assert ours == pytest.approx(general, rel=1e-5)  # SLSQP is only so precise


def test_the_filter_and_the_sort_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    cases = [random_instance(rng) for _ in range(300)]
    fast = [best_response(*c).bids for c in cases]
    monkeypatch.setattr(br, "FILTER_ROUNDS", 0)
    for case, bids in zip(cases, fast, strict=True):
        assert np.allclose(best_response(*case).bids, bids, rtol=1e-9, atol=1e-300)


def test_batch_equals_single_rows() -> None:
    rng = np.random.default_rng(11)
    m, n = 40, 25
    w = rng.lognormal(0, 1, (m, n))
    y = rng.lognormal(0, 1, (m, n))
    y[rng.random((m, n)) < 0.1] = 0
    w[rng.random((m, n)) < 0.1] = 0
    budgets = 10 ** rng.uniform(-4, 4, m)
    bids, lam = best_response_batch(budgets, w, y)
    for i in range(m):
        single = best_response(budgets[i], w[i], y[i])
        assert np.allclose(bids[i], single.bids, rtol=1e-9, atol=1e-300)
        assert lam[i] == pytest.approx(single.marginal, rel=1e-9)


def test_marginal_is_the_derivative_of_utility() -> None:
    rng = np.random.default_rng(5)
    w, y = rng.lognormal(0, 1, 20), rng.lognormal(0, 1, 20)
    budget, h = 3.0, 1e-5
    result = best_response(budget, w, y)
    up = best_response(budget + h, w, y).utility
    down = best_response(budget - h, w, y).utility
    assert result.marginal == pytest.approx((up - down) / (2 * h), rel=1e-5)


def test_free_hosts_take_a_thin_slice_split_by_sqrt_worth() -> None:
    w = np.array([4.0, 1.0, 2.0])
    y = np.array([0.0, 0.0, 1.0])
    result = best_response(10.0, w, y)
    free_bids = result.bids[:2]
    assert free_bids.sum() == pytest.approx(10.0 * ZERO_PRICE_FRACTION)
    assert free_bids[0] / free_bids[1] == pytest.approx(2.0)  # sqrt(4)/sqrt(1)
    assert result.shares[0] == result.shares[1] == 1.0
    assert result.bids.sum() == pytest.approx(10.0)
    only_free = best_response(6.0, np.array([9.0, 1.0]), np.array([0.0, 0.0]))
    assert only_free.bids == pytest.approx([4.5, 1.5])
    assert only_free.utility == 10.0


def test_edge_cases() -> None:
    zero = best_response(0.0, np.array([1.0, 2.0]), np.array([1.0, 0.0]))
    assert zero.utility == 0.0 and not zero.bids.any()
    worthless = best_response(5.0, np.array([0.0, 0.0]), np.array([1.0, 0.0]))
    assert not worthless.bids.any() and worthless.utility == 0.0
    empty = best_response(5.0, np.array([]), np.array([]))
    assert empty.bids.size == 0 and empty.utility == 0.0
    single = best_response(1e-300, np.array([1.0]), np.array([1e300]))
    assert single.bids[0] == 1e-300
    tiny = best_response(1e-20, np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0]))
    assert tiny.bids.sum() == pytest.approx(1e-20) and tiny.bids[2] == pytest.approx(1e-20)


@pytest.mark.parametrize(
    ("budget", "w", "y", "kw"),
    [
        (-1.0, [1.0], [1.0], {}),
        (math.nan, [1.0], [1.0], {}),
        ("x", [1.0], [1.0], {}),
        (1.0, [1.0, -1.0], [1.0, 1.0], {}),
        (1.0, [1.0], [math.inf], {}),
        (1.0, [1.0, 2.0], [1.0], {}),
        (1.0, [[1.0]], [[1.0]], {}),
        (1.0, [1.0], [1.0], {"max_hosts": 0}),
        (1.0, [1.0], [1.0], {"max_hosts": 1.5}),
        (1.0, [1.0], [1.0], {"zero_price_fraction": 0.0}),
    ],
)
def test_bad_input_is_rejected(budget: object, w: object, y: object, kw: dict) -> None:
    with pytest.raises(Rejected) as err:
        best_response(budget, w, y, **kw)  # type: ignore[arg-type]
    assert err.value.code == "bad_input"


def brute_force(budget: float, w: np.ndarray, y: np.ndarray, cap: int) -> float:
    best = 0.0
    for subset in itertools.combinations(range(w.size), cap):
        keep = np.zeros(w.size, dtype=bool)
        keep[list(subset)] = True
        # each subset by the unconstrained solver, itself checked against the reference above
        best = max(best, best_response(budget, np.where(keep, w, 0.0), y).utility)
    return best


def test_max_hosts_against_brute_force() -> None:
    rng = np.random.default_rng(42)
    for _ in range(300):
        n = int(rng.integers(2, 10))
        cap = int(rng.integers(1, n))
        w = rng.lognormal(0, 1.5, n)
        y = rng.lognormal(0, 1.5, n)
        if rng.random() < 0.2:
            y[rng.random(n) < 0.4] = 0.0
        budget = float(10 ** rng.uniform(-3, 3))
        result = best_response(budget, w, y, max_hosts=cap)
        best = brute_force(budget, w, y, cap)
        assert np.count_nonzero(result.bids) <= cap
        assert math.isclose(result.bids.sum(), budget, rel_tol=1e-9)
        assert result.utility >= best * (1 - REL)
        assert result.bound >= best * (1 - 1e-9)
        assert result.utility == pytest.approx(float(utility(result.bids, w, y)))


def test_max_hosts_prefers_the_valuable_host_over_the_cheap_one() -> None:
    # w/y favours host 0, but with one host allowed host 1 is worth far more.
    result = best_response(10.0, np.array([1.0, 1000.0]), np.array([0.001, 10.0]), max_hosts=1)
    assert result.bids.tolist() == [0.0, 10.0]
    assert list(result.hosts) == [1]


def test_extreme_scales_are_handled_and_the_answer_is_scale_free() -> None:
    rng = np.random.default_rng(77)
    for _ in range(300):
        n = int(rng.integers(1, 8))
        w = 10 ** rng.uniform(-300, 300, n)
        y = np.where(rng.random(n) < 0.1, 0.0, 10 ** rng.uniform(-300, 300, n))
        budget = float(10 ** rng.uniform(-300, 300))
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow is fine
            result = best_response(budget, w, y)
        assert np.all(np.isfinite(result.bids)) and np.all(result.bids >= 0)
        assert math.isclose(result.bids.sum(), budget, rel_tol=1e-9)
        assert math.isfinite(result.utility) and result.utility <= w.sum() * (1 + 1e-12)
    w, y = rng.lognormal(0, 1, 12), rng.lognormal(0, 1, 12)
    base = best_response(2.0, w, y)
    for money, worth in [(1e-200, 1.0), (1e200, 1e-200), (1.0, 1e250)]:
        scaled = best_response(2.0 * money, w * worth, y * money)
        assert np.allclose(scaled.bids, base.bids * money, rtol=1e-9)
        assert scaled.utility == pytest.approx(base.utility * worth, rel=1e-9)
        assert scaled.marginal == pytest.approx(base.marginal * worth / money, rel=1e-9)
    w = 10 ** rng.uniform(-300, 300, (60, 6))
    y = np.where(rng.random((60, 6)) < 0.1, 0.0, 10 ** rng.uniform(-300, 300, (60, 6)))
    budgets = 10 ** rng.uniform(-300, 300, 60)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        bids, _ = best_response_batch(budgets, w, y)
    for i in range(60):
        assert np.allclose(bids[i], best_response(budgets[i], w[i], y[i]).bids, rtol=1e-9, atol=0)
