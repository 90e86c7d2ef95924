"""An agent's last phase: bring every credit home, then say where each one went.

Past its deadline an agent pays nothing new (``Allocator.settle_only``). It completes the
moves it journalled (a funding paid at the bank is presented to its host, then refunded;
a funding the bank never settled is dropped), refunds every host account that holds
money, and counts as done a refund a host already paid on its own (the bank's history
shows it). It repeats this until nothing is outstanding or the grace period ends; a host
that does not answer is *unknown* (what we may hold there is reported, never taken as 0).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tycoon.agent.allocator import Allocator
from tycoon.agent.journal import Journal
from tycoon.errors import Rejected
from tycoon.messages.market import HostAccountReply, HostStatusReply


@dataclass(frozen=True)
class Outstanding:
    """Money not home: ``what`` is ``balance`` (in our host account), ``refund`` (a refund
    the host has not paid yet), ``receipt`` (paid to the host's bank account, not yet
    redeemed into ours), ``unknown`` (the host does not answer: ``amount`` is at most
    what we paid it less what came back) or ``unrecorded`` (a refund move whose amount
    the bank has not told yet)."""

    host: str
    what: str
    amount: int
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "what": self.what, "amount": self.amount,
                "detail": self.detail}


@dataclass
class Accounting:
    """Where the job's money went, from the journal and the hosts' word."""

    funded: int = 0
    """Paid to hosts and redeemed into our host accounts."""
    refunded: int = 0
    """Refunded by hosts to our bank account."""
    outstanding: list[Outstanding] = field(default_factory=list)

    @property
    def at_hosts(self) -> int:
        """Outstanding money that was redeemed into host accounts (not unredeemed receipts)."""
        return sum(o.amount for o in self.outstanding if o.what != "receipt")

    @property
    def spent(self) -> int:
        """Charged by the hosts (exact when nothing is outstanding; otherwise at least)."""
        return self.funded - self.refunded - self.at_hosts


async def check_host(allocator: Allocator, journal: Journal, host: str,
                     totals: dict[str, tuple[int, int]]) -> list[Outstanding]:
    """What of ours ``host`` still holds, by its own word (``unknown`` if it is silent)."""
    try:
        status = HostStatusReply.from_body(await allocator.host_client(host).status())
        account = None if status.account is None else HostAccountReply.from_body(status.account)
    except Rejected as error:
        # silent (or busy: rate_limited), refusing or answering nonsense: either way we
        # cannot tell what it holds; it is asked again next round
        funded, refunded = totals.get(host, (0, 0))
        return [Outstanding(host, "unknown", max(funded - refunded, 0), error.code)]
    if account is None:
        return []
    out = []
    if account.balance > 0:
        out.append(Outstanding(host, "balance", account.balance))
    for refund in account.pending_refunds or []:
        if isinstance(refund, dict) and isinstance(refund.get("amount"), int):
            out.append(Outstanding(host, "refund", refund["amount"],
                                   str(refund.get("refund_id", ""))))
    return out


async def _check_all(allocator: Allocator, journal: Journal, hosts: list[str],
                     totals: dict[str, tuple[int, int]]) -> dict[str, list[Outstanding]]:
    """:func:`check_host` for every host, together (a silent one costs one timeout)."""
    found = await asyncio.gather(*(check_host(allocator, journal, h, totals) for h in hosts))
    return dict(zip(hosts, found, strict=True))


def unfinished(journal: Journal) -> list[Outstanding]:
    """Journalled moves not finished: a funding not yet redeemed at its host (paid, or
    perhaps paid), or a refund not yet recorded (its amount is known once it is)."""
    return [Outstanding(m.host, "receipt", m.amount, m.id) if m.kind == "fund"
            else Outstanding(m.host, "unrecorded", 0, m.id) for m in journal.pending()]


async def bring_home(allocator: Allocator, journal: Journal, hosts: Callable[[], list[str]],
                     *, new_epoch: Callable[[], int], until: float,
                     clock: Callable[[], float], pause: tuple[float, float] = (0.5, 3.0),
                     payees: dict[str, str] | None = None) -> Accounting:
    """Settle until nothing is outstanding or ``clock()`` passes ``until``; return the
    accounting of the last round (its ``outstanding`` is empty when all money is home)."""
    allocator.settle_only = True
    delay = pause[0]
    while True:
        if journal.pending():
            await allocator.recover()
        totals = journal.totals()
        found = await _check_all(allocator, journal, hosts(), totals)
        # a host whose refund move is still pending was asked again by recover() above
        asked = {m.host for m in journal.pending() if m.kind == "refund"}
        refund = [h for h, items in found.items() if h not in asked
                  and any(o.what in ("balance", "refund") for o in items)]
        if refund:
            known = {**journal.payees(), **(payees or {})}
            await allocator.refund_hosts(refund, new_epoch(), known)
            totals = journal.totals()
            found.update(await _check_all(allocator, journal, refund, totals))
        outstanding = [o for items in found.values() for o in items] + unfinished(journal)
        accounting = Accounting(
            funded=sum(f for f, _ in totals.values()),
            refunded=sum(r for _, r in totals.values()),
            outstanding=outstanding)
        if not outstanding or clock() >= until:
            return accounting
        await asyncio.sleep(min(delay, max(until - clock(), 0.0)))
        delay = min(delay * 2, pause[1])
