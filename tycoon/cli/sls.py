"""``tycoon sls serve|host`` and ``tycoon hosts``: run the SLS, and ask it what hosts cost."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from typing import Any

from tycoon.bus import ratelimit
from tycoon.bus.ratelimit import rate_limit_arg
from tycoon.cli.common import (
    bus_for,
    fail,
    host_id_of,
    key_name,
    print_json,
    service_identity,
)
from tycoon.cli.serving import serve_until_signal
from tycoon.errors import Rejected
from tycoon.messages.price import offers_from_body
from tycoon.messages.sls import SlsHostReply, SlsQueryReply
from tycoon.metrics.server import add_arguments as add_metrics_arguments
from tycoon.money import format_rate
from tycoon.resources import RESOURCES
from tycoon.sls.client import HostRow, SLSClient
from tycoon.sls.launch import launch as launch_sls
from tycoon.sls.query import DEFAULT_LIMIT, MAX_LIMIT_WITH_STATISTICS, SORTS, TIES
from tycoon.sls.service import SLSConfig
from tycoon.sls.stats import Moments, PriceStatistics
from tycoon.supervisor import add_ready_argument

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?)?[bB]?$")
_POWERS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_capacity(text: str) -> int:
    """``"2G"`` -> 2_000_000_000, ``"512Mi"`` -> 536_870_912, ``"800"`` -> 800 (base units)."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a capacity: {text!r} (e.g. 800, 2G, 512Mi)")
    number, unit = float(match[1]), (match[2] or "")
    scale = _POWERS[unit[:1].lower()]
    if unit.endswith("i"):
        scale = 1024 ** "kmgt".index(unit[0].lower()) * 1024
    return int(number * scale)


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"not a price: {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    sls = sub.add_parser("sls", help="the service location service")
    ops = sls.add_subparsers(dest="op", required=True)
    serve = ops.add_parser("serve", help="run one SLS replica (queue group 'sls')")
    serve.add_argument("--missed", type=int, default=3, help="heartbeats missed before expiry")
    serve.add_argument("--snapshot-s", type=float, default=10.0, help="snapshot period (s)")
    serve.add_argument("--workers", type=int, default=2, help="signature-checking threads")
    serve.add_argument("--queue", default="sls", help="queue group of the query endpoints")
    serve.add_argument("--rate-limit", type=rate_limit_arg(ratelimit.SLS), default=ratelimit.SLS,
                       help="requests/s per signer key, RATE[/BURST] or 'off' (default 50/100)")
    add_metrics_arguments(serve)
    add_ready_argument(serve)
    serve.set_defaults(func=cmd_serve)
    host = ops.add_parser("host", help="show one live host in full")
    host.add_argument("host", help="host id, or the name of a host key in the key store")
    host.add_argument("--json", action="store_true")
    host.set_defaults(func=cmd_host)

    hosts = sub.add_parser("hosts", help="list live hosts from the SLS")
    hosts.add_argument("--resource", choices=RESOURCES, default="cpu")
    hosts.add_argument(
        "--max-price", type=_price, default=None,
        help="maximum unit price (micro-credits/s per base unit: MHz, byte, bit/s)",
    )
    hosts.add_argument(
        "--min-capacity", type=parse_capacity, default=0,
        help="minimum capacity in base units (suffixes k M G T, Ki Mi Gi Ti)",
    )
    hosts.add_argument("--sort", choices=SORTS, default="capacity_per_price")
    hosts.add_argument("--ties", choices=TIES, default="host",
                       help="order of equal rows: by host id, or at random")
    hosts.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"at most {MAX_LIMIT_WITH_STATISTICS}"
    )
    hosts.add_argument("--offset", type=int, default=0)
    hosts.add_argument("--json", action="store_true", help="print the reply as JSON")
    hosts.set_defaults(func=cmd_hosts)


