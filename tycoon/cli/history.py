"""``tycoon history HOST`` (a host's price history from the PRICES stream, as a table, JSON
or a PNG plot) and ``tycoon streams ensure|info`` (create or inspect the JetStream streams)."""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path
from typing import Any

from tycoon.auctioneer.bidparse import parse_duration
from tycoon.cli.common import bus_for, fail, host_id_of, print_json
from tycoon.errors import Rejected
from tycoon.money import MICRO
from tycoon.resources import RESOURCES
from tycoon.streams.config import JS_ERRORS, SPECS, describe, ensure_stream, js_unavailable
from tycoon.streams.history import price_history_via_sls
from tycoon.streams.prices import PricePoint, price_history
from tycoon.units import NS


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``tycoon history`` and ``tycoon streams``."""
    hist = sub.add_parser("history", help="a host's price history (from the PRICES stream)")
    hist.add_argument("host", help="host id, or the name of a host key in the key store")
    hist.add_argument("--resource", choices=RESOURCES, default="cpu")
    hist.add_argument("--since", default="1h", help="how far back, e.g. 10m, 1h, 1d")
    hist.add_argument("--limit", type=int, default=20,
                      help="rows printed (the newest; --json and --plot use every point)")
    hist.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                      help="write a PNG plot of price and utilization")
    hist.add_argument("--json", action="store_true", help="print one JSON object")
    hist.set_defaults(func=cmd_history)

    streams = sub.add_parser("streams", help="the JetStream streams (PRICES, SETTLEMENTS)")
    ops = streams.add_subparsers(dest="streams_command", metavar="OP", required=True)
    ensure = ops.add_parser("ensure", help="create missing streams; bring existing ones "
                                           "to the replicas and limits given here")
    ensure.add_argument("--replicas", type=int, default=None, help="e.g. 3 on a cluster")
    ensure.add_argument("--prices-max-bytes", type=int, default=None)
    ensure.add_argument("--prices-max-age", default=None, help="e.g. 1d")
    ensure.add_argument("--settlements-max-bytes", type=int, default=None)
    ensure.add_argument("--update", action="store_true",
                        help="also apply these settings to streams that exist")
    ensure.add_argument("--json", action="store_true")
    ensure.set_defaults(func=cmd_ensure)
    info = ops.add_parser("info", help="messages, bytes, limits and replicas of each stream")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)


def _when(ts_ns: int) -> str:
    stamp = datetime.datetime.fromtimestamp(ts_ns / NS).astimezone()
    return stamp.isoformat(timespec="milliseconds")


async def cmd_history(args: argparse.Namespace) -> int:
    """Print, dump or plot one host's verified price updates."""
    host = host_id_of(args, args.host)
    try:
        since_ns = time.time_ns() - parse_duration(args.since)
    except Rejected as error:
        return fail(error)
    bus = await bus_for(args)
    try:
        # through the SLS: no user holds JetStream rights (docs/security.md); with no SLS
        # up, straight from PRICES (a key with +jetstream, e.g. the operator's)
        try:
            points, refused = await price_history_via_sls(bus, host, args.resource,
                                                          since_ns=since_ns)
        except Rejected as error:
            if error.code != "unavailable":
                raise
            points, refused = await price_history(bus.nc.jetstream(timeout=5.0), host,
                                                  args.resource, since_ns=since_ns)
    finally:
        await bus.close()
    if args.plot is not None:
        plot(points, args.plot, host, args.resource)
    if args.json:
        print_json({"host": host, "resource": args.resource, "since_ns": since_ns,
                    "refused": dict(refused), "points": [p.to_dict() for p in points],
                    "plot": str(args.plot) if args.plot else None})
        return 0
    _print_table(points, host, args, dict(refused))
    return 0


def _print_table(points: list[PricePoint], host: str, args: argparse.Namespace,
                 refused: dict[str, int]) -> None:
    name = f"{args.host} ({host})" if args.host != host else host
    print(f"host {name}, {args.resource}: {len(points)} price updates in the last {args.since}"
          + (f" ({sum(refused.values())} refused: {refused})" if refused else ""))
    if not points:
        return
    prices = [p.price for p in points]
    print(f"price credits/s: min {min(prices) / MICRO:.6f}  mean "
          f"{sum(prices) / len(prices) / MICRO:.6f}  max {max(prices) / MICRO:.6f}")
    print(f"{'time':<30} {'seq':>20} {'credits/s':>12} {'per unit':>12} {'util':>5} "
          f"{'bidders':>7}")
    for p in points[-max(0, args.limit):]:
        print(f"{_when(p.ts_ns):<30} {p.seq:>20} {p.price / MICRO:>12.6f} "
              f"{p.unit_price / MICRO:>12.3e} {p.utilization:>5.2f} {p.bidders:>7}")
    if args.plot is not None:
        print(f"plot written to {args.plot}")


