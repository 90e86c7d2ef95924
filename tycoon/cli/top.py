"""``tycoon top``: a live terminal view of the market, fed only by the bus.

``MarketView`` is a pure state machine (feed it verified messages, ask it for a
rich renderable); the command seeds it from the SLS (every live host at once, not after
the next heartbeat), wires it to the live feeds and redraws at least twice a second.
``q`` or Ctrl-C quits; ``--json`` prints one snapshot and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tycoon.bank.receipt import Receipt, verify_receipt
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import subject_id
from tycoon.cli.common import bus_for, keystore, names_of, print_json
from tycoon.errors import Rejected
from tycoon.messages import MESSAGES
from tycoon.messages.agent import AgentWarning
from tycoon.messages.bank import BankSettled
from tycoon.messages.market import Alloc
from tycoon.messages.price import PriceUpdate
from tycoon.money import format_credits, format_rate
from tycoon.sls.client import HostRow, SLSClient
from tycoon.waiting import wait_set

RESOURCES = ("cpu", "memory", "disk", "net")


@dataclass
class TopHost:
    host: str
    name: str = ""
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: float = 0.0
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)


class MarketView:
    """What an operator sees: hosts, accounts, agent decisions, settled transfers."""

    def __init__(self, history: int = 8, names: dict[str, str] | None = None) -> None:
        self.hosts: dict[str, TopHost] = {}
        self.decisions: collections.deque[str] = collections.deque(maxlen=history)
        self.transfers: collections.deque[str] = collections.deque(maxlen=history)
        self.events = 0
        self.names = dict(names or {})
        """Public keys and ids -> key store names (``agent-1``), shown before ids."""

    def who(self, key_or_id: str) -> str:
        """A key store name if known, else a short id."""
        if key_or_id in self.names:
            return self.names[key_or_id]
        with contextlib.suppress(ValueError):
            return self.names.get(subject_id(key_or_id), subject_id(key_or_id)[:8])
        return key_or_id[:10]

    def note_transfer(self, receipt: Receipt) -> None:
        """One settled transfer, newest first, at the time the bank settled it."""
        stamp = time.strftime("%H:%M:%S", time.localtime(receipt.settled_ns / 1e9))
        self.transfers.appendleft(f"{stamp} {self.who(receipt.payer)} → "
                                  f"{self.who(receipt.payee)} {format_credits(receipt.amount)}"
                                  f" {receipt.memo[:20]}")

    def seed(self, rows: list[HostRow], resource: str = "cpu") -> None:
        """Take the SLS's rows (one resource, read by the client) into the host table."""
        for r in rows:
            row = self.hosts.setdefault(r.host, TopHost(r.host))
            row.name = row.name or r.name
            if resource not in row.resources:
                row.resources[resource] = {"price": r.price, "unit_price": r.unit_price,
                                           "utilization": r.utilization, "bidders": r.bidders}

    def feed(self, msg: Message, now: float | None = None) -> None:
        """Take one verified message into the view (read with its kind's class: a body the
        class refuses is counted, not shown)."""
        self.events += 1
        stamp = time.strftime("%H:%M:%S", time.localtime(msg.ts_ns / 1e9))
        if msg.kind == "price":
            try:
                update = PriceUpdate.from_body(msg.body)
            except Rejected:
                return
            row = self.hosts.setdefault(update.host, TopHost(update.host))
            row.name = update.name or row.name
            row.resources = {r: o.to_body() for r, o in update.resources.items()}
            row.seen = time.time() if now is None else now
        elif msg.kind == "alloc":
            try:
                alloc = Alloc.from_body(msg.body)
            except Rejected:
                return
            if alloc.host:
                self.hosts.setdefault(alloc.host, TopHost(alloc.host)).accounts = alloc.accounts
        elif msg.kind == "bank.settled":
            for receipt in settled_receipts(msg):
                self.note_transfer(receipt)
        elif msg.kind.startswith("agent."):
            try:
                event = MESSAGES[msg.kind].from_body(msg.body)
            except (KeyError, Rejected):
                return
            detail = event.message if isinstance(event, AgentWarning) \
                else getattr(event, "summary", "")
            self.decisions.appendleft(f"{stamp} {self.who(msg.sender)} "
                                      f"{msg.kind.split('.', 1)[1]} {detail}")

    def render(self) -> Group:
        """The current view as rich tables."""
        hosts = Table(title=f"hosts ({len(self.hosts)})", expand=True)
        for col in ("name", "host", "cpu credits/s", "util", "bidders", "memory credits/s"):
            hosts.add_column(col, justify="right" if col not in ("host", "name") else "left")
        for row in sorted(self.hosts.values(), key=lambda r: r.name or r.host):
            cpu = row.resources.get("cpu", {}) if isinstance(row.resources, dict) else {}
            mem = row.resources.get("memory", {}) if isinstance(row.resources, dict) else {}
            hosts.add_row(row.name[:18], row.host[:10], _f(cpu.get("price")),
                          _pct(cpu.get("utilization")), str(cpu.get("bidders", "")),
                          _f(mem.get("price")))
        accounts = Table(title="accounts", expand=True)
        for col in ("host", "account", "cpu", "memory", "cpu credits/s"):
            accounts.add_column(col, justify="left" if col in ("host", "account") else "right")
        for row in sorted(self.hosts.values(), key=lambda r: r.name or r.host):
            for account, info in list(row.accounts.items())[:6]:
                if not isinstance(info, dict):
                    continue
                rate = info.get("rate")  # the feed carries no balance (the owner's alone)
                accounts.add_row(row.name[:12] or row.host[:10], self.who(str(account)),
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
    try:
        raws = BankSettled.from_body(msg.body).receipts
    except Rejected:
        raws = []
    for raw in raws:
        with contextlib.suppress(Rejected):
            receipts.append(verify_receipt(raw, msg.sender))
    return receipts


def _f(value: Any) -> str:
    """A price in micro-credits/s as credits/s."""
    return format_rate(value) if isinstance(value, int | float) else ""


def snapshot(view: MarketView) -> dict[str, Any]:
    """The view as one JSON document (``tycoon top --json``)."""
    return {
        "events": view.events,
        "hosts": [{"host": r.host, "name": r.name, "resources": r.resources,
                   "accounts": {view.who(a): v for a, v in r.accounts.items()}}
                  for r in sorted(view.hosts.values(), key=lambda r: r.name or r.host)],
        "decisions": list(view.decisions),
        "transfers": list(view.transfers),
    }


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, int | float) else ""


