"""``tycoon status [--check]``: the live services, found through the NATS micro services API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

from nats.aio.client import Client

from tycoon.bus.connection import open_bus
from tycoon.cli.common import identity, print_json
from tycoon.errors import Rejected

REQUIRED = ("tycoon-bank", "tycoon-sls", "tycoon-auctioneer")


def register(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="list live services and their stats")
    status.add_argument("--check", action="store_true",
                        help="exit 0 if the bank, an SLS and an auctioneer answer, else 1")
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


def healthy(rows: list[dict[str, Any]]) -> bool:
    """True when a bank, an SLS and at least one auctioneer answered."""
    names = {r["name"] for r in rows}
    return all(name in names for name in REQUIRED)


async def cmd_status(args: argparse.Namespace) -> int:
    try:
        bus = await open_bus(args.nats, identity(args), name="tycoon-status",
                             connect_timeout=1.0, deadline=3.0)
    except Rejected as error:
        print(f"error: {error.message}")
        return 1
    try:
        rows = await discover(bus.nc, args.wait)
    finally:
        await bus.close()
    ok = healthy(rows)
    if args.json:
        print_json({"healthy": ok, "services": rows})
    elif not args.check or not ok:
        for r in rows:
            label = r["metadata"].get("host") or r["metadata"].get("principal", "")[:12]
            errors = sum(r["errors"].values()) if isinstance(r["errors"], dict) else 0
            print(f"{r['name']:<20} {r['id']:<24} {label:<18} requests={r['requests']}"
                  f" errors={errors}")
        missing = [n for n in REQUIRED if n not in {r["name"] for r in rows}]
        if missing:
            print(f"missing: {', '.join(missing)}")
    return 0 if ok or not args.check else 1
