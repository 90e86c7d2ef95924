"""Benchmark: the balanced game of 1,000 hosts x 100 users to equilibrium.

    python benchmarks/sim.py [--json]

Equal budgets, random linear values normalised to 1 per user (Zhang's balanced game),
solved by damped best responses (tycoon.sim.equilibrium); reports the time and rounds to
converge, the efficiency of the equilibrium and of plain proportional share, and the
smallest envy ratio. Goal: seconds <= 10. The --json last line has the keys hosts, users,
seconds, rounds, efficiency, efficiency_proportional_share, min_envy_ratio.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from tycoon.sim.market import balanced_game
from tycoon.sim.report import equilibrium_report

HOSTS, USERS = 1000, 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--method", default="sequential", choices=("sequential", "simultaneous"))
    args = parser.parse_args()
    market = balanced_game(USERS, HOSTS, np.random.default_rng(0))
    result, eq = equilibrium_report(market, method=args.method)
    if not eq.converged:
        print(f"did not converge in {eq.rounds} rounds (largest move {eq.residual:.2e})")
    figures = result["market"] or {}
    out = {
        "hosts": HOSTS,
        "users": USERS,
        "seconds": round(result["seconds"], 3),
        "rounds": eq.rounds,
        "converged": eq.converged,
        "efficiency": figures.get("efficiency"),
        "efficiency_proportional_share": result["proportional_share"]["efficiency"],
        "min_envy_ratio": figures.get("min_envy_ratio"),
    }
    print(f"balanced game, {HOSTS} hosts x {USERS} users, {args.method} best response")
    print(
        f"  converged: {eq.converged} ({eq.criterion or 'no'}) after {eq.rounds} rounds "
        f"in {result['seconds']:.2f} s; Nash gap {eq.nash_gap:.1e}"
    )
    if figures:
        print(
            f"  efficiency {figures['efficiency']:.4f} (proportional share "
            f"{out['efficiency_proportional_share']:.4f}), min envy ratio "
            f"{figures['min_envy_ratio']:.4f}, uniformity {figures['uniformity']:.4f}"
        )
    print(f"goal seconds <= 10: {'met' if result['seconds'] <= 10 else 'NOT met'}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
