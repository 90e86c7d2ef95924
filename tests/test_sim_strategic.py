"""The strategic-bidder bench (issue 17): no accounting game beats an honest bidder.

The market core is driven directly (no NATS) with a simulated clock; every strategy is
compared with an honest constant-rate bidder who spends the same in the same market.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tycoon.cli.main import main
from tycoon.money import MICRO
from tycoon.resources import Usage
from tycoon.sim.strategic import (
    LIMIT,
    NS,
    T0_NS,
    Keys,
    Outcome,
    Setup,
    Sim,
    bench,
    gain,
    make_setup,
    run,
)
from tycoon.sim.strategies import Honest, Split, all_strategies

NAMES = [s.name for s in all_strategies()]
MARKETS = {
    # horizon s, tick s, seed, rivals
    "600s-tick1": (600.0, 1.0, 0, 2),  # the CLI's default
    "100s-tick10-4rivals": (100.0, 10.0, 1, 4),  # long ticks: a balance lasts less than one
    "60s-tick5-8rivals": (60.0, 5.0, 0, 8),
}
_tables: dict[str, dict[str, dict[str, Any]]] = {}


def table(market: str) -> dict[str, dict[str, Any]]:
    """One bench run per market, shared by its strategies' tests."""
    if market not in _tables:
        horizon, tick, seed, rivals = MARKETS[market]
        rows, _ = bench(make_setup(horizon, tick, seed, rivals), all_strategies(), Honest)
        _tables[market] = {r["name"]: r for r in rows}
    return _tables[market]


@pytest.mark.parametrize("market", list(MARKETS))
@pytest.mark.parametrize("name", NAMES)
def test_no_strategy_gains_more_than_one_percent(market: str, name: str) -> None:
    row = table(market)[name]
    assert row["conserved"]
    assert row["gain"] is not None and row["gain"] <= LIMIT, (
        f"{name} ({row['about']}) got {row['resource_seconds']:.1f} resource-seconds for "
        f"{row['spent'] / MICRO:.3f} credits; an honest bidder spending the same got "
        f"{row['honest_resource_seconds']:.1f}: gain {row['gain']}"
    )


def test_honest_bidder_gets_its_proportional_share() -> None:
    """The bench measures what theory says: x/(x + Y) of each resource for the horizon."""
    setup = Setup(horizon_s=120.0, tick_s=1.0, budget=1000 * MICRO, rivals=(2000 * MICRO,))
    out = run(Honest(), setup)
    assert out.conserved and not out.rejected
    assert abs(out.spent - setup.budget) <= 2  # the whole budget, up to carried remainders
    assert out.received == pytest.approx(2 * 120.0 / 3, rel=1e-6)  # cpu + memory, 1/3 each
    assert gain(out, out) == 1.0


def test_splitting_changes_nothing() -> None:
    """Proportional share is additive in rates: 8 accounts with B/8 get what one with B gets."""
    setup = make_setup(120.0, 1.0, seed=3)
    keys = Keys()
    one, eight = run(Honest(), setup, keys), run(Split(8), setup, keys)
    assert eight.spent == pytest.approx(one.spent, abs=8)
    assert gain(eight, one) == pytest.approx(1.0, abs=1e-6)


def test_gain_is_per_credit_against_the_same_spend() -> None:
    honest = Outcome("honest", received=100.0, spent=1000, rejected=())
    assert gain(Outcome("x", 200.0, 1000, ()), honest) == 2.0
    assert gain(Outcome("x", 100.0, 500, ()), honest) == 2.0
    assert gain(Outcome("x", 0.0, 0, ()), honest) == 0.0
    # nothing spent counts as 1 µcredit: free resources are a very large gain, not a division
    assert gain(Outcome("x", 1.0, 0, ()), honest) == pytest.approx(10.0)


def test_cli_json_and_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["sim", "strategic", "--horizon", "60", "--json", "--plot", str(tmp_path)])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["mode"] == "strategic" and result["horizon_s"] == 60.0
    assert [r["name"] for r in result["strategies"]] == NAMES
    assert code == (2 if result["ahead"] else 0)
    assert result["ahead"] == [r["name"] for r in result["strategies"] if r["ahead"]]
    assert Path(result["plot"]).stat().st_size > 0


def test_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sim", "strategic", "--horizon", "20", "--tick", "0.5", "--rivals", "1"])
    out = capsys.readouterr().out
    assert "refund-cycle" in out and "honest" in out
    assert code in (0, 2)


def test_cli_refuses_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "strategic", "--horizon", "1", "--tick", "2"]) == 1
    assert "bad_input" in capsys.readouterr().err


def test_a_usage_reading_is_the_mean_share_since_the_previous_one() -> None:
    """A busy sandbox whose share changed between readings reports what it used meanwhile."""
    setup = Setup(horizon_s=10.0, tick_s=1.0, budget=1000 * MICRO, rivals=(1000 * MICRO,))
    sim = Sim(setup, Keys())
    readings: list[dict[str, Usage]] = []
    tick = sim.market.tick

    def spy(now_ns: int, usage: dict[str, Usage]) -> Any:
        readings.append(dict(usage))
        return tick(now_ns, usage)

    sim.market.tick = spy  # type: ignore[method-assign]
    rival = next(iter(sim.market.accounts))
    me = sim.player()
    sim.advance(T0_NS + NS // 4)
    sim.fund(me, setup.budget)
    sim.bid(me, f"{sim.until_end()} cpu:1 memory:1")  # from 1/4 s on: about half
    mine = sim.market.shares_map()[me].cpu
    assert 0.49 < mine < 0.51
    sim.advance(T0_NS + NS)
    sim.tick()
    assert readings[0][me].cpu == pytest.approx(mine * 0.75)
    assert readings[0][rival].cpu == pytest.approx(0.25 + (1 - mine) * 0.75)
    assert sim.received == pytest.approx(2 * mine * 0.75)
