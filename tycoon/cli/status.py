"""``tycoon status [--check]``: the live services, found through the NATS micro services API."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import sys
from typing import Any

from nats.aio.client import Client

from tycoon.cli.common import (
    bus_for,
    home_of,
    key_name,
    keystore,
    market_config,
    names_of,
    print_json,
)
from tycoon.errors import Rejected

REQUIRED = ("tycoon-bank", "tycoon-sls", "tycoon-auctioneer")
BENIGN = frozenset({"account_exists"})
"""Refusals that are a normal answer (an idempotent open), not a service's error."""


def register(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="list live services and their stats")
    status.add_argument("--check", action="store_true",
                        help="exit 0 if the bank, an SLS and an auctioneer answer, else 1")
    status.add_argument("--service", action="append", default=[],
                        choices=("bank", "sls", "auctioneer", "store"),
                        help="with --check: require only these (repeatable): one service's "
                             "health check, e.g. for its systemd unit or monitoring")
    status.add_argument("--json", action="store_true")
    status.add_argument("--wait", type=float, default=0.5, help="seconds to gather answers")
    status.set_defaults(func=cmd_status)


async def gather(nc: Client, subject: str, wait: float) -> list[dict[str, Any]]:
    """Every JSON answer to one request on ``subject`` within ``wait`` seconds."""
    inbox = nc.new_inbox()
    answers: list[dict[str, Any]] = []

    async def on_reply(msg: Any) -> None:
        with contextlib.suppress(ValueError):
            answers.append(json.loads(msg.data))

    sub = await nc.subscribe(inbox, cb=on_reply)
    await nc.publish(subject, b"", reply=inbox)
    await nc.flush()
    await asyncio.sleep(wait)
    await sub.unsubscribe()
    return answers


async def discover(nc: Client, wait: float = 0.5) -> list[dict[str, Any]]:
    """Stats of every live micro service (one row per instance)."""
    stats = await gather(nc, "$SRV.STATS", wait)
    pings = {p.get("id"): p for p in await gather(nc, "$SRV.PING", min(wait, 0.3))}
    rows = []
    for s in stats:
        endpoints = s.get("endpoints") or []
        data = next((e.get("data") for e in endpoints if e.get("data")), {}) or {}
        meta = (pings.get(s.get("id")) or {}).get("metadata") or {}
        rows.append({
            "name": s.get("name"),
            "id": s.get("id"),
            "version": s.get("version"),
            "started": s.get("started"),
            "requests": sum(int(e.get("num_requests", 0)) for e in endpoints),
            "errors": data.get("errors", {}),
            "rejections": data.get("rejections", {}),
            "metadata": meta,
        })
    return sorted(rows, key=lambda r: (str(r["name"]), str(r["id"])))


def healthy(rows: list[dict[str, Any]], required: tuple[str, ...] = REQUIRED) -> bool:
    """True when each ``required`` service (default: a bank, an SLS and at least one
    auctioneer) answered."""
    names = {r["name"] for r in rows}
    return all(name in names for name in required)


def errors_of(row: dict[str, Any]) -> int:
    """A service's errors, without the refusals that are normal answers."""
    errors = row.get("errors")
    if not isinstance(errors, dict):
        return 0
    return sum(int(n) for code, n in errors.items() if code not in BENIGN)


def sources(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """Where this CLI found its URL, keys and bank key (``--nats``, env, tycoon.toml…)."""
    home, home_source = home_of(args)
    bank = market_config(home).get("bank", {})
    if os.environ.get("TYCOON_BANK"):
        bank_key = {"value": os.environ["TYCOON_BANK"], "source": "TYCOON_BANK"}
    elif bank.get("public_key"):
        bank_key = {"value": str(bank["public_key"]), "source": str(home / "tycoon.toml")}
    else:
        bank_key = {"value": "", "source": "unknown"}
    who = key_name(args)
    store = keystore(args)
    return {
        "nats": {"value": args.nats, "source": args.nats_source},
        "home": {"value": str(home), "source": home_source},
        "key": {"value": who, "source": "found" if store.exists(who) else "missing"},
        "bank": bank_key,
    }


async def cmd_status(args: argparse.Namespace) -> int:
    used = sources(args)
    try:
        bus = await bus_for(args, connect_timeout=1.0, deadline=3.0)
    except Rejected as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    try:
        rows = await discover(bus.nc, args.wait)
    finally:
        await bus.close()
    required = tuple(f"tycoon-{n}" for n in args.service) or REQUIRED
    ok = healthy(rows, required)
    missing = [n for n in required if n not in {r["name"] for r in rows}]
    if args.json:
        print_json({"healthy": ok, "missing": missing, "using": used, "services": [
            {**r, "error_count": errors_of(r)} for r in rows]})
        return 0 if ok or not args.check else 1
    if args.check:
        if ok:
            counts = collections.Counter(str(r["name"]) for r in rows)
            print(f"healthy: {counts['tycoon-bank']} bank, {counts['tycoon-sls']} SLS, "
                  f"{counts['tycoon-auctioneer']} auctioneers answer at {args.nats}")
            return 0
        print(f"missing: {', '.join(missing)} (no answer at {args.nats})")
        return 1
    print(f"nats  {used['nats']['value']}  (from {used['nats']['source']})")
    print(f"home  {used['home']['value']}  (from {used['home']['source']})")
    print(f"key   {used['key']['value']}")
    if used["bank"]["value"]:
        print(f"bank  {used['bank']['value']}  (from {used['bank']['source']})")
    print()
    print(f"{'service':<18} {'who':<14} {'requests':>9} {'errors':>7}  id")
    names = names_of(keystore(args))
    for r in rows:
        meta = r["metadata"]
        key = str(meta.get("host") or meta.get("principal") or "")
        label = names.get(key) or key[:12]
        print(f"{r['name']!s:<18} {label!s:<14} {r['requests']:>9} {errors_of(r):>7}"
              f"  {r['id']}")
    if missing:
        print(f"missing: {', '.join(missing)}")
    if not rows:
        print("no service answered: discovery ($SRV) needs a key allowed to ask, such as "
              "--as operator")
    return 0
