"""What an agent works with: its parts (injected; :meth:`AgentParts.default` wires the usual
ones) and the :class:`Summary` of what it did."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tycoon.agent.allocator import Allocator
from tycoon.agent.bag import TaskRunner
from tycoon.agent.books import HostClient
from tycoon.agent.core import AgentConfig
from tycoon.agent.finish import Accounting
from tycoon.agent.journal import Journal
from tycoon.bank.client import BankClient
from tycoon.bus.connection import Bus
from tycoon.bus.keys import subject_id
from tycoon.messages.agent import AgentDone
from tycoon.money import format_credits
from tycoon.sls.client import SLSClient


@dataclass
class Summary:
    """What an agent did, for its caller and the ``done`` event."""

    agent: str
    plans: int = 0
    rebids: int = 0
    refunded: int = 0
    """Refunded by hosts over the whole job."""
    paid_out: int = 0
    """Net paid to hosts: funded less refunded."""
    funded: int = 0
    spent: int = 0
    """Charged by hosts (exact when nothing is outstanding; otherwise a lower bound)."""
    outstanding: list[dict[str, Any]] = field(default_factory=list)
    """Money not home when the agent stopped: host, what, amount (empty: all home)."""
    warnings: list[str] = field(default_factory=list)
    rebid_latencies_ms: list[float] = field(default_factory=list)
    """From a price move to the new plan's rates bid."""
    answer_latencies_ms: list[float] = field(default_factory=list)
    """From a price move to the whole answer: the plan's bids and the parks after them."""
    settle_ms: list[float] = field(default_factory=list)
    """How long each plan's money moves took, once started (after ``settle_delay_s``)."""
    tasks: dict[str, Any] | None = None
    """A bag of tasks: how many are done, failed, running, queued (None: no tasks)."""

    def account(self, journal: Journal, accounting: Accounting | None) -> None:
        """Take the job's totals from ``journal`` and what is still away from
        ``accounting`` (None: the final settling failed, nothing is known to be home)."""
        totals = journal.totals()
        self.funded = sum(f for f, _ in totals.values())
        self.refunded = sum(r for _, r in totals.values())
        self.paid_out = journal.net_paid_out()
        if accounting is None:
            self.spent = self.paid_out
            self.outstanding = [{"host": "?", "what": "unknown", "amount": self.paid_out,
                                 "detail": "not settled"}]
        else:
            self.spent = accounting.spent
            self.outstanding = [o.to_dict() for o in accounting.outstanding]

    def done_body(self) -> dict[str, Any]:
        """The body of the ``agent.done`` event."""
        return AgentDone(
            summary=f"spent {format_credits(self.spent)} credits, refunded "
                    f"{format_credits(self.refunded)} credits, "
                    f"outstanding {len(self.outstanding)}",
            spent=self.spent, refunded=self.refunded, funded=self.funded,
            outstanding=self.outstanding, plans=self.plans, tasks=self.tasks,
        ).to_body()


@dataclass
class AgentParts:
    """What an agent works with besides its bus (see :meth:`AgentParts.default`)."""

    journal: Journal
    bank: BankClient
    sls: SLSClient
    allocator: Allocator
    tasks: TaskRunner | None = None
    """Runs the job's bag of tasks, if any (:mod:`tycoon.agent.bag`)."""

    @classmethod
    def default(cls, bus: Bus, bank_key: str, config: AgentConfig, journal_path: Path | str,
                *, host_client: Callable[[Bus, str], HostClient] | None = None,
                clock: Callable[[], float] = time.time,
                timer: Callable[[], float] = time.perf_counter) -> AgentParts:
        """The usual wiring: a journal file, the bank and SLS clients on ``bus``, and an
        allocator talking to each host through one client (an auctioneer's by default)."""
        journal = Journal(journal_path)
        bank = BankClient(bus, bank_key)
        make = host_client or _auctioneer_client
        clients: dict[str, HostClient] = {}

        def client(host: str) -> HostClient:
            if host not in clients:
                clients[host] = make(bus, host)
            return clients[host]

        allocator = Allocator(subject_id(bus.identity.public_key), bank, client, journal,
                              resource=config.resource, clock=clock, timer=timer)
        return cls(journal, bank, SLSClient(bus), allocator)


def _auctioneer_client(bus: Bus, host: str) -> HostClient:
    from tycoon.auctioneer.client import AuctioneerClient

    return AuctioneerClient(bus, host)  # type: ignore[return-value]
