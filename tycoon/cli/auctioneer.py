"""``tycoon auctioneer serve|key`` (run one host's market) and ``tycoon host ...`` (use one).

``tycoon host`` follows the original client: ``tycoon host bid HOST 1y cpu:1,0.1,1.0``.
HOST is a host id (16 characters) or the name of a host key in the key store.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path
from typing import Any

from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.launch import launch as launch_auctioneer
from tycoon.auctioneer.market import FLOOR_PRICE, IDLE_S
from tycoon.bus import ratelimit
from tycoon.bus.keys import subject_id
from tycoon.bus.ratelimit import rate_limit_arg
from tycoon.cli.common import (
    bus_for,
    host_id_of,
    key_name,
    keystore,
    local_time,
    print_json,
    service_identity,
)
from tycoon.cli.jobs import add_serve_arguments as add_job_arguments
from tycoon.cli.jobs import job_config
from tycoon.cli.jobs import register as register_jobs
from tycoon.cli.serving import serve_until_signal
from tycoon.cli.sls import format_capacity
from tycoon.errors import Rejected
from tycoon.messages.market import HostRefundReply, HostStatusReply
from tycoon.messages.price import Offer, offers_from_body
from tycoon.metrics.server import add_arguments as add_metrics_arguments
from tycoon.money import MICRO, format_amount, format_credits, format_rate, parse_amount
from tycoon.resources import RESOURCES
from tycoon.supervisor import add_ready_argument
from tycoon.vmm.driver import Driver

DRIVERS = ("simulated", "cgroups", "xen")


SERVE_DEPOSIT = 1000
"""``serve``'s default deposit (micro-credits): the agent planner's least balance."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``tycoon auctioneer …`` and ``tycoon host …``."""
    auc = sub.add_parser("auctioneer", help="run one host's market")
    cmds = auc.add_subparsers(dest="auctioneer_command", metavar="OP", required=True)
    serve = cmds.add_parser("serve", help="serve this host's market on the bus")
    serve.add_argument("--driver", choices=DRIVERS, default="simulated")
    serve.add_argument("--host-key", default=None, help="name of the host's key (default --as)")
    serve.add_argument("--bank", default=None, help="the bank's public key or key name")
    serve.add_argument("--store", default=None, help="SQLite file (default <home>/auctioneer-"
                       "<host>.db)")
    serve.add_argument("--name", default="", help="display name of the host")
    serve.add_argument("--tick", type=float, default=1.0, help="charging period, seconds")
    serve.add_argument("--heartbeat", type=float, default=5.0, help="price heartbeat, seconds")
    serve.add_argument("--alloc-every", type=_positive_seconds, default=0.25,
                       help="coalesce the allocation stream: at most one update per this "
                            "many seconds")
    serve.add_argument("--durability", choices=("full", "normal"), default="full")
    serve.add_argument("--rate-limit", type=rate_limit_arg(ratelimit.AUCTIONEER),
                       default=ratelimit.AUCTIONEER,
                       help="requests/s per signer key, RATE[/BURST] or 'off' (default 20/20)")
    serve.add_argument("--floor-price", type=float, default=FLOOR_PRICE / 1e6,
                       help="least price, credits/s, of a whole resource or one port/address")
    serve.add_argument("--deposit", type=parse_amount, default=SERVE_DEPOSIT,
                       help="least first funding that opens a host account (credits; "
                            "default 0.001, an agent's smallest funding)")
    serve.add_argument("--idle", type=float, default=IDLE_S,
                       help="seconds after which an empty, idle account is removed")
    sim = serve.add_argument_group("simulated driver")
    sim.add_argument("--preset", default="medium", help="tiny|small|medium|large")
    for field in ("cpu", "memory", "disk", "net", "cores"):
        sim.add_argument(f"--{field}", type=int, default=None, help=f"override the {field}")
    sim.add_argument("--seed", type=int, default=None)
    cg = serve.add_argument_group("cgroups driver")
    cg.add_argument("--cgroup-root", default=None, help="the driver's cgroup root")
    cg.add_argument("--cpus", default=None,
                    help="pin the sandboxes to these CPUs with a cpuset (0, 0,2-3; v1)")
    cg.add_argument("--cgroup-parent", default=None,
                    help="cgroup the root lives under ('/' or 'self': this process's own)")
    cg.add_argument("--cpu-cap", action="store_true",
                    help="also cap each share's CPU time (quota), not only weight it")
    cg.add_argument("--driver-state-dir", default=None,
                    help="where the cgroups driver keeps its state across restarts")
    xen = serve.add_argument_group("xen driver")
    xen.add_argument("--xen-url", default=os.environ.get("TYCOON_XEN_URL", ""))
    xen.add_argument("--xen-user", default="root")
    xen.add_argument("--xen-password", default=os.environ.get("TYCOON_XEN_PASSWORD", ""))
    add_job_arguments(serve)
    add_metrics_arguments(serve)
    add_ready_argument(serve)
    serve.set_defaults(func=cmd_serve)
    key = cmds.add_parser("key", help="print the host's public key and host id")
    key.add_argument("--host-key", default=None, help="name of the host's key (default --as)")
    key.set_defaults(func=cmd_key)

    host = sub.add_parser("host", help="use one host's market (account, fund, bid, refund)")
    ops = host.add_subparsers(dest="host_command", metavar="OP", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("host", help="host id, or the name of a host key in the key store")
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument("--timeout", type=float, default=5.0)
    ops.add_parser("status", parents=[common], help="the host's market and your account") \
        .set_defaults(func=cmd_status)
    ops.add_parser("account", parents=[common], help="show your host account") \
        .set_defaults(func=cmd_account)
    fund = ops.add_parser("fund", parents=[common], help="pay the host and fund your account")
    fund.add_argument("amount", nargs="?", help="credits to pay through the bank, e.g. 12.5")
    fund.add_argument("--receipt", type=Path, default=None, help="fund with this raw receipt")
    fund.add_argument("--bank", default=None, help="the bank's public key or key name")
    fund.set_defaults(func=cmd_fund)
    bid = ops.add_parser("bid", parents=[common], help="bid: DURATION PREF...")
    bid.add_argument("duration", help="how long the bid lasts: 30s, 2h, 1d, 1w, or 1o1y (one "
                                      "month and one year); 0 keeps the current expiry")
    bid.add_argument("prefs", nargs="+", help="resource:weight,min,max ...")
    bid.set_defaults(func=cmd_bid)
    ops.add_parser("refund", parents=[common], help="return your unspent balance") \
        .set_defaults(func=cmd_refund)
    settle = ops.add_parser("settle", help="redeem your receipts that no host redeemed yet")
    settle.add_argument("--all", action="store_true",
                        help="present every payment of yours, not only those funding a host")
    settle.add_argument("--refund", action="store_true",
                        help="then refund your balance at each host involved")
    settle.add_argument("--bank", default=None, help="the bank's public key or key name")
    settle.add_argument("--json", action="store_true", help="print one JSON object")
    settle.add_argument("--timeout", type=float, default=5.0)
    settle.set_defaults(func=cmd_settle)
    register_jobs(ops, common)  # exec, jobs, signal


def _driver(args: argparse.Namespace) -> Driver:
    if args.driver == "simulated":
        from tycoon.vmm.simulated import SimulatedDriver

        sizes = {f: getattr(args, f) for f in ("cpu", "memory", "disk", "net", "cores")}
        return SimulatedDriver(preset=args.preset, seed=args.seed, **sizes)
    if args.driver == "cgroups":
        from tycoon.vmm.cgroups import CgroupsDriver

        options: dict[str, Any] = {f: getattr(args, f) for f in ("cpu", "memory", "disk", "cores")}
        if args.net is not None:
            options["net"] = args.net
        if args.cgroup_root:
            options["root"] = args.cgroup_root
        if args.cpus:
            options["cpus"] = args.cpus
        if args.cgroup_parent:
            options["parent"] = args.cgroup_parent
        if args.cpu_cap:
            options["cpu_cap"] = True
        if args.driver_state_dir:
            options["state_dir"] = args.driver_state_dir
        return CgroupsDriver(**options)
    from tycoon.vmm.xen.driver import XenDriver

    if not args.xen_url:
        raise Rejected("malformed", "--xen-url (or TYCOON_XEN_URL) is required for --driver xen")
    return XenDriver(url=args.xen_url, username=args.xen_user, password=args.xen_password)


def _bank_key(args: argparse.Namespace) -> str:
    from tycoon.cli.bank import resolve_bank_key

    return resolve_bank_key(args)


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError("seconds must be in (0, 3600)")
    return value


async def cmd_serve(args: argparse.Namespace) -> int:
    """Run the auctioneer until SIGTERM/SIGINT."""
    ident = service_identity(args, key_name(args, args.host_key), "host")
    bank_key = _bank_key(args)
    host = subject_id(ident.public_key)
    store = Path(args.store) if args.store else keystore(args).home / f"auctioneer-{host}.db"
    driver = _driver(args)
    async with launch_auctioneer(
        args.nats, ident, bank_key=bank_key, driver=driver, store_path=store,
        name=args.name, tick_s=args.tick, heartbeat_s=args.heartbeat,
        alloc_every_s=args.alloc_every, durability=args.durability,
        market_options={"floor_price": args.floor_price * 1e6, "deposit": args.deposit,
                        "idle_s": args.idle},
        jobs=job_config(args, driver.name, store), rate_limit=args.rate_limit,
    ) as running:  # fmt: skip
        await serve_until_signal(
            args, f"auctioneer of host {host} ({driver.name}) serving on {args.nats}",
            running.service)
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    ident = service_identity(args, key_name(args, args.host_key), "host")
    print_json({"public_key": ident.public_key, "host": subject_id(ident.public_key)})
    return 0


async def _with_client(args: argparse.Namespace, op: Any, *, status: bool = False) -> int:
    bus = await bus_for(args)
    try:
        client = AuctioneerClient(bus, host_id_of(args, str(args.host)), timeout=args.timeout)
        result = await op(client, bus)
    finally:
        await bus.close()
    if args.json:
        print_json(result)
        return 0
    if status:
        _print_host(HostStatusReply.from_body(result))
    _print(result)
    return 0


MONEY = ("balance", "amount", "funded", "earnings", "refunded", "balances", "spent", "deposit")
RATES = ("rate", "prices", "floor_price")
"""Replies' micro-credits/s: shown as credits/s."""


def _print_host(status: HostStatusReply) -> None:
    """The head of a ``host.status`` reply: the host and its offer of each resource."""
    print(f"host {status.host} {status.name} ({status.driver})")
    print(f"  {'resource':<8} {'capacity':>16} {'credits/s':>12} {'util':>6} {'bidders':>8}")
    offers = offers_from_body(status.resources)
    for r in RESOURCES:
        o = offers.get(r) or Offer(0, 0.0, 0.0, 0)
        print(f"  {r:<8} {format_capacity(r, o.capacity):>16} "
              f"{o.price / MICRO:>12.6f} {o.utilization:>6.0%} {o.bidders:>8}")


def _print(result: dict[str, Any], indent: str = "", within: str = "") -> None:
    """A readable rendering of a reply (money in credits, prices in credits/s, shares in
    per cent, times local); ``within`` is the key of the enclosing section. Any reply,
    checked against its class by the client, key by key (a status reply's offers are
    shown by :func:`_print_host` first)."""
    for key, value in result.items():
        if key == "resources" and isinstance(value, dict):
            continue
        if key.endswith("_text") and key[:-5] in result:
            continue  # the same amount, already shown in credits
        if isinstance(value, dict):
            print(f"{indent}{key}:" + (" (credits/s)" if key in RATES else ""))
            _print(value, indent + "  ", key)
            continue
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            print(f"{indent}{key}: {len(value)}")
            for item in value:
                _print_item(item, indent + "  - ")
            continue
        if key in MONEY and isinstance(value, int):
            value = f"{format_credits(value)} credits"
        elif isinstance(value, int | float) and (key in RATES or within in RATES):
            value = format_rate(value) + ("" if within in RATES else " credits/s")
        elif isinstance(value, float) and within == "allocation":
            value = f"{value:.1%}"
        elif isinstance(value, float):
            value = f"{value:.4g}"
        elif key.endswith("_ns") and isinstance(value, int):
            key, value = key[:-3], local_time(value) if value else "never"
        elif isinstance(value, bytes):
            value = f"<{len(value)} bytes>"
        print(f"{indent}{key}: {value}")


def _print_item(item: dict[str, Any], prefix: str) -> None:
    """One entry of a list in a reply (a refund with its receipt) on one line."""
    raw = item.get("receipt")
    if isinstance(raw, bytes) and isinstance(item.get("amount"), int):
        digest = hashlib.sha256(raw).hexdigest()[:8]
        print(f"{prefix}receipt {digest}… for {format_credits(item['amount'])} credits"
              + (f" ({item['refund_id']})" if item.get("refund_id") else ""))
        return
    print(prefix + ", ".join(f"{k}={format_credits(v) if k in MONEY and isinstance(v, int) else v}"
                             for k, v in item.items() if not isinstance(v, bytes)))


async def cmd_status(args: argparse.Namespace) -> int:
    return await _with_client(args, lambda client, _bus: client.status(), status=True)


async def cmd_account(args: argparse.Namespace) -> int:
    return await _with_client(args, lambda client, _bus: client.account())


async def cmd_fund(args: argparse.Namespace) -> int:
    async def op(client: AuctioneerClient, bus: Any) -> dict[str, Any]:
        if args.receipt is not None:
            return await client.fund(args.receipt.read_bytes())
        if not args.amount:
            raise Rejected("bad_amount", "give an AMOUNT to pay or --receipt FILE")
        from tycoon.auctioneer.client import pay_and_fund, wallet_dir
        from tycoon.bank.client import BankClient

        bank = BankClient(bus, _bank_key(args))
        return await pay_and_fund(client, bank, parse_amount(args.amount),
                                  wallet=wallet_dir(keystore(args).home, bank.account))

    return await _with_client(args, op)


async def cmd_settle(args: argparse.Namespace) -> int:
    """Present every unredeemed receipt of ours (exit 3 while some host cannot take one)."""
    from tycoon.auctioneer.client import settle_receipts, wallet_dir
    from tycoon.bank.client import BankClient

    bus = await bus_for(args)
    try:
        bank = BankClient(bus, _bank_key(args))
        results = await settle_receipts(bus, bank, every_payment=args.all,
                                        wallet=wallet_dir(keystore(args).home, bank.account),
                                        timeout=args.timeout)
        refunds: dict[str, Any] = {}
        if args.refund:
            for host in sorted({r.host for r in results if r.result in ("redeemed", "done")}):
                try:
                    reply = await AuctioneerClient(bus, host, timeout=args.timeout).refund()
                    refunds[host] = sum(r["amount"]
                                        for r in HostRefundReply.from_body(reply).refunds)
                except Rejected as error:
                    refunds[host] = error.code
    finally:
        await bus.close()
    waiting = [r for r in results if r.result not in ("redeemed", "done")]
    if args.json:
        print_json({"receipts": [vars(r) for r in results], "refunds": refunds,
                    "waiting": len(waiting)})
    else:
        for r in results:
            if r.result != "done":
                print(f"{r.transfer_id} host {r.host} {format_amount(r.amount)}: {r.result}")
        print(f"{len(results) - len(waiting)} receipts redeemed or done, {len(waiting)} waiting")
        for host, value in refunds.items():
            shown = format_amount(value) if isinstance(value, int) else value
            print(f"refund from host {host}: {shown}")
    return 3 if waiting else 0


async def cmd_bid(args: argparse.Namespace) -> int:
    text = " ".join(args.prefs)
    return await _with_client(args, lambda client, _bus: client.bid(text, args.duration))


async def cmd_refund(args: argparse.Namespace) -> int:
    return await _with_client(args, lambda client, _bus: client.refund())
