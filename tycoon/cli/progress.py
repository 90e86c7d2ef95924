"""A live progress line for ``tycoon agent run`` on a terminal (rich): paid out of the
budget, hosts held, the planned spending rate, time left and the agent's last event; for a
bag of tasks, tasks done/running/queued and the ETA (off a terminal: a plain line each
time those counts change)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from tycoon.errors import Rejected
from tycoon.messages import MESSAGES
from tycoon.money import format_credits, format_rate
from tycoon.waiting import wait_set


def _detail(event: str, body: dict[str, Any]) -> str:
    """The line an agent event shows: its ``summary`` (plan, rebid, done) or its
    ``message`` (warning); nothing for others, or for a body its class refuses."""
    cls = MESSAGES.get(f"agent.{event}")
    try:
        read = cls.from_body(body) if cls is not None else None
    except Rejected:
        return ""
    return str(getattr(read, "summary", "") or getattr(read, "message", "") or "")


class AgentProgress:
    """Watches one :class:`tycoon.agent.agent.Agent` (its plan, journal and events)."""

    def __init__(self, agent: Any, budget: int) -> None:
        self.agent = agent
        self.budget = budget
        self.last = "starting"
        self.started = time.monotonic()
        publish = agent.publish

        async def publish_and_note(event: str, body: dict[str, Any]) -> None:
            self.last = f"{event} {_detail(event, body)}".strip()
            await publish(event, body)

        agent.publish = publish_and_note  # every event the agent publishes passes here

    def paid_out(self) -> int:
        """Net paid to hosts so far (funded less refunded, from the agent's journal); once
        the agent is done, what the hosts charged."""
        spent = getattr(getattr(self.agent, "summary", None), "spent", 0)
        if isinstance(spent, int) and spent > 0:
            return spent
        with contextlib.suppress(Exception):
            return int(self.agent.journal.net_paid_out())
        return 0

    def render(self) -> Table:
        """One line: a bar of paid / budget, then the figures and the last event."""
        plan = self.agent.plan
        paid = self.paid_out()
        left = max(0.0, float(self.agent.seconds_left))
        line = Table.grid(padding=(0, 1))
        line.add_column(width=16)
        line.add_column(no_wrap=True, overflow="ellipsis")
        line.add_row(
            ProgressBar(total=max(1, self.budget), completed=min(paid, self.budget), width=16),
            f"{format_credits(paid)} / {format_credits(self.budget)} credits · "
            f"{len(plan.hosts) if plan else 0} hosts · "
            f"{format_rate(plan.spend_rate) if plan else '0.0000'} credits/s · "
            f"{_duration(left)} left · " + (f"{self.tasks_text()} · " if self.bag() else "")
            + self.last,
        )
        return line

    def bag(self) -> Any:
        runner = getattr(self.agent, "tasks", None)
        return None if runner is None else runner.bag

    def tasks_text(self) -> str:
        """``tasks 3/6 done (1 failed) · 2 running · 1 queued · ETA 12s``."""
        bag = self.bag()
        p = bag.progress(time.time())
        failed = f" ({p.failed} failed)" if p.failed else ""
        eta = "?" if p.eta_s is None else _duration(p.eta_s)
        return (f"tasks {p.done}/{len(bag.tasks)} done{failed} · {p.running} running · "
                f"{p.queued} queued · ETA {eta}")

    async def lines(self, stop: asyncio.Event) -> None:
        """Off a terminal: print the task counts and credits paid whenever they change."""
        last = ""
        while not stop.is_set():
            await wait_set(stop, 0.5)
            text = self.tasks_text()
            if text.split(" · ETA")[0] != last.split(" · ETA")[0]:
                print(f"{text} · paid {format_credits(self.paid_out())} credits", flush=True)
                last = text

    async def show(self, stop: asyncio.Event, console: Console | None = None) -> None:
        """Redraw twice a second until ``stop`` is set (then leave the last line)."""
        with Live(self.render(), console=console, refresh_per_second=2,
                  transient=False) as live:
            while not stop.is_set():
                await wait_set(stop, 0.5)
                live.update(self.render())


def _duration(seconds: float) -> str:
    """``1h02m``, ``4m05s`` or ``12s``."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def start_progress(agent: Any, budget: int, enabled: bool, *,
                   plain: bool = False) -> Callable[[], Awaitable[None]]:
    """Show ``agent``'s progress line now (when ``enabled``: a terminal, not ``--json``;
    with ``plain`` and a bag of tasks, plain lines instead); returns the coroutine function
    that stops it and leaves its last line."""
    progress = AgentProgress(agent, budget) if enabled or plain else None
    if progress is None or (not enabled and progress.bag() is None):
        async def nothing() -> None:
            return None
        return nothing
    stop = asyncio.Event()
    task = asyncio.create_task(progress.show(stop) if enabled else progress.lines(stop))

    async def finish() -> None:
        stop.set()
        with contextlib.suppress(Exception):
            await task
    return finish
