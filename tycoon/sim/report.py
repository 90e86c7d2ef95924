"""Runs of the simulator as plain results: one equilibrium, one dynamic comparison, sweeps.

Every result is a dict of plain numbers (JSON-ready); the market's figures of an
equilibrium run that did not converge are ``None``: an unconverged run yields no figure.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from tycoon.sim.dynamic import Run, Workload, compare
from tycoon.sim.equilibrium import Equilibrium, solve_equilibrium
from tycoon.sim.market import Game, balanced_game, proportional_share, random_market
from tycoon.sim.measures import measure


def make_market(
    users: int,
    hosts: int,
    seed: int,
    *,
    game: str = "balanced",
    budget_spread: float = 1.0,
    sparsity: float = 0.0,
) -> Game:
    """A balanced game or a heterogeneous random market."""
    rng = np.random.default_rng(seed)
    if game == "balanced":
        return balanced_game(users, hosts, rng)
    return random_market(users, hosts, rng, budget_spread=budget_spread, sparsity=sparsity)


def equilibrium_report(market: Game, **solver: Any) -> tuple[dict[str, Any], Equilibrium]:
    """Solve for an equilibrium and measure it next to plain proportional share."""
    started = time.perf_counter()
    eq = solve_equilibrium(market, **solver)
    seconds = time.perf_counter() - started
    baseline = measure(market.values, proportional_share(market.values), market.capacities)
    result = {
        "mode": "equilibrium",
        "hosts": market.hosts,
        "users": market.users,
        "converged": eq.converged,
        "rounds": eq.rounds,
        "residual": eq.residual,
        "nash_gap": eq.nash_gap,
        "damping": eq.damping,
        "seconds": seconds,
        "market": measure(market.values, eq.shares, market.capacities).to_dict()
        if eq.converged
        else None,
        "proportional_share": baseline.to_dict(),
    }
    return result, eq


def dynamic_report(workload: Workload) -> tuple[dict[str, Any], dict[str, Run]]:
    """Both policies on one workload."""
    runs = compare(workload)
    result = {
        "mode": "dynamic",
        "hosts": workload.hosts,
        "load": workload.load,
        "duration": workload.duration,
        "seed": workload.seed,
        **{name: run.summary() for name, run in runs.items()},
    }
    return result, runs


def sweep_equilibrium(hosts: int, users: list[int], seeds: int, **solver: Any) -> dict[str, Any]:
    """Efficiency and fairness against the number of users (balanced games), averaged over
    ``seeds`` markets each; unconverged runs are counted and left out."""
    rows = []
    for m in users:
        figures: dict[str, list[float]] = {}
        unconverged = 0
        for seed in range(seeds):
            result, _ = equilibrium_report(make_market(m, hosts, seed), **solver)
            if result["market"] is None:
                unconverged += 1
                continue
            for name in ("market", "proportional_share"):
                for key in ("efficiency", "min_envy_ratio", "uniformity"):
                    figures.setdefault(f"{name}.{key}", []).append(result[name][key])
        row: dict[str, Any] = {"users": m, "unconverged": unconverged}
        for key, values in figures.items():
            row[key] = _mean(values) if "envy" not in key else min(values)
        rows.append(row)
    return {"mode": "sweep-equilibrium", "hosts": hosts, "seeds": seeds, "rows": rows}


def sweep_dynamic(base: Workload, loads: list[float], seeds: int) -> dict[str, Any]:
    """Completion figures against offered load, averaged over ``seeds`` workloads each."""
    rows = []
    for load in loads:
        figures: dict[str, list[float]] = {}
        for seed in range(seeds):
            workload = Workload(**{**_fields(base), "load": load, "seed": base.seed + seed})
            for name, run in compare(workload).items():
                for key in ("deadline_hits", "value_weighted_completion", "utilization"):
                    figures.setdefault(f"{name}.{key}", []).append(getattr(run, key))
        rows.append({"load": load, **{k: _mean(v) for k, v in figures.items()}})
    return {"mode": "sweep-dynamic", "hosts": base.hosts, "seeds": seeds, "rows": rows}


def _fields(workload: Workload) -> dict[str, Any]:
    return {name: getattr(workload, name) for name in workload.__dataclass_fields__}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def table(result: dict[str, Any]) -> str:
    """A human-readable table of a result."""
    mode = result["mode"]
    lines: list[str] = []
    if mode == "equilibrium":
        state = "converged" if result["converged"] else "DID NOT CONVERGE"
        lines.append(
            f"equilibrium: {result['users']} users x {result['hosts']} hosts, {state} after "
            f"{result['rounds']} rounds ({result['seconds']:.2f} s), largest bid move "
            f"{result['residual']:.2e}, Nash gap {result['nash_gap']:.2e}"
        )
        lines.append(f"{'measure':<16}{'market':>14}{'proportional':>14}")
        for key in ("efficiency", "uniformity", "min_envy_ratio", "utilization", "welfare"):
            market = result["market"][key] if result["market"] else None
            shown = f"{market:>14.4f}" if market is not None else f"{'n/a':>14}"
            lines.append(f"{key:<16}{shown}{result['proportional_share'][key]:>14.4f}")
        if not result["converged"]:
            lines.append("no market figures: the best-response dynamics did not settle")
    elif mode == "dynamic":
        lines.append(
            f"dynamic: {result['hosts']} hosts, load {result['load']}, "
            f"{result['market']['jobs']} jobs"
        )
        lines.append(f"{'measure':<28}{'market':>12}{'proportional':>14}")
        for key in (
            "deadline_hits",
            "value_weighted_completion",
            "mean_completion_time",
            "utilization",
            "completed",
        ):
            a, b = result["market"][key], result["proportional"][key]
            lines.append(f"{key:<28}{a:>12.4g}{b:>14.4g}")
    else:
        rows = result["rows"]
        keys = [k for k in rows[0] if k not in ("users", "load")] if rows else []
        first = "users" if mode == "sweep-equilibrium" else "load"
        lines.append("  ".join([first, *keys]))
        for row in rows:
            lines.append("  ".join([str(row[first])] + [f"{row[k]:.4g}" for k in keys]))
    return "\n".join(lines)
