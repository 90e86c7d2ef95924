"""The simulated driver: capacities from config, synthetic usage, determinism, validation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tycoon.errors import Rejected
from tycoon.resources import RESOURCES, Capacity, Shares, Usage
from tycoon.vmm import DRIVERS, make_driver
from tycoon.vmm.driver import Driver
from tycoon.vmm.simulated import PRESETS, SimulatedDriver, capacity_from_config
from tycoon.vmm.validate import sandbox_name


def test_is_a_driver_with_default_capacity() -> None:
    driver: Driver = make_driver("simulated")
    assert driver.name == "simulated"
    assert driver.capacity() == PRESETS["medium"]
    assert "simulated" in DRIVERS


def test_presets_and_overrides() -> None:
    small = make_driver("simulated", preset="small", cpu=3_000, cores=2).capacity()
    assert small == Capacity(
        cpu=3_000, memory=PRESETS["small"].memory, disk=PRESETS["small"].disk,
        net=PRESETS["small"].net, cores=2,
    )
    for name in ("tiny", "small", "medium", "large"):
        assert capacity_from_config(name) == PRESETS[name]


@pytest.mark.parametrize(
    "config",
    [{"preset": "huge"}, {"cpu": 0}, {"memory": -1}, {"cores": 1.5}, {"noise": 2.0},
     {"default_demand": -0.1}, {"demand": {"a": {"gpu": 1.0}}}, {"disk": True}],
)
def test_bad_config_is_refused(config: dict) -> None:
    with pytest.raises(ValueError):
        make_driver("simulated", **config)


def test_unknown_driver_and_key() -> None:
    with pytest.raises(ValueError, match="unknown driver"):
        make_driver("vmware")
    with pytest.raises(ValueError, match="unknown config key"):
        make_driver("simulated", cpus=4)


def test_greedy_sandboxes_use_their_share() -> None:
    driver = SimulatedDriver(seed=1)
    driver.create("a")
    driver.create("idle")
    driver.apply({"a": Shares(cpu=0.75, memory=0.5), "b": Shares(cpu=0.25, net=1.0)})
    usage = driver.usage()
    assert set(usage) == {"a", "b", "idle"}
    assert usage["a"] == Usage(cpu=0.75, memory=0.5)
    assert usage["b"] == Usage(cpu=0.25, net=1.0)
    assert usage["idle"] == Usage()
    assert driver.sandboxes() == ["a", "b", "idle"]


def test_demand_caps_usage() -> None:
    driver = SimulatedDriver(demand={"a": 0.1, "b": {"cpu": 0.3}})
    driver.apply({"a": Shares(cpu=0.5, memory=0.5), "b": Shares(cpu=0.5, memory=0.5),
                  "nobody": Shares(disk=0.5)})
    usage = driver.usage()
    assert usage["a"] == Usage(cpu=0.1, memory=0.1)
    assert usage["b"] == Usage(cpu=0.3, memory=0.5)  # memory demand defaults to greedy
    assert usage["nobody"] == Usage(disk=0.5)  # no demand given: greedy


def test_work_conserving_hands_idle_share_to_the_hungry() -> None:
    driver = SimulatedDriver(demand={"light": 0.1}, work_conserving=True)
    driver.apply({
        "light": Shares(cpu=0.5, memory=0.5),
        "greedy": Shares(cpu=0.25, memory=0.25),
        "other": Shares(cpu=0.25),
        "nocpu": Shares(memory=0.25),
    })
    usage = driver.usage()
    assert usage["light"].cpu == pytest.approx(0.1)
    # 0.4 idle split 1:1 between greedy and other (equal shares)
    assert usage["greedy"].cpu == pytest.approx(0.45)
    assert usage["other"].cpu == pytest.approx(0.45)
    assert usage["nocpu"].cpu == 0.0  # no share, no spill-over
    assert usage["greedy"].memory == 0.25  # memory is a hard limit


def test_seeded_noise_is_deterministic_and_bounded() -> None:
    def readings(seed: int) -> list[Usage]:
        driver = SimulatedDriver(noise=0.2, seed=seed)
        driver.apply({"a": Shares(cpu=0.6, memory=0.4), "b": Shares(cpu=0.4)})
        return [u for _ in range(20) for u in driver.usage().values()]

    first = readings(7)
    assert first == readings(7)
    assert first != readings(8)
    for usage in first:
        for r in RESOURCES:
            assert 0.0 <= usage.of(r) <= 1.0
    cpus = [u.cpu for u in first[::2]]
    assert all(0.6 * 0.8 - 1e-9 <= c <= 0.6 * 1.2 + 1e-9 for c in cpus)
    assert len(set(cpus)) > 1


def test_time_weighted_usage_with_a_clock() -> None:
    now = [0.0]
    driver = SimulatedDriver(clock=lambda: now[0])
    driver.apply({"a": Shares(cpu=1.0)})
    now[0] = 1.0
    driver.apply({"a": Shares(cpu=0.5), "b": Shares(cpu=0.5)})
    now[0] = 4.0
    usage = driver.usage()
    assert usage["a"].cpu == pytest.approx((1.0 * 1 + 0.5 * 3) / 4)
    assert usage["b"].cpu == pytest.approx(0.5 * 3 / 4)
    now[0] = 5.0
    assert driver.usage()["a"].cpu == 0.5  # no change since: the shares in force


def test_absent_accounts_get_nothing_and_destroy_forgets() -> None:
    driver = SimulatedDriver()
    driver.apply({"a": Shares(cpu=0.5), "b": Shares(cpu=0.5)})
    driver.apply({"a": Shares(cpu=1.0)})
    assert driver.usage()["b"] == Usage()
    driver.destroy("b")
    driver.destroy("b")  # idempotent
    assert "b" not in driver.usage()
    assert driver.shares() == {"a": Shares(cpu=1.0)}


@pytest.mark.parametrize(
    "shares",
    [
        {"a": Shares(cpu=1.5)},
        {"a": Shares(cpu=-0.1)},
        {"a": Shares(memory=math.nan)},
        {"a": Shares(cpu=0.6), "b": Shares(cpu=0.6)},
        {"a": Shares(ports=(0,))},
        {"a": Shares(cpu=True)},
        {"a": Shares(cpu="0.5")},  # type: ignore[arg-type]
        {"a": Shares(net=math.inf)},
        {"": Shares(cpu=0.1)},
        {"a": {"cpu": 0.1}},
    ],
)
def test_bad_shares_are_refused_and_change_nothing(shares: dict) -> None:
    driver = SimulatedDriver()
    driver.apply({"x": Shares(cpu=0.2)})
    with pytest.raises(Rejected) as info:
        driver.apply(shares)
    assert info.value.code in {"bad_share", "malformed"}
    assert driver.shares() == {"x": Shares(cpu=0.2)}
    assert driver.sandboxes() == ["x"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6),
    st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6),
    st.booleans(),
)
def test_usage_never_exceeds_capacity(
    weights: list[float], demands: list[float], conserving: bool
) -> None:
    total = sum(weights) or 1.0
    shares = {f"a{i}": Shares(cpu=w / total * 0.999999) for i, w in enumerate(weights)}
    demand = {f"a{i}": demands[i] for i in range(len(weights))}
    driver = SimulatedDriver(demand=demand, work_conserving=conserving)
    driver.apply(shares)
    usage = driver.usage()
    assert sum(u.cpu for u in usage.values()) <= 1.0 + 1e-9
    for account, u in usage.items():
        assert u.cpu <= demand[account] + 1e-9
        if not conserving:
            assert u.cpu <= shares[account].cpu


def test_sandbox_names_are_safe_and_distinct() -> None:
    key = "U" + "A" * 55
    assert sandbox_name(key) == key
    assert sandbox_name(key, "t-") == "t-" + key
    odd = sandbox_name("../etc passwd")
    assert "/" not in odd and " " not in odd and not odd.startswith(".")
    assert sandbox_name("a b") != sandbox_name("a_b")
    assert sandbox_name("a b") != sandbox_name("a/b")
    assert len(sandbox_name("x" * 256)) <= 64
