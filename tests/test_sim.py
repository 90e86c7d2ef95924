"""Simulator units: allocation, measures, equilibrium edge cases, dynamic mode, CLI, plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tycoon.cli.main import main
from tycoon.errors import Rejected
from tycoon.sim.dynamic import Workload, compare, make_jobs, simulate
from tycoon.sim.equilibrium import solve_equilibrium
from tycoon.sim.market import Game, allocate, balanced_game, proportional_share, random_market
from tycoon.sim.measures import envy_matrix, measure, optimal_welfare, utilities
from tycoon.sim.report import equilibrium_report, sweep_dynamic, sweep_equilibrium


def test_allocate_is_proportional_share_through_the_auctioneer_core() -> None:
    rng = np.random.default_rng(1)
    bids = rng.uniform(0, 1, (5, 7))
    bids[:, 3] = 0.0  # nobody bids on host 3
    shares = allocate(bids)
    expected = np.where(bids.sum(axis=0) > 0, bids / np.maximum(bids.sum(axis=0), 1e-300), 0.0)
    assert np.allclose(shares, expected, atol=1e-12)
    assert np.allclose(shares.sum(axis=0), [1, 1, 1, 0, 1, 1, 1])
    assert allocate(np.zeros((0, 3))).shape == (0, 3)


def test_proportional_share_splits_each_host_among_those_who_value_it() -> None:
    values = np.array([[1.0, 0.0, 2.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    shares = proportional_share(values)
    assert np.allclose(shares, [[1 / 3, 0, 1], [1 / 3, 0.5, 0], [1 / 3, 0.5, 0]])


def test_measures_on_a_hand_example() -> None:
    values = np.array([[0.75, 0.25], [0.5, 0.5]])
    shares = np.array([[1.0, 0.0], [0.0, 1.0]])
    figures = measure(values, shares, np.ones(2))
    assert utilities(values, shares).tolist() == [0.75, 0.5]
    assert optimal_welfare(values) == 1.25
    assert figures.efficiency == pytest.approx(1.0)
    assert figures.uniformity == pytest.approx(0.5 / 0.75)
    envy = envy_matrix(values, shares)
    assert envy[0, 1] == pytest.approx(0.75 / 0.25)
    assert envy[1, 0] == pytest.approx(1.0)
    assert figures.min_envy_ratio == pytest.approx(1.0)
    assert figures.utilization == 1.0
    half = measure(values, np.array([[0.0, 0.0], [0.0, 1.0]]), np.array([3.0, 1.0]))
    assert half.utilization == pytest.approx(0.25)


def test_generators() -> None:
    rng = np.random.default_rng(0)
    game = balanced_game(4, 6, rng)
    assert np.allclose(game.values.sum(axis=1), 1) and np.all(game.budgets == 1)
    market = random_market(30, 5, rng, sparsity=0.9)
    assert np.all((market.values > 0).sum(axis=1) >= 1)
    assert market.budgets.mean() == pytest.approx(1.0)
    with pytest.raises(Rejected):
        balanced_game(0, 3, rng)
    with pytest.raises(Rejected):
        Game(np.ones(2), np.ones((3, 2)), np.ones(2))
    with pytest.raises(Rejected):
        Game(np.ones(2), -np.ones((1, 2)), np.ones(1))


def test_one_host_equilibrium_is_budget_proportional() -> None:
    market = Game(np.ones(1), np.ones((3, 1)), np.array([1.0, 2.0, 4.0]))
    eq = solve_equilibrium(market)
    assert eq.converged
    assert np.allclose(eq.shares[:, 0], [1 / 7, 2 / 7, 4 / 7])


def test_budgets_buy_shares_in_order() -> None:
    rng = np.random.default_rng(3)
    values = rng.uniform(0.5, 1.0, (3, 20))
    market = Game(np.ones(20), values / values.sum(axis=1, keepdims=True), np.array([1.0, 2, 4]))
    eq = solve_equilibrium(market)
    assert eq.converged
    held = eq.shares.sum(axis=1)
    assert held[0] < held[1] < held[2]
    assert np.allclose(eq.bids.sum(axis=1), market.budgets)


def test_unconverged_runs_give_no_market_figure() -> None:
    market = balanced_game(6, 8, np.random.default_rng(5))
    result, eq = equilibrium_report(market, max_rounds=2)
    assert not eq.converged and eq.criterion == ""
    assert result["market"] is None and result["proportional_share"] is not None
    with pytest.raises(Rejected):
        solve_equilibrium(market, method="magic")
    with pytest.raises(Rejected):
        solve_equilibrium(market, damping=0.0)


def test_dynamic_runs_are_deterministic_and_conserve_work_and_money() -> None:
    workload = Workload(hosts=6, load=1.0, duration=300, seed=4)
    jobs = make_jobs(workload)
    a = simulate(workload, "market", jobs)
    b = simulate(workload, "market", make_jobs(workload))
    assert a.summary() == b.summary()
    for run in compare(workload).values():
        assert run.jobs == jobs.arrival.size
        assert 0 <= run.deadline_hits <= run.completed / run.jobs <= 1
        assert 0 <= run.utilization <= 1 + 1e-9
        shares = np.nan_to_num(run.tracked)
        assert np.all(shares <= 1 + 1e-9)
        assert np.all(run.spent >= 0) and np.all(run.spent <= jobs.value * (1 + 1e-9))
    assert a.spent.sum() > 0
    with pytest.raises(Rejected):
        simulate(workload, "lottery", jobs)
    with pytest.raises(Rejected):
        Workload(load=-1)


def test_a_light_load_meets_every_deadline() -> None:
    runs = compare(Workload(hosts=10, load=0.05, duration=500, slack=(5.0, 10.0), seed=2))
    for run in runs.values():
        assert run.jobs > 0
        assert run.deadline_hits == 1.0 and run.value_weighted_completion == 1.0


def test_the_market_serves_value_better_under_load() -> None:
    workload = Workload(hosts=10, load=1.5, duration=600, value_spread=1.5, seed=8)
    runs = compare(workload)
    market, plain = runs["market"], runs["proportional"]
    assert market.value_weighted_completion > plain.value_weighted_completion


def test_sweeps() -> None:
    eq = sweep_equilibrium(4, [2, 3], seeds=2)
    assert [row["users"] for row in eq["rows"]] == [2, 3]
    assert all(row["market.efficiency"] <= 1 + 1e-9 for row in eq["rows"])
    dyn = sweep_dynamic(Workload(hosts=4, duration=100), [0.5, 1.0], seeds=1)
    assert [row["load"] for row in dyn["rows"]] == [0.5, 1.0]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_cli_equilibrium_json_and_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out = run_cli(
        capsys,
        "sim",
        "equilibrium",
        "--users",
        "4",
        "--hosts",
        "6",
        "--json",
        "--plot",
        str(tmp_path),
    )
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["converged"] and 0 < result["market"]["efficiency"] <= 1
    assert (tmp_path / "equilibrium.png").stat().st_size > 1000
    code, out = run_cli(
        capsys, "sim", "equilibrium", "--users", "5", "--hosts", "5", "--max-rounds", "1"
    )
    assert code == 2 and "DID NOT CONVERGE" in out and "n/a" in out


def test_cli_dynamic_and_sweeps(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out = run_cli(
        capsys, "sim", "dynamic", "--hosts", "4", "--duration", "200", "--plot", str(tmp_path)
    )
    assert code == 0 and "value_weighted_completion" in out
    assert (tmp_path / "prices.png").exists() and (tmp_path / "shares.png").exists()
    code, out = run_cli(
        capsys,
        "sim",
        "sweep",
        "equilibrium",
        "--hosts",
        "3",
        "--users",
        "2,3",
        "--seeds",
        "1",
        "--plot",
        str(tmp_path),
        "--json",
    )
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["rows"]
    code, out = run_cli(
        capsys,
        "sim",
        "sweep",
        "dynamic",
        "--hosts",
        "3",
        "--loads",
        "0.5",
        "--duration",
        "100",
        "--seeds",
        "1",
        "--plot",
        str(tmp_path),
    )
    assert code == 0 and (tmp_path / "load.png").exists()
    assert main(["sim", "sweep", "dynamic", "--loads", "x"]) == 1
    assert main(["sim", "dynamic", "--slack", "1"]) == 1
