"""``tycoon top``: a live terminal view of the market, fed only by the bus.

``MarketView`` is a pure state machine (feed it verified messages, ask it for a
rich renderable); the command wires it to a subscription on ``tycoon.>`` and
redraws at least twice a second.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table

from tycoon.bank.receipt import Receipt, verify_receipt
from tycoon.bus import subjects
from tycoon.bus.connection import open_bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import subject_id
from tycoon.cli.common import identity
from tycoon.errors import Rejected
from tycoon.money import format_amount

RESOURCES = ("cpu", "memory", "disk", "net")


@dataclass
class HostRow:
    host: str
    name: str = ""
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: float = 0.0
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)


class MarketView:
    """What an operator sees: hosts, accounts, agent decisions, settled transfers."""

    def __init__(self, history: int = 8) -> None:
        self.hosts: dict[str, HostRow] = {}
        self.decisions: collections.deque[str] = collections.deque(maxlen=history)
        self.transfers: collections.deque[str] = collections.deque(maxlen=history)
        self.events = 0

    def feed(self, msg: Message, now: float | None = None) -> None:
        """Take one verified message into the view."""
        self.events += 1
        body: dict[str, Any] = msg.body
        stamp = time.strftime("%H:%M:%S", time.localtime(msg.ts_ns / 1e9))
        host = str(body.get("host", ""))
        if msg.kind == "price" and host:
            row = self.hosts.setdefault(host, HostRow(host))
            row.name = str(body.get("name") or row.name)
            resources = body.get("resources")
            if isinstance(resources, dict):
                row.resources = resources
            row.seen = time.time() if now is None else now
        elif msg.kind == "alloc" and host:
            accounts = body.get("accounts")
            if isinstance(accounts, dict):
                self.hosts.setdefault(host, HostRow(host)).accounts = accounts
        elif msg.kind == "bank.settled":
            for receipt in settled_receipts(msg):
                self.transfers.appendleft(
                    f"{stamp} {subject_id(receipt.payer)[:8]} → {subject_id(receipt.payee)[:8]}"
                    f" {format_amount(receipt.amount)} {receipt.memo[:20]}"
                )
        elif msg.kind.startswith("agent."):
            event = msg.kind.split(".", 1)[1]
            detail = body.get("summary") or body.get("message") or ""
            self.decisions.appendleft(f"{stamp} {subject_id(msg.sender)[:8]} {event} {detail}")

    def render(self) -> Group:
        """The current view as rich tables."""
        hosts = Table(title=f"hosts ({len(self.hosts)})", expand=True)
        for col in ("host", "name", "cpu price", "cpu unit", "util", "bidders", "mem price"):
            hosts.add_column(col, justify="right" if col not in ("host", "name") else "left")
        for row in sorted(self.hosts.values(), key=lambda r: r.name or r.host):
            cpu = row.resources.get("cpu", {}) if isinstance(row.resources, dict) else {}
            mem = row.resources.get("memory", {}) if isinstance(row.resources, dict) else {}
            hosts.add_row(row.host[:10], row.name[:18], _f(cpu.get("price")),
                          _f(cpu.get("unit_price")), _pct(cpu.get("utilization")),
                          str(cpu.get("bidders", "")), _f(mem.get("price")))
        accounts = Table(title="accounts", expand=True)
        for col in ("host", "account", "cpu", "memory", "cpu rate"):
            accounts.add_column(col, justify="left" if col in ("host", "account") else "right")
        for row in sorted(self.hosts.values(), key=lambda r: r.name or r.host):
            for account, info in list(row.accounts.items())[:6]:
                if not isinstance(info, dict):
                    continue
                rate = info.get("rate")  # the feed carries no balance (the owner's alone)
                accounts.add_row(row.name[:12] or row.host[:10], str(account)[:12],
                                 _pct(info.get("cpu")), _pct(info.get("memory")),
                                 _f(rate.get("cpu")) if isinstance(rate, dict) else "")
        recent = Table(title=f"agents and transfers ({self.events} events)", expand=True)
        recent.add_column("latest agent decisions")
        recent.add_column("settled transfers")
        decisions, transfers = list(self.decisions), list(self.transfers)
        for i in range(max(len(decisions), len(transfers))):
            recent.add_row(decisions[i] if i < len(decisions) else "",
                           transfers[i] if i < len(transfers) else "")
        return Group(hosts, accounts, recent)


def settled_receipts(msg: Message) -> list[Receipt]:
    """The receipts of a ``bank.settled`` event that verify under its sender's (the bank's) key."""
    receipts = []
    for raw in msg.body.get("receipts", []) if isinstance(msg.body, dict) else []:
        with contextlib.suppress(Rejected):
            receipts.append(verify_receipt(raw, msg.sender))
    return receipts


def _f(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else ""


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, int | float) else ""


def register(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser("top", help="live view of hosts, accounts, agents and transfers")
    top.add_argument("--refresh", type=float, default=0.4, help="seconds between redraws")
    top.add_argument("--duration", type=float, default=0, help="exit after this many seconds")
    top.set_defaults(func=cmd_top)


async def cmd_top(args: argparse.Namespace) -> int:
    view = MarketView()
    bus = await open_bus(args.nats, identity(args), name="tycoon-top", deadline=10.0)

    async def on_message(msg: Message) -> None:
        view.feed(msg)

    for feed in subjects.LIVE_FEEDS:
        await bus.subscribe(feed, on_message)
    started = time.monotonic()
    try:
        with Live(view.render(), refresh_per_second=max(2, int(1 / args.refresh))) as live:
            while not args.duration or time.monotonic() - started < args.duration:
                await asyncio.sleep(args.refresh)
                live.update(view.render())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        await bus.close()
    return 0
