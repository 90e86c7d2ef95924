"""The allocator: turns a plan into money moves and bids, idempotently.

For each host of the plan it tops the host account up to the planned balance (a bank
transfer to the host's key, then funding with the receipt) and bids so that the balance
is spent evenly until the deadline. A host whose planned balance fell well below what
it holds is refunded and funded afresh; a host dropped from the plan is refunded.
Every move goes through the :class:`~tycoon.agent.journal.Journal` first.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tycoon.agent.journal import Journal, Move
from tycoon.agent.planner import Plan
from tycoon.bank.client import BankClient
from tycoon.errors import Rejected
from tycoon.log import get_logger

RETRYABLE = ("timeout", "unavailable", "internal")


class HostClient(Protocol):
    """What the allocator needs from one auctioneer (``AuctioneerClient`` fits)."""

    async def account(self) -> dict[str, Any]: ...
    async def fund(self, receipt: bytes) -> dict[str, Any]: ...
    async def bid(self, spec: str, duration: str) -> dict[str, Any]: ...
    async def refund(self) -> dict[str, Any]: ...


@dataclass
class Outcome:
    """What one execution did."""

    funded: dict[str, int] = field(default_factory=dict)
    refunded: dict[str, int] = field(default_factory=dict)
    bids: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class Allocator:
    """Moves one agent's money between its bank account and host accounts."""

    def __init__(
        self,
        agent_id: str,
        bank: BankClient,
        hosts: Callable[[str], HostClient],
        journal: Journal,
        *,
        resource: str = "cpu",
        slack: float = 0.1,
        refund_slack: float = 0.5,
    ) -> None:
        self.agent_id = agent_id
        self.bank = bank
        self.hosts = hosts
        self.journal = journal
        self.resource = resource
        self.slack = slack
        self.refund_slack = refund_slack
        # Hosts where our bid stands: a bid lasts until the job's horizon and spends
        # whatever the account holds, so a top-up needs no new bid; only a first funding
        # or a refund (which ends the bid) does.
        self.bidding: set[str] = set()
        self.log = get_logger("allocator", agent=agent_id)

    def move_id(self, epoch: int, host: str, step: str) -> str:
        return f"{self.agent_id}.{epoch}.{host}.{step}"

    async def recover(self) -> int:
        """Finish every move a crash left pending, with the ids it had; return how many."""
        pending = self.journal.pending()
        for move in pending:
            try:
                if move.kind == "fund":
                    await self._fund(move)
                else:
                    await self._refund(move)
            except Rejected as error:
                self.log.warning("recovery failed", move=move.id, code=error.code)
        return len(pending)

    async def balances(self, hosts: list[str]) -> dict[str, int]:
        """Unspent balance of our account at each host (0 where we have none)."""

        async def one(host: str) -> tuple[str, int]:
            try:
                info = await self.hosts(host).account()
            except Rejected as error:
                if error.code in ("unknown_account", "unavailable", "timeout"):
                    return host, 0
                raise
            balance = info.get("balance", 0)
            return host, balance if isinstance(balance, int) else 0

        return dict(await asyncio.gather(*(one(h) for h in hosts)))

    async def execute(self, plan: Plan, epoch: int, held: Mapping[str, int],
                      payees: Mapping[str, str], duration_s: float, *,
                      budget: int | None = None) -> Outcome:
        """Apply ``plan`` (epoch ``epoch``) given the balances ``held`` at each host.

        Refunds go first; then top-ups, each cut so that the money paid out over the whole
        job (fundings minus refunds, from the journal) never exceeds ``budget``; then bids.
        """
        outcome = Outcome()
        duration = f"{max(1, math.ceil(duration_s))}s"
        hosts = sorted(set(held) | set(plan.balances))
        held = dict(held)
        refunds = []
        for host in hosts:
            target, have = plan.balances.get(host, 0), held.get(host, 0)
            # Pulling money back costs a refund and a new funding (and an instant with no
            # bid at all), so a host keeps a surplus up to refund_slack: it just spends a
            # little faster, and the next plan counts the money where it is.
            if have > 0 and (target <= 0 or have > target * (1 + self.refund_slack)):
                refunds.append(self._guard(host, outcome, self._refund_host(
                    epoch, host, payees.get(host, ""), outcome)))
                held[host] = 0
        await asyncio.gather(*refunds)
        allowance = None if budget is None else budget - self.journal.net_paid_out()
        moves = []
        for host in sorted(plan.balances, key=lambda h: -plan.balances[h]):
            target, have = plan.balances[host], held.get(host, 0)
            top_up = target - have
            if top_up <= 0 or (have > 0 and top_up <= target * self.slack):
                continue
            if allowance is not None:
                top_up = min(top_up, allowance)
                if top_up <= 0:
                    continue
                allowance -= top_up
            moves.append(self.journal.begin(self.move_id(epoch, host, "f"), epoch, host,
                                            payees.get(host, ""), "fund", top_up))
        await asyncio.gather(*(self._guard(m.host, outcome, self._fund_host(m, outcome))
                               for m in moves))
        spec = f"{self.resource}:1,0,1"
        bids = [host for host in plan.balances if host not in outcome.errors
                and (host not in self.bidding or host in outcome.refunded)]
        await asyncio.gather(*(self._guard(h, outcome, self._bid(h, spec, duration, outcome))
                               for h in bids))
        return outcome

    async def _guard(self, host: str, outcome: Outcome, work: Awaitable[Any]) -> None:
        try:
            await work
        except Rejected as error:
            outcome.errors[host] = f"{error.code}: {error.message}"
            self.log.warning("host move failed", host=host, code=error.code,
                             reason=error.message)

    async def _refund_host(self, epoch: int, host: str, payee: str, outcome: Outcome) -> None:
        self.bidding.discard(host)
        move = self.journal.begin(self.move_id(epoch, host, "r"), epoch, host, payee,
                                  "refund", 0)
        outcome.refunded[host] = await self._refund(move)

    async def _fund_host(self, move: Move, outcome: Outcome) -> None:
        outcome.funded[move.host] = await self._fund(move)

    async def _bid(self, host: str, spec: str, duration: str, outcome: Outcome) -> None:
        await self.hosts(host).bid(spec, duration)
        self.bidding.add(host)
        outcome.bids[host] = f"{duration} {spec}"

    async def _fund(self, move: Move) -> int:
        if not move.payee:
            raise Rejected("unknown_host", f"no public key known for host {move.host}")
        try:
            receipt = await self.bank.transfer(move.payee, move.amount, transfer_id=move.id,
                                               memo=f"fund {move.host}")
        except Rejected as error:
            if error.code not in RETRYABLE:
                self.journal.finish(move.id, status="failed", detail=error.code)
            raise
        try:
            await self.hosts(move.host).fund(receipt.raw)
        except Rejected as error:
            if error.code != "already_redeemed":
                # The money sits in the host's bank account, not yet in our host account;
                # the move stays pending and is presented again on the next round.
                raise
        self.journal.finish(move.id, receipt=receipt.raw)
        return move.amount

    async def _refund(self, move: Move) -> int:
        reply = await self.hosts(move.host).refund()
        amount = sum(r.get("amount", 0) for r in reply.get("refunds", []) if isinstance(r, dict)
                     and isinstance(r.get("amount"), int))
        self.journal.finish(move.id, amount=amount)
        return amount
