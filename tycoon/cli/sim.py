"""``tycoon sim``: the market simulator (no bus; the real allocation and Best Response cores).

    tycoon sim equilibrium --users 10 --hosts 50 [--game balanced|random] [--plot DIR]
    tycoon sim dynamic --hosts 20 --load 0.8 --duration 1000 [--plot DIR]
    tycoon sim sweep equilibrium --hosts 20 --users 2,4,8,16 [--plot DIR]
    tycoon sim sweep dynamic --hosts 20 --loads 0.3,0.6,0.9,1.2 [--plot DIR]

Each prints a table of the market next to plain proportional share (``--json``: one JSON
object). An equilibrium run that does not converge prints no market figures and exits 2.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from tycoon.errors import Rejected
from tycoon.sim.dynamic import Workload
from tycoon.sim.equilibrium import METHODS


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sim`` subcommand and its modes."""
    sim = sub.add_parser(
        "sim",
        help="simulate markets (equilibrium, dynamic, sweeps)",
        description="Evaluate the market against plain proportional share.",
    )
    modes = sim.add_subparsers(dest="mode", metavar="MODE", required=True)

    eq = modes.add_parser("equilibrium", help="users best-respond in turn until bids settle")
    _market_options(eq)
    _solver_options(eq)
    _common(eq)
    eq.set_defaults(func=cmd_equilibrium)

    dyn = modes.add_parser("dynamic", help="jobs arrive and leave; deadlines and completion")
    _workload_options(dyn)
    dyn.add_argument("--load", type=float, default=0.8, help="offered work / capacity")
    _common(dyn)
    dyn.set_defaults(func=cmd_dynamic)

    sweep = modes.add_parser("sweep", help="figures against load, with a plot")
    kinds = sweep.add_subparsers(dest="kind", metavar="KIND", required=True)
    s_eq = kinds.add_parser("equilibrium", help="efficiency and fairness against users")
    s_eq.add_argument("--hosts", type=int, default=20)
    s_eq.add_argument("--users", default="2,4,8,16,32", help="comma-separated user counts")
    s_eq.add_argument("--seeds", type=int, default=5, help="markets per point")
    _solver_options(s_eq)
    _common(s_eq)
    s_eq.set_defaults(func=cmd_sweep_equilibrium)
    s_dyn = kinds.add_parser("dynamic", help="completion against offered load")
    _workload_options(s_dyn)
    s_dyn.add_argument("--loads", default="0.3,0.6,0.9,1.2,1.5", help="comma-separated loads")
    s_dyn.add_argument("--seeds", type=int, default=3, help="workloads per point")
    _common(s_dyn)
    s_dyn.set_defaults(func=cmd_sweep_dynamic)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plot", metavar="DIR", default=None, help="write PNG plots into DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _market_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--hosts", type=int, default=50)
    p.add_argument(
        "--game",
        choices=("balanced", "random"),
        default="balanced",
        help="balanced: equal budgets, Σ values = 1 (Zhang); random: lognormal "
        "budgets and capacities",
    )
    p.add_argument("--budget-spread", type=float, default=1.0, help="random game: σ of budgets")
    p.add_argument(
        "--sparsity",
        type=float,
        default=0.0,
        help="random game: fraction of (user, host) pairs worth nothing",
    )
    p.add_argument("--seed", type=int, default=0)


def _solver_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=METHODS, default="sequential")
    p.add_argument("--damping", type=float, default=1.0, help="initial step towards the BR")
    p.add_argument("--tol", type=float, default=1e-9, help="largest relative bid move to stop")
    p.add_argument("--max-rounds", type=int, default=5000)


def _workload_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hosts", type=int, default=20)
    p.add_argument("--duration", type=float, default=1000.0, help="seconds of arrivals")
    p.add_argument("--dt", type=float, default=1.0, help="time step (s)")
    p.add_argument("--mean-size", type=float, default=200.0, help="mean job size (work units)")
    p.add_argument("--slack", default="1,10", help="deadline slack range LO,HI (x run time alone)")
    p.add_argument("--value-spread", type=float, default=1.0, help="σ of value per unit work")
    p.add_argument("--seed", type=int, default=0)


def _solver(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "method": args.method,
        "damping": args.damping,
        "tol": args.tol,
        "max_rounds": args.max_rounds,
    }


def _floats(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise Rejected("bad_input", f"{name} must be comma-separated numbers: {text!r}") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise Rejected("bad_input", f"{name} must be positive numbers: {text!r}")
    return values


def _workload(args: argparse.Namespace, load: float) -> Workload:
    slack = _floats(args.slack, "--slack")
    if len(slack) != 2:
        raise Rejected("bad_input", "--slack needs LO,HI")
    return Workload(
        hosts=args.hosts,
        load=load,
        duration=args.duration,
        dt=args.dt,
        mean_size=args.mean_size,
        slack=(slack[0], slack[1]),
        value_spread=args.value_spread,
        seed=args.seed,
    )


def _emit(args: argparse.Namespace, result: dict[str, Any], plots: list[Path]) -> None:
    from tycoon.sim.report import table

    if plots:
        result = {**result, "plots": [str(p) for p in plots]}
    if args.json:
        print(json.dumps(result, default=float))
        return
    print(table(result))
    for path in plots:
        print(f"wrote {path}")


def cmd_equilibrium(args: argparse.Namespace) -> int:
    """One market to equilibrium, next to proportional share."""
    from tycoon.sim.report import equilibrium_report, make_market

    market = make_market(
        args.users,
        args.hosts,
        args.seed,
        game=args.game,
        budget_spread=args.budget_spread,
        sparsity=args.sparsity,
    )
    result, eq = equilibrium_report(market, record=args.plot is not None, **_solver(args))
    plots = []
    if args.plot:
        from tycoon.sim.plots import plot_equilibrium

        plots = plot_equilibrium(eq, Path(args.plot))
    _emit(args, result, plots)
    return 0 if eq.converged else 2


def cmd_dynamic(args: argparse.Namespace) -> int:
    """One workload under both policies."""
    from tycoon.sim.report import dynamic_report

    result, runs = dynamic_report(_workload(args, args.load))
    plots = []
    if args.plot:
        from tycoon.sim.plots import plot_dynamic

        plots = plot_dynamic(runs, Path(args.plot))
    _emit(args, result, plots)
    return 0


def cmd_sweep_equilibrium(args: argparse.Namespace) -> int:
    """Balanced games of growing size."""
    from tycoon.sim.report import sweep_equilibrium

    users = [int(v) for v in _floats(args.users, "--users")]
    result = sweep_equilibrium(args.hosts, users, max(1, args.seeds), **_solver(args))
    return _sweep_out(args, result)


def cmd_sweep_dynamic(args: argparse.Namespace) -> int:
    """Workloads of growing load."""
    from tycoon.sim.report import sweep_dynamic

    loads = _floats(args.loads, "--loads")
    result = sweep_dynamic(_workload(args, loads[0]), loads, max(1, args.seeds))
    return _sweep_out(args, result)


def _sweep_out(args: argparse.Namespace, result: dict[str, Any]) -> int:
    plots = []
    if args.plot:
        from tycoon.sim.plots import plot_sweep

        plots = plot_sweep(result, Path(args.plot))
    _emit(args, result, plots)
    return 0
