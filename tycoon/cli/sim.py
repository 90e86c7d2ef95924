"""``tycoon sim``: the market simulator (no bus; the real allocation and Best Response cores).

    tycoon sim equilibrium --users 10 --hosts 50 [--game balanced|random] [--plot DIR]
    tycoon sim dynamic --hosts 20 --load 0.8 --duration 1000 [--plot DIR]
    tycoon sim sweep equilibrium --hosts 20 --users 2,4,8,16 [--plot DIR]
    tycoon sim sweep dynamic --hosts 20 --loads 0.3,0.6,0.9,1.2 [--plot DIR]
    tycoon sim strategic [--horizon S] [--tick S] [--seed N] [--rivals N] [--plot PATH]

Each prints a table of the market next to plain proportional share (``--json``: one JSON
object). An equilibrium run that does not converge prints no market figures and exits 2;
a strategic run where a strategy gains more than 1 % on the honest bidder exits 2.
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

    strat = modes.add_parser(
        "strategic", help="accounting games against an honest bidder (the pure market core)"
    )
    strat.add_argument("--horizon", type=float, default=600.0, help="seconds simulated")
    strat.add_argument("--tick", type=float, default=1.0, help="charging period (s)")
    strat.add_argument("--seed", type=int, default=0, help="draws the rivals' budgets")
    strat.add_argument("--rivals", type=int, default=2, help="constant rival bidders")
    strat.add_argument(
        "--plot", metavar="PATH", default=None, help="write PATH.png (or DIR/strategic.png)"
    )
    strat.add_argument("--json", action="store_true", help="print one JSON object")
    strat.set_defaults(func=cmd_strategic)


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


def cmd_strategic(args: argparse.Namespace) -> int:
    """Every strategy against an honest bidder with the same spend; exit 2 if one is ahead."""
    from tycoon.sim.strategic import LIMIT, bench, make_setup
    from tycoon.sim.strategies import Honest, all_strategies

    setup = make_setup(args.horizon, args.tick, args.seed, args.rivals)
    rows, data = bench(setup, all_strategies(), Honest)
    ahead = [r["name"] for r in rows if r["ahead"]]
    result: dict[str, Any] = {
        "mode": "strategic", "horizon_s": setup.horizon_ns / 1e9, "tick_s": setup.tick_s,
        "seed": args.seed, "budget": setup.budget, "rivals": list(setup.rivals),
        "limit": LIMIT, "strategies": rows, "ahead": ahead,
    }  # fmt: skip
    if args.plot:
        from tycoon.sim.plots import plot_strategic

        result["plot"] = str(plot_strategic(rows, data, Path(args.plot)))
    if args.json:
        print(json.dumps(result))
    else:
        _strategic_table(result)
    return 2 if ahead else 0


def _strategic_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{result['horizon_s']:g} s, tick {result['tick_s']:g} s, "
        f"{len(result['rivals'])} constant rivals",
        caption="gain: resource-seconds per credit / an honest bidder's spending the same",
    )
    table.add_column("strategy", no_wrap=True)
    for column in ("res-s", "credits", "honest res-s", "gain", "refused"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in result["strategies"]:
        gain = "inf" if r["gain"] is None else f"{r['gain']:.4g}".replace("e+0", "e")
        style = "bold red" if r["ahead"] else None
        table.add_row(
            r["name"], f"{r['resource_seconds']:.1f}", f"{r['spent'] / 1e6:.3f}",
            f"{r['honest_resource_seconds']:.1f}", gain, str(r["rejected"]), style=style,
        )  # fmt: skip
    console = Console()
    console.print(table)
    if result["ahead"]:
        console.print(f"AHEAD of honest bidding (> {result['limit']:g}): "
                      + ", ".join(result["ahead"]))  # fmt: skip
    else:
        console.print(f"no strategy gains more than {result['limit'] - 1:.0%} on honest bidding")
    if "plot" in result:
        console.print(f"wrote {result['plot']}")
