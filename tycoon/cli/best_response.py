"""``tycoon best-response BUDGET DEADLINE [HOSTS...]``: the plain Best Response planner.

Pure arithmetic, no bus: given a budget (credits), a deadline (``30s``, ``2h``, ``1d``,
``1h30m``) and hosts as ``host:capacity:price`` entries (price = the others' bid rate on the
host in credits per second), print how to bid, as the original ``best_response`` tool did::

    host bid utility budget
    h1 0.00231 812.5 8.3

one line per chosen host: the bid rate (credits/s), the utility it buys (capacity × share)
and the part of the budget to fund that host with (credits, summing exactly to BUDGET).
HOSTS is a file, ``-`` for stdin, or inline entries; with no HOSTS, stdin is read. Entries
are separated by whitespace, commas or newlines; ``#`` starts a comment.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tycoon.agent.best_response import BestResponse, best_response
from tycoon.auctioneer.bidparse import parse_duration as bid_duration
from tycoon.errors import Rejected
from tycoon.money import MICRO, format_amount, parse_amount
from tycoon.units import NS


@dataclass(frozen=True)
class HostEntry:
    """One host as the planner sees it."""

    host: str
    capacity: float
    price: float


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``30s``, ``2h``, ``1d``, ``1h30m``, ``1o1y``: the bid syntax's
    durations (one parser, :func:`tycoon.auctioneer.bidparse.parse_duration`), or bare
    seconds."""
    cleaned = text.strip()
    try:
        seconds = float(cleaned)
    except ValueError:
        try:
            seconds = bid_duration(cleaned.lower()) / NS
        except Rejected as error:
            raise Rejected("bad_input", error.message) from None
    if not 0 < seconds < float("inf"):
        raise Rejected("bad_input", f"the duration must be positive: {text!r}")
    return seconds


def parse_hosts(text: str) -> list[HostEntry]:
    """Parse ``host:capacity:price`` entries (see the module docstring)."""
    entries: list[HostEntry] = []
    seen: set[str] = set()
    for line in text.splitlines():
        for token in re.split(r"[\s,]+", line.split("#", 1)[0].strip()):
            if not token:
                continue
            parts = token.rsplit(":", 2)
            if len(parts) != 3 or not parts[0]:
                raise Rejected("bad_input", f"not host:capacity:price: {token!r}")
            try:
                capacity, price = float(parts[1]), float(parts[2])
            except ValueError:
                raise Rejected(
                    "bad_input", f"capacity and price must be numbers: {token!r}"
                ) from None
            if not (0 <= capacity < float("inf") and 0 <= price < float("inf")):
                raise Rejected(
                    "bad_input", f"capacity and price must be finite and >= 0: {token!r}"
                )
            if parts[0] in seen:
                raise Rejected("bad_input", f"host listed twice: {parts[0]!r}")
            seen.add(parts[0])
            entries.append(HostEntry(parts[0], capacity, price))
    if not entries:
        raise Rejected("bad_input", "no hosts given")
    return entries


def split_budget(budget: int, bids: np.ndarray) -> np.ndarray:
    """Split ``budget`` micro-credits in proportion to ``bids`` exactly (largest remainder)."""
    total = float(bids.sum())
    if total <= 0 or budget <= 0:
        return np.zeros(bids.size, dtype=np.int64)
    exact = bids / total * budget
    parts = np.floor(exact).astype(np.int64)
    short = budget - int(parts.sum())
    if short > 0:
        parts[np.argsort(-(exact - parts), kind="stable")[:short]] += 1
    return parts


def plan(
    budget: int, seconds: float, hosts: list[HostEntry], max_hosts: int | None = None
) -> tuple[BestResponse, np.ndarray]:
    """Solve for ``budget`` micro-credits over ``seconds``; returns the solution and the
    per-host funding in micro-credits."""
    rate = budget / MICRO / seconds
    w = np.array([h.capacity for h in hosts])
    y = np.array([h.price for h in hosts])
    result = best_response(rate, w, y, max_hosts=max_hosts)
    return result, split_budget(budget, result.bids)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``best-response`` subcommand."""
    p = sub.add_parser(
        "best-response",
        help="plan bids over hosts for a budget and deadline (pure, no bus)",
        description="Print host bid utility budget lines: the Best Response split of BUDGET "
        "credits spent evenly until DEADLINE over HOSTS (host:capacity:price, price in "
        "credits/s; a file, '-' or inline; stdin if omitted).",
    )
    p.add_argument("budget", metavar="BUDGET", help="credits, e.g. 100 or 12.5")
    p.add_argument("deadline", metavar="DEADLINE", help="e.g. 30s, 2h, 1d, 1h30m")
    p.add_argument("hosts", metavar="HOSTS", nargs="*", help="file, '-', or host:capacity:price")
    p.add_argument("--max-hosts", type=int, default=None, help="bid on at most this many hosts")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_best_response)


def _read_hosts(args: list[str]) -> str:
    if not args or args == ["-"]:
        return sys.stdin.read()
    if len(args) == 1 and ":" not in args[0]:
        path = Path(args[0])
        if not path.is_file():
            raise Rejected("bad_input", f"no such hosts file: {args[0]}")
        return path.read_text()
    return "\n".join(args)


def cmd_best_response(args: argparse.Namespace) -> int:
    """Run the planner and print the plan."""
    budget = parse_amount(args.budget)
    seconds = parse_duration(args.deadline)
    hosts = parse_hosts(_read_hosts(args.hosts))
    if args.max_hosts is not None and args.max_hosts < 1:
        raise Rejected("bad_input", "--max-hosts must be at least 1")
    result, funds = plan(budget, seconds, hosts, args.max_hosts)
    chosen = [int(j) for j in result.hosts]
    gained = np.array([h.capacity for h in hosts]) * result.shares
    if args.json:
        print(
            json.dumps(
                {
                    "budget": format_amount(budget),
                    "deadline_s": seconds,
                    "rate": budget / MICRO / seconds,
                    "utility": result.utility,
                    "hosts": [
                        {
                            "host": hosts[j].host,
                            "bid": float(result.bids[j]),
                            "share": float(result.shares[j]),
                            "utility": float(gained[j]),
                            "budget": format_amount(int(funds[j])),
                        }
                        for j in chosen
                    ],
                }
            )
        )
        return 0
    print("host bid utility budget")
    for j in chosen:
        print(
            f"{hosts[j].host} {result.bids[j]:.6g} {gained[j]:.6g} {format_amount(int(funds[j]))}"
        )
    if not chosen:
        print("# nothing worth buying: every host has capacity 0", file=sys.stderr)
    return 0