def plot(points: list[PricePoint], path: Path, host: str, resource: str) -> None:
    """A PNG of price (credits/s) and utilization over time (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [datetime.datetime.fromtimestamp(p.ts_ns / NS) for p in points]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    try:
        ax.step(times, [p.price / MICRO for p in points], where="post", color="tab:blue",
                label="price (credits/s)")
        ax.set_ylabel("price, credits/s", color="tab:blue")
        ax.set_xlabel("time")
        util = ax.twinx()
        util.plot(times, [p.utilization for p in points], color="tab:orange", alpha=0.6,
                  label="utilization")
        util.set_ylabel("utilization", color="tab:orange")
        util.set_ylim(0, 1.05)
        lines = ax.get_lines() + util.get_lines()
        ax.legend(lines, [str(line.get_label()) for line in lines], loc="upper left")
        ax.set_title(f"host {host}: {resource}, {len(points)} updates")
        fig.autofmt_xdate()
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


async def cmd_ensure(args: argparse.Namespace) -> int:
    """Create PRICES and SETTLEMENTS if missing (or update them with ``--update``)."""
    specs = {
        "PRICES": SPECS["PRICES"].with_(
            replicas=args.replicas, max_bytes=args.prices_max_bytes,
            max_age_s=parse_duration(args.prices_max_age) / NS if args.prices_max_age else None),
        "SETTLEMENTS": SPECS["SETTLEMENTS"].with_(
            replicas=args.replicas, max_bytes=args.settlements_max_bytes),
    }
    bus = await bus_for(args)
    try:
        js = bus.nc.jetstream(timeout=10.0)
        given = {"PRICES": [f for f, v in (("replicas", args.replicas), ("max_bytes",
                 args.prices_max_bytes), ("max_age_s", args.prices_max_age)) if v is not None],
                 "SETTLEMENTS": [f for f, v in (("replicas", args.replicas), ("max_bytes",
                 args.settlements_max_bytes)) if v is not None]}  # reconciled when they exist
        rows = [describe(await ensure_stream(js, spec, update=args.update,
                                             reconcile=given[name]))
                for name, spec in specs.items()]
    finally:
        await bus.close()
    _print_streams(rows, args.json)
    return 0


async def cmd_info(args: argparse.Namespace) -> int:
    """Show both streams (absent ones are listed as missing)."""
    bus = await bus_for(args)
    rows: list[dict[str, Any]] = []
    try:
        js = bus.nc.jetstream(timeout=5.0)
        for name in SPECS:
            try:
                rows.append(describe(await js.stream_info(name)))
            except JS_ERRORS as exc:
                rows.append({"name": name, "missing": js_unavailable(exc).message})
    finally:
        await bus.close()
    _print_streams(rows, args.json)
    return 0


def _print_streams(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json({"streams": rows})
        return
    for r in rows:
        if "missing" in r:
            print(f"{r['name']:<12} missing ({r['missing']})")
            continue
        print(f"{r['name']:<12} {r['messages']:>10} msgs {r['bytes'] / 2**20:>10.1f} MiB  "
              f"seq {r['first_seq']}..{r['last_seq']}  R{r['replicas']}  "
              f"max_age {r['max_age_s']:.0f}s max_bytes {r['max_bytes']} "
              f"dup_window {r['duplicate_window_s']:.0f}s")
        cluster = r.get("cluster")
        if cluster:  # the leader and each other replica: current, behind or offline
            peers = ", ".join(f"{p['name']} {_peer_state(p)} lag {p['lag']}"
                              for p in cluster["replicas"])
            print(f"{'':<12} leader {cluster['leader']}; replicas: {peers or 'none'}")


def _peer_state(peer: dict[str, Any]) -> str:
    return "offline" if peer["offline"] else "current" if peer["current"] else "behind"