async def cmd_serve(args: argparse.Namespace) -> int:
    config = SLSConfig(
        missed_heartbeats=args.missed,
        snapshot_s=args.snapshot_s,
        workers=args.workers,
        queue=args.queue,
    )
    async with launch_sls(args.nats, service_identity(args, key_name(args), "sls"), config,
                          rate_limit=args.rate_limit) as sls:
        await serve_until_signal(
            args, f"sls serving on {args.nats} (queue {config.queue!r}); Ctrl-C stops",
            sls.service)
    return 0


async def cmd_host(args: argparse.Namespace) -> int:
    bus = await bus_for(args)
    try:
        body = await SLSClient(bus).host(host_id_of(args, args.host))
    except Rejected as error:
        return fail(error)
    finally:
        await bus.close()
    if args.json:
        print_json(body)
        return 0
    host = SlsHostReply.from_body(body)
    for key in ("host", "name", "driver", "public_key", "seq", "heartbeat_s", "availability"):
        print(f"{key}: {getattr(host, key)}")
    for name, offer in offers_from_body(host.resources).items():
        hour = _hour(host.resources[name].get("statistics"))
        print(
            f"{name}: capacity {format_capacity(name, offer.capacity)}, "
            f"price {format_rate(offer.price)} credits/s, "
            f"util {offer.utilization:.0%}, bidders {offer.bidders}, "
            f"hour mean {format_rate(hour.mean)} sd {format_rate(hour.std)} credits/s"
        )
    return 0


NO_SAMPLES = Moments(0, 0.0, 0.0, 0.0, 0.0)


def _hour(statistics: Any) -> Moments:
    """The hour window of a row's price statistics (none: zeros)."""
    if statistics is None:
        return NO_SAMPLES
    return PriceStatistics.from_body(statistics).windows.get("hour", NO_SAMPLES)


async def cmd_hosts(args: argparse.Namespace) -> int:
    bus = await bus_for(args)
    try:
        body = await SLSClient(bus).page(
            args.resource,
            min_capacity=args.min_capacity,
            max_unit_price=args.max_price,
            sort=args.sort,
            ties=args.ties,
            offset=args.offset,
            limit=args.limit,
        )
    except Rejected as error:
        return fail(error)
    finally:
        await bus.close()
    if args.json:
        print_json(body)
    else:
        print_table(args.resource, body)
    return 0


UNIT = {"cpu": "GHz", "memory": "GiB", "disk": "GiB", "net": "Mbit/s"}
UNIT_SIZE = {"cpu": 1000, "memory": 2**30, "disk": 2**30, "net": 10**6}
"""The unit people price in, in base units (MHz, bytes, bit/s)."""


def format_capacity(resource: str, value: int) -> str:
    """Capacity in human units: MHz, GiB, Mbit/s."""
    if resource == "cpu":
        return f"{value:,} MHz"
    if resource == "net":
        return f"{value / 1e6:,.1f} Mbit/s"
    return f"{value / 2**30:,.1f} GiB"


def print_table(resource: str, body: dict[str, Any]) -> None:
    """A rich table of query rows."""
    from rich.console import Console
    from rich.table import Table

    page = SlsQueryReply.from_body(body)
    rows = [HostRow.from_body(row) for row in page.rows]
    table = Table(title=f"{resource}: {len(rows)} of {page.total} live hosts, "
                        f"cheapest capacity first (prices in credits/s)")
    for col, justify in (
        ("name", "left"), ("host", "left"), ("capacity", "right"), ("price", "right"),
        (f"per {UNIT[resource]}·h", "right"), ("util", "right"), ("bidders", "right"),
        ("avail", "right"), ("hour mean", "right"), ("hour sd", "right"),
    ):  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        hour = NO_SAMPLES if row.statistics is None \
            else row.statistics.windows.get("hour", NO_SAMPLES)
        table.add_row(
            row.name,
            row.host,
            format_capacity(resource, row.capacity),
            format_rate(row.price),
            format_rate(row.unit_price * UNIT_SIZE[resource] * 3600, 2),
            f"{row.utilization:.0%}",
            str(row.bidders),
            f"{row.availability:.1%}",
            format_rate(hour.mean),
            format_rate(hour.std),
        )
    wide = sys.stdout.isatty() or "COLUMNS" in os.environ
    Console(width=None if wide else 160).print(table)
