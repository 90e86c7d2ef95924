"""Price statistics against numpy/scipy: moving-window moments and the dynamic histogram."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from tycoon.errors import Rejected
from tycoon.sls.stats import Moments, PriceStatistics, ProbabilityDistribution, WindowStatistics
from tycoon.sls.tables import WINDOWS, HistogramTable, MomentTable
from tycoon.units import NS


def expected_window(ts_ns: np.ndarray, now_ns: int, span_s: int, buckets: int) -> np.ndarray:
    """The documented window rule: samples whose bucket epoch is in (e(now) - B, e(now)]."""
    width = span_s * NS // buckets
    epoch = ts_ns // width
    now_epoch = now_ns // width
    return (epoch > now_epoch - buckets) & (epoch <= now_epoch)


def check_moments(m: Moments, values: np.ndarray) -> None:
    assert m.count == values.size
    assert m.mean == pytest.approx(values.mean(), rel=1e-12)
    assert m.var == pytest.approx(values.var(), rel=1e-8)
    assert m.skew == pytest.approx(scipy.stats.skew(values), rel=1e-6, abs=1e-9)
    assert m.kurt == pytest.approx(scipy.stats.kurtosis(values), rel=1e-6, abs=1e-9)


def test_moments_match_numpy_in_every_window() -> None:
    rng = np.random.default_rng(7)
    ts = np.sort(rng.uniform(0, 3 * 3600, 4000))
    xs = rng.gamma(2.0, 3.0, ts.size) + 500.0  # skewed, far from zero
    ts_ns = (ts * NS).astype(np.int64)
    ws = WindowStatistics()
    for t, x in zip(ts_ns.tolist(), xs.tolist(), strict=True):
        ws.add(t, x)
    now = int(ts_ns[-1])
    moments = ws.moments(now)
    assert set(moments) == set(WINDOWS)
    for name, span in WINDOWS.items():
        sel = expected_window(ts_ns, now, span, 12)
        assert sel.sum() > 10
        check_moments(moments[name], xs[sel])
    # the day window holds everything; the minute window only the last minute or so
    assert moments["day"].count == xs.size
    assert 0 < moments["minute"].count < moments["hour"].count < xs.size


def test_window_eviction() -> None:
    ws = WindowStatistics(windows={"minute": 60}, buckets=6)  # 10 s buckets
    for t in range(0, 60, 5):  # 12 samples, 0..55 s: values 1..12
        ws.add(t * NS, float(t // 5 + 1))
    assert ws.moments(59 * NS)["minute"].count == 12
    # at 60 s the bucket [0, 10) s is evicted (the window slides one bucket at a time)
    at_60 = ws.moments(60 * NS)["minute"]
    assert at_60.count == 10
    assert at_60.mean == pytest.approx(np.mean(np.arange(3, 13)))
    assert ws.moments(109 * NS)["minute"].count == 2  # bucket [50, 60) s only
    assert ws.moments(110 * NS)["minute"].count == 0
    empty = ws.moments(200 * NS)["minute"]
    assert (empty.count, empty.mean, empty.var, empty.skew, empty.kurt) == (0, 0.0, 0.0, 0.0, 0.0)
    # a new sample reuses the evicted ring slot
    ws.add(200 * NS, 42.0)
    assert ws.moments(200 * NS)["minute"] == Moments(1, 42.0, 0.0, 0.0, 0.0)


def test_constant_series_has_no_spread() -> None:
    ws = WindowStatistics()
    for i in range(100):
        ws.add(i * NS, 1e9 + 0.1)
    m = ws.moments()["minute"]
    assert m.mean == pytest.approx(1e9 + 0.1)
    assert (m.var, m.skew, m.kurt) == (0.0, 0.0, 0.0)


def test_batch_add_equals_sequential_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    rows = rng.integers(0, 5, n)
    ts = np.sort(rng.integers(0, 7200 * NS, n))
    xs = rng.normal(100, 10, n)
    one = MomentTable(5)
    for r, t, x in zip(rows, ts, xs, strict=True):
        one.add(np.array([r]), np.array([t]), np.array([x]))
    many = MomentTable(5)
    for chunk in np.array_split(np.arange(n), 9):
        many.add(rows[chunk], ts[chunk], xs[chunk])
    at = np.full(5, ts[-1])
    assert np.array_equal(one.read(np.arange(5), at), many.read(np.arange(5), at))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=2, max_size=60))
def test_moments_property(values: list[float]) -> None:
    ws = WindowStatistics(windows={"day": 86400})
    for i, v in enumerate(values):
        ws.add(i * NS, v)
    m = ws.moments()["day"]
    x = np.array(values)
    assert m.count == len(values)
    assert m.mean == pytest.approx(x.mean(), rel=1e-9, abs=1e-9)
    assert m.var == pytest.approx(x.var(), rel=1e-6, abs=1e-6 * max(1.0, x.mean()) ** 2 * 1e-6)
    assert all(math.isfinite(v) for v in (m.skew, m.kurt))


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(1).uniform(0.0, 1.0, 20_000),
        np.random.default_rng(2).normal(50.0, 5.0, 20_000),
        np.random.default_rng(3).exponential(3.0, 20_000),
    ],
    ids=["uniform", "normal", "exponential"],
)
def test_quantiles_match_numpy(data: np.ndarray) -> None:
    dist = ProbabilityDistribution(bins=32)
    dist.extend(data)
    assert dist.total == data.size
    qs = np.linspace(0.0, 1.0, 21)
    ours = dist.quantile(qs)
    theirs = np.quantile(data, qs)
    assert np.all(np.abs(ours - theirs) <= dist.width)  # within one bin
    assert np.all(np.diff(ours) >= 0)
    # the range covers the data, at most ~4x wider than needed (power-of-two growth)
    assert dist.lo <= data.min() and data.max() < dist.lo + dist.bins * dist.width
    assert dist.bins * dist.width <= 4 * (data.max() - data.min())
    for x in np.quantile(data, [0.05, 0.5, 0.95]):
        bin_mass = dist.counts[int((x - dist.lo) // dist.width)] / dist.total
        assert abs(dist.cdf(float(x)) - (data <= x).mean()) <= bin_mass  # linear within a bin
    assert dist.cdf(dist.lo - 1) == 0.0 and dist.cdf(dist.lo + dist.bins * dist.width) == 1.0
    assert dist.mean() == pytest.approx(data.mean(), abs=dist.width)


def test_histogram_growth_keeps_counts_exact() -> None:
    dist = ProbabilityDistribution(bins=8)
    dist.add(10.0)
    assert dist.total == 1 and dist.lo == 10.0
    for x in (10.5, 11.0, 1000.0, -5.0, 0.0, 3.0):
        dist.add(x)
        assert dist.lo <= x < dist.lo + 8 * dist.width
    assert dist.total == 7
    edges = dist.edges
    for x in (10.0, 10.5, 11.0, 1000.0, -5.0, 0.0, 3.0):
        i = int((x - dist.lo) // dist.width)
        assert edges[i] <= x < edges[i + 1]
        assert dist.counts[i] >= 1


def test_histogram_batches_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(5)
    xs = np.concatenate([rng.normal(10, 1, 500), rng.normal(1000, 50, 500), [0.0, -3.0]])
    one = ProbabilityDistribution()
    for x in xs:
        one.add(float(x))
    table = HistogramTable(3)
    for chunk in np.array_split(np.arange(xs.size), 7):
        table.add(np.full(chunk.size, 2, dtype=np.int64), xs[chunk])
    assert table.counts[2].tolist() == one.counts
    assert (table.lo[2], table.width[2]) == (one.lo, one.width)


def test_statistics_body_round_trip() -> None:
    ws = WindowStatistics()
    dist = ProbabilityDistribution(bins=16)
    for i, x in enumerate([3.0, 4.0, 4.5, 10.0, 2.0]):
        ws.add(i * NS, x)
        dist.add(x)
    stats = PriceStatistics(ws.moments(), dist)
    body = stats.to_body()
    assert set(body) == {"windows", "histogram"}
    assert set(body["windows"]) == {"minute", "hour", "day"}
    assert set(body["windows"]["minute"]) == {"count", "mean", "var", "skew", "kurt"}
    assert len(body["histogram"]["edges"]) == 17 and len(body["histogram"]["counts"]) == 16
    back = PriceStatistics.from_body(body)
    assert back.to_body() == body
    assert back.histogram.quantile(0.5) == dist.quantile(0.5)
    assert back.windows["hour"].std == pytest.approx(math.sqrt(body["windows"]["hour"]["var"]))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("windows"),
        lambda b: b["windows"]["minute"].update(count=-1),
        lambda b: b["windows"]["minute"].update(var=-1.0),
        lambda b: b["windows"]["minute"].update(mean=float("nan")),
        lambda b: b["histogram"]["counts"].pop(),
        lambda b: b["histogram"]["edges"].reverse(),
        lambda b: b["histogram"]["edges"].__setitem__(1, 1e9),
        lambda b: b["histogram"]["counts"].__setitem__(0, 1.5),
    ],
)
def test_statistics_body_rejects_malformed(mutate: object) -> None:
    dist = ProbabilityDistribution(bins=4)
    dist.extend([1.0, 2.0, 3.0])
    ws = WindowStatistics()
    ws.add(0, 1.0)
    body = PriceStatistics(ws.moments(), dist).to_body()
    mutate(body)  # type: ignore[operator]
    with pytest.raises(Rejected) as info:
        PriceStatistics.from_body(body)
    assert info.value.code == "malformed"


def test_empty_distribution_and_bad_values() -> None:
    dist = ProbabilityDistribution()
    with pytest.raises(ValueError):
        dist.quantile(0.5)
    with pytest.raises(Rejected):
        dist.add(float("inf"))
    with pytest.raises(ValueError):
        ProbabilityDistribution(bins=1)
    assert ProbabilityDistribution.from_body(dist.to_body()).total == 0
