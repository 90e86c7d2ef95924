"""What ``tycoon up`` shows while a market runs and after: the live view on a terminal,
a progress line every few seconds without one, and the closing summary (each agent's
spending, the bank's audit, unclean exits) that decides the exit code."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from tycoon.bank.audit import AuditReport, audit
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.cli.top import MarketView
from tycoon.money import format_credits
from tycoon.supervisor import Child

console = Console(stderr=False, highlight=False, soft_wrap=True)


async def run_for(seconds: float | None, view: MarketView, agents: list[Child]) -> None:
    """Without a terminal: a progress line every 5 s until ``seconds`` pass (or, with a
    duration, every agent is done); without one, until a signal."""
    begun = time.monotonic()
    end = begun + max(0.0, seconds) if seconds is not None else float("inf")
    while time.monotonic() < end:
        await asyncio.sleep(min(5.0, max(0.1, end - time.monotonic())))
        done = sum(1 for a in agents if not a.running)
        left = f"  {int(end - time.monotonic())}s left" if seconds is not None else ""
        console.print(f"  {int(time.monotonic() - begun):>4}s{left}  {len(view.hosts)} hosts"
                      f"  {view.events} events  {len(view.transfers)} recent transfers"
                      f"  agents done {done}/{len(agents)}")
        if seconds is not None and agents and done == len(agents):
            break


async def live_view(view: MarketView, seconds: float | None, url: str) -> None:
    """On a terminal: the live view, with the time left, until Ctrl-C (or ``seconds``)."""
    end = time.monotonic() + seconds if seconds is not None else float("inf")

    def frame() -> Group:
        left = f"{int(end - time.monotonic())}s left · " if seconds is not None else ""
        head = Text.from_markup(f"[bold]market at {url}[/] · {left}[dim]Ctrl-C stops it "
                                "(state is kept)[/]")
        return Group(head, view.render())

    with Live(frame(), refresh_per_second=4, console=console) as live:
        while time.monotonic() < end:
            await asyncio.sleep(min(0.4, max(0.0, end - time.monotonic())))
            live.update(frame())


def agent_results(agents: list[Child]) -> list[dict[str, Any]]:
    """Each agent's closing JSON line (``agent run --json``), with its name."""
    results = []
    for child in agents:
        lines = [ln for ln in child.tail(50).splitlines() if ln.startswith('{"agent"')]
        if lines:
            results.append({"name": child.name, **json.loads(lines[-1])})
    return results


def summarise(state: Path, view: MarketView, agents: list[Child],
              codes: dict[str, int | None]) -> int:
    """Print the summary (the view, each agent's spending, the bank's audit, unclean exits);
    0 only if the audit passes and every child stopped cleanly."""
    console.print("\n[bold]summary[/]")
    console.print(view.render())
    for r in agent_results(agents):
        console.print(f"  {r['name']}: spent {format_credits(r['spent'])} credits in "
                      f"{r['plans']} plans, refunded {format_credits(r['refunded'])}")
    report: AuditReport | None = None
    db = state / "bank.db"
    if db.exists():
        store = SqliteStore(db, readonly=True)
        try:
            report = audit(store)
        finally:
            store.close()
        verdict = "[green]passes[/]" if report.ok else "[red]FAILS[/]"
        balances = format_credits(report.total_balances, 6)
        console.print(f"  bank audit {verdict}: Σ balances {balances}"
                      f" = Σ minted {format_credits(report.total_minted, 6)} credits over "
                      f"{report.transfers} transfers, {report.accounts} accounts")
        for problem in report.problems[:5]:
            console.print(f"    {problem}")
    bad = {n: c for n, c in codes.items()
           if c not in (0, None, 130) and not (n.startswith("agent") and c == 130)}
    if bad:
        console.print(f"  [red]unclean exits:[/] {bad} (logs in {state / 'logs'})")
    ok = report is not None and report.ok and not bad
    return 0 if ok else 1