def register(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser("top", help="live view of hosts, accounts, agents and transfers")
    top.add_argument("--refresh", type=float, default=0.4, help="seconds between redraws")
    top.add_argument("--duration", type=float, default=0,
                     help="exit after this many seconds (0: until q or Ctrl-C)")
    top.add_argument("--json", action="store_true",
                     help="listen --listen seconds, print one JSON snapshot and exit")
    top.add_argument("--listen", type=float, default=2.0, help="seconds --json listens")
    top.set_defaults(func=cmd_top)


async def cmd_top(args: argparse.Namespace) -> int:
    view = MarketView(names=names_of(keystore(args)))
    bus = await bus_for(args, deadline=10.0)

    async def on_message(msg: Message) -> None:
        view.feed(msg)

    try:
        for feed in subjects.LIVE_FEEDS:
            await bus.subscribe(feed, on_message)
        sls = SLSClient(bus, timeout=2.0)
        for resource in ("cpu", "memory"):  # every live host now, not at its next heartbeat
            with contextlib.suppress(Rejected):
                view.seed(await sls.rows(resource, limit=1000, statistics=False), resource)
        await recent_transfers(view, bus, bank_key_of(args))
        if args.json:
            await asyncio.sleep(args.listen)
            print_json(snapshot(view))
            return 0
        await live(view, args.refresh, args.duration)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        await bus.close()
    return 0


def bank_key_of(args: argparse.Namespace) -> str | None:
    """The bank's public key as the CLI knows it (None if it does not)."""
    from tycoon.cli.bank import resolve_bank_key

    with contextlib.suppress(Rejected, OSError, ValueError):
        return resolve_bank_key(args)
    return None


async def recent_transfers(view: MarketView, bus: Bus, bank_key: str | None,
                           count: int = 8) -> None:
    """The last transfers from the bank's SETTLEMENTS log, for a key allowed to read it
    (the operator's); anyone else starts with the live ones only."""
    if bank_key is None:
        return
    from tycoon.streams.config import SETTLEMENTS
    from tycoon.streams.reader import read_stream

    receipts = []
    with contextlib.suppress(Exception):  # no JetStream, no right to read it: live only
        async for stored in read_stream(bus.nc.jetstream(timeout=1.0), SETTLEMENTS,
                                        newest=count, fetch_timeout=1.0):
            with contextlib.suppress(Rejected):
                receipts.append(verify_receipt(stored.data, bank_key))
    for receipt in receipts:
        view.note_transfer(receipt)


def footer(view: MarketView, refresh: float) -> Text:
    """The keys, under the view."""
    return Text.from_markup(f"[dim]q quit · Ctrl-C quit · {view.events} events · redraw every "
                            f"{refresh:g}s · tycoon tap shows every event[/]")


async def live(view: MarketView, refresh: float, duration: float) -> None:
    """Redraw until ``q`` (on a terminal), Ctrl-C or ``duration`` seconds."""
    quit_ = asyncio.Event()
    started = time.monotonic()
    with keys_pressed(quit_), Live(Group(view.render(), footer(view, refresh)),
                                   refresh_per_second=max(2, int(1 / refresh))) as screen:
        while not quit_.is_set() and (not duration or time.monotonic() - started < duration):
            await wait_set(quit_, refresh)
            screen.update(Group(view.render(), footer(view, refresh)))


@contextlib.contextmanager
def keys_pressed(quit_: asyncio.Event) -> Iterator[None]:
    """On a terminal: read keys unbuffered and set ``quit_`` on ``q``; restore on exit."""
    if not sys.stdin.isatty():
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def on_key() -> None:
        if sys.stdin.read(1) in ("q", "Q"):
            quit_.set()

    tty.setcbreak(fd)
    loop.add_reader(fd, on_key)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
