"""The allocator: turns a plan into bids and money moves, rates first, idempotently.

A bid spends its host account's balance evenly until it expires, so the rate it bids is
``balance / time left``. The allocator uses that to answer the market in one round trip:

1. :meth:`Allocator.retarget` sets the planned rates at once by re-bidding where money
   already is, with the duration that makes the balance last at the new rate; then parks
   the hosts dropped from the plan (a rate of almost nothing). Only a host where we hold
   nothing needs money first (bank transfer, funding with the receipt, then a bid).
2. :meth:`Allocator.settle` then moves the money so every balance lasts exactly to the
   end of the job (refunds, top-ups, the smaller rate changes), off the critical path,
   stopping between steps when a newer plan supersedes it.

Which host gets which move is decided in :mod:`tycoon.agent.moves` (sans-IO); this
module carries the moves out. Every money move goes through the
:class:`~tycoon.agent.journal.Journal` first, under an id derived from (agent, epoch,
host, step); each host's moves run under its own lock. A funding's receipt is journalled
before the host sees it. With ``settle_only`` (past the deadline) nothing new is paid: a
pending funding is completed only if the bank's history shows it paid, and refunds the
hosts paid on their own are taken from that history.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from tycoon.agent import moves
from tycoon.agent.bankview import BankHistory
from tycoon.agent.books import Holding, HostClient, Outcome
from tycoon.agent.journal import Journal, Move
from tycoon.agent.moves import PARK_S, Fund, Rebid
from tycoon.agent.planner import Plan
from tycoon.auctioneer.market import return_id
from tycoon.bank.client import BankClient
from tycoon.bank.receipt import verify_receipt
from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.messages.market import HostAccountReply, HostBidReply, HostFundReply, HostRefundReply
from tycoon.units import NS

RETRYABLE = ("timeout", "unavailable", "internal", "rate_limited")
NOTHING_THERE = ("no_funds", "unknown_account")
"""A host's answer to a refund when it holds nothing of ours (any refund already paid)."""
UNREACHABLE = ("unavailable", "timeout", "rate_limited")
"""A host that gave no answer now: what we hold there is unknown, not zero."""
MIN_FIRST_FUND = 1_000
"""The least first funding at a host (micro-credits; the default deposit, ``tycoon
auctioneer serve --deposit``): a host refuses a smaller one (``bad_amount``) after the bank
paid it, and the receipt could never be redeemed, so the agent's settling waited for it
until the end of its grace."""
MIN_DURATION_S = 2
"""A raised rate never spends a balance in less than this: until the top-up arrives, a
host with little money gets what the money buys rather than a burst."""


class Allocator:
    """Moves one agent's money between its bank account and host accounts."""

    def __init__(
        self,
        agent_id: str,
        bank: BankClient,
        host_client: Callable[[str], HostClient],
        journal: Journal,
        *,
        resource: str = "cpu",
        slack: float = 0.1,
        fast_slack: float = 0.25,
        refund_slack: float = 0.5,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        on_bid: Callable[[str, HostBidReply], None] | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.bank = bank
        self.host_client = host_client
        """The client of one host, by id."""
        self.journal = journal
        self.resource = resource
        self.slack = slack
        self.fast_slack = fast_slack
        self.refund_slack = refund_slack
        self.clock = clock
        self.timer = timer
        """Monotonic, for latencies (``Outcome.placed_at``)."""
        self.holdings: dict[str, Holding] = {}
        self.bank_balance: int | None = None
        """Our bank balance as last read, less the fundings begun since (None: unknown)."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._funding: set[str] = set()
        """Hosts with a funding under way (its bid follows; nobody funds them twice)."""
        self.bidding: set[str] = set()
        """Hosts with a bid of ours in flight: their next word is its reply."""
        self.on_bid = on_bid
        """Called with each host's reply to a bid (it carries the host's prices)."""
        self.settle_only = False
        """Past the deadline: pay nothing new; only complete and refund."""
        self.history = BankHistory(bank)
        self.unreachable: set[str] = set()
        """Hosts the last :meth:`balances` could not reach: what we hold there is unknown."""
        self.log = get_logger("allocator", agent=agent_id)

    @property
    def spec(self) -> str:
        return f"{self.resource}:1,0,1"

    def move_id(self, epoch: int, host: str, step: str) -> str:
        return f"{self.agent_id}.{epoch}.{host}.{step}"

    def lock(self, host: str) -> asyncio.Lock:
        return self._locks.setdefault(host, asyncio.Lock())

    def _left(self, host: str, now: float) -> int:
        holding = self.holdings.get(host)
        return 0 if holding is None else holding.left(now)

    def held(self, now: float | None = None) -> dict[str, int]:
        """What each of our host accounts is expected to hold at ``now``."""
        now = self.clock() if now is None else now
        return {h: holding.left(now) for h, holding in self.holdings.items()}

    def rate(self, host: str, now: float | None = None) -> float:
        """Our bid rate at ``host`` by our own books."""
        holding = self.holdings.get(host)
        return 0.0 if holding is None else holding.rate(self.clock() if now is None else now)

    def observe(self, host: str, balance: int, expires_ns: int) -> None:
        """Record what a host reported of our account there."""
        self.holdings[host] = Holding(balance, expires_ns / NS if expires_ns else 0.0,
                                      self.clock())

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
        """Ask each host for our balance there (0 where we have none); keeps the books.

        A host that does not answer is left out (and listed in :attr:`unreachable`): what
        we hold there is unknown, not zero; the books keep its last report."""

        async def one(host: str) -> tuple[str, int | None]:
            async with self.lock(host):
                try:
                    info = await self.host_client(host).account()
                except Rejected as error:
                    if error.code in UNREACHABLE:
                        return host, None
                    if error.code == "unknown_account":
                        return host, 0
                    raise
                reply = HostAccountReply.from_body(info)
                balance = reply.balance
                expires = reply.bid.get("expires_ns") if reply.bid is not None else 0
                self.observe(host, balance, expires if isinstance(expires, int) else 0)
                return host, balance

        answers = await asyncio.gather(*(one(h) for h in hosts))
        self.unreachable = {h for h, b in answers if b is None}
        return {h: b for h, b in answers if b is not None}

    def allowance(self, budget: int | None) -> int | None:
        """What may still be paid out: the budget less every funding begun, net of
        refunds; and no more than the bank balance, where known."""
        left = None if budget is None else budget - self.journal.committed_out()
        if self.bank_balance is not None:
            left = self.bank_balance if left is None else min(left, self.bank_balance)
        return left

    async def retarget(self, plan: Plan, epoch: int, payees: Mapping[str, str], end: float, *,
                       budget: int | None = None) -> Outcome:
        """Bid every planned rate now (spending should end at clock time ``end``), then
        park the hosts dropped from the plan (``placed_at`` marks the moment between).

        The plan's bids go first because they are what the job gets; a park only stops a
        small spend where others now hold the host (its money is refunded on settling),
        and in a big answer (dozens of hosts left at once) parks sent alongside would
        queue the plan's bids behind them at the hosts."""
        outcome = Outcome()
        await asyncio.gather(*(
            self._guard(host, outcome, self._retarget_host(
                host, rate, epoch, payees.get(host, ""), end, budget, outcome,
                self.fast_slack))
            for host, rate in moves.retarget_order(plan)))
        outcome.placed_at = self.timer()
        parked = moves.parks(plan, self.holdings, self.clock())
        await asyncio.gather(*(self._guard(h, outcome, self._park(h, outcome)) for h in parked))
        return outcome

    async def _park(self, host: str, outcome: Outcome) -> None:
        async with self.lock(host):
            await self._bid(host, PARK_S, outcome)

    async def _retarget_host(self, host: str, rate: float, epoch: int, payee: str, end: float,
                             budget: int | None, outcome: Outcome, slack: float) -> None:
        async with self.lock(host):
            now = self.clock()
            move = moves.host_move(host, self._left(host, now), self.rate(host, now), rate, slack)
            if isinstance(move, Rebid):
                await self._bid(host, move.seconds, outcome)
            if not isinstance(move, Fund):
                return
        await self._fund_to(host, rate, epoch, payee, end, budget, outcome, "f")

    async def settle(self, plan: Plan, epoch: int, payees: Mapping[str, str], end: float, *,
                     budget: int | None = None, outcome: Outcome | None = None,
                     current: Callable[[], bool] = lambda: True) -> Outcome:
        """Move money so each planned balance lasts until ``end``: refunds, then top-ups.

        Stops between steps once ``current()`` is false (a newer plan took over)."""
        outcome = outcome or Outcome()
        await self._refund_all(moves.drops(plan, self.held()), epoch, payees, outcome)
        if not current():
            return outcome
        now = self.clock()
        step = moves.top_ups(plan, self.held(now), end, now, self.allowance(budget), self.slack,
                       self.refund_slack)
        needs = dict(step.needs)
        if step.short:
            await self._refund_all(list(step.surplus), epoch, payees, outcome)
            for host in step.surplus:  # refunded whole: funded afresh
                if host in outcome.refunded:
                    needs[host] = step.targets[host]
            if not current():
                return outcome
        await asyncio.gather(*(
            self._guard(host, outcome, self._fund_to(
                host, plan.rates[host], epoch, payees.get(host, ""), end, budget, outcome, "t",
                current))
            for host in sorted(needs, key=lambda h: -needs[h])))
        if not current():
            return outcome
        await asyncio.gather(*(
            self._guard(host, outcome, self._retarget_host(
                host, rate, epoch, payees.get(host, ""), end, budget, outcome, self.slack))
            for host, rate in plan.rates.items() if host not in needs))
        return outcome

    async def _fund_to(self, host: str, rate: float, epoch: int, payee: str, end: float,
                       budget: int | None, outcome: Outcome, step: str,
                       current: Callable[[], bool] = lambda: True) -> None:
        """Top ``host`` up so that, bid at ``rate``, its balance lasts until ``end``
        (within the budget; a top-up smaller than ``slack`` of the target is skipped)."""
        if not current() or host in self._funding or self.settle_only:
            return
        if any(m.host == host and m.kind == "fund" for m in self.journal.pending()):
            return  # its last funding is not redeemed yet (host down): no second one
        now = self.clock()
        need = moves.funding(rate, end, now, self._left(host, now), self.allowance(budget),
                       self.slack)
        if need <= 0 or (need < MIN_FIRST_FUND and host not in self.journal.hosts_funded()):
            return
        move = self._begin_fund(self.move_id(epoch, host, step), epoch, host, payee, need)
        outcome.funded[host] = await self._fund(move, bid_until=end, outcome=outcome)

    async def _refund_all(self, hosts: list[str], epoch: int, payees: Mapping[str, str],
                          outcome: Outcome) -> None:
        async def one(host: str) -> None:
            move = self.journal.begin(self.move_id(epoch, host, "r"), epoch, host,
                                      payees.get(host, ""), "refund", 0)
            outcome.refunded[host] = await self._refund(move)

        await asyncio.gather(*(self._guard(h, outcome, one(h)) for h in hosts))

    async def refund_hosts(self, hosts: list[str], epoch: int,
                           payees: Mapping[str, str]) -> Outcome:
        """Refund our whole balance at each of ``hosts`` (failures in ``errors``)."""
        outcome = Outcome()
        await self._refund_all(hosts, epoch, payees, outcome)
        return outcome

    async def _guard(self, host: str, outcome: Outcome, work: Awaitable[Any]) -> None:
        try:
            await work
        except Rejected as error:
            outcome.errors[host] = f"{error.code}: {error.message}"
            self.log.warning("host move failed", host=host, code=error.code,
                             reason=error.message)

    async def _bid(self, host: str, seconds: float, outcome: Outcome) -> None:
        duration = f"{max(MIN_DURATION_S, math.ceil(seconds))}s"
        self.bidding.add(host)
        try:
            reply = HostBidReply.from_body(await self.host_client(host).bid(self.spec, duration))
        finally:
            self.bidding.discard(host)
        if self.on_bid is not None:
            self.on_bid(host, reply)
        balance = reply.allocation.get("balance")
        if isinstance(balance, int):
            self.observe(host, balance, reply.expires_ns)
        outcome.bids[host] = f"{duration} {self.spec}"

    def _begin_fund(self, move_id: str, epoch: int, host: str, payee: str, amount: int) -> Move:
        move = self.journal.begin(move_id, epoch, host, payee, "fund", amount)
        if self.bank_balance is not None and move.status == "pending":
            self.bank_balance -= move.amount
        return move

    async def _fund(self, move: Move, *, bid_until: float | None = None,
                    outcome: Outcome | None = None) -> int:
        """Pay ``move`` to the host's bank account, redeem the receipt into our host
        account and, with ``bid_until``, bid so the new balance lasts until then.

        The bank transfer runs outside the host's lock (it does not touch our account
        there), so a retarget waits at most for the host's own round trips."""
        if not move.payee:
            raise Rejected("unknown_host", f"no public key known for host {move.host}")
        self._funding.add(move.host)
        try:
            return await self._pay_and_redeem(move, bid_until, outcome or Outcome())
        finally:
            self._funding.discard(move.host)

    async def _receipt(self, move: Move) -> bytes | None:
        """The funding's bank receipt: journalled, or paid now (before the deadline), or
        (settling only) found in the bank's history; None if it was never paid."""
        if move.receipt:
            return bytes(move.receipt)
        if self.settle_only and await self.history.payment(move.id) is None:
            self.journal.finish(move.id, status="failed", detail="never paid; settling only")
            if self.bank_balance is not None:
                self.bank_balance += move.amount
            return None
        try:
            # the same id returns the same receipt: this pays at most once
            receipt = await self.bank.transfer(move.payee, move.amount, transfer_id=move.id,
                                               memo=f"fund {move.host}")
        except Rejected as error:
            if error.code not in RETRYABLE:
                self.journal.finish(move.id, status="failed", detail=error.code)
                if self.bank_balance is not None:
                    self.bank_balance += move.amount
            raise
        self.journal.paid(move.id, receipt.raw)  # before the host sees it: never lost
        return bytes(receipt.raw)

    async def _pay_and_redeem(self, move: Move, bid_until: float | None,
                              outcome: Outcome) -> int:
        raw = await self._receipt(move)
        if raw is None:
            return 0
        async with self.lock(move.host):
            balance: int | None = None
            try:
                balance = HostFundReply.from_body(
                    await self.host_client(move.host).fund(raw)).balance
            except Rejected as error:
                if self._returned(move, error):
                    return 0  # refused and paid back to us: the money is home
                if error.code != "already_redeemed":
                    # The money sits in the host's bank account, not yet in our host
                    # account; the move stays pending and is presented again later.
                    raise
            self.journal.finish(move.id, receipt=raw)
            holding = self.holdings.get(move.host)
            now = self.clock()
            if balance is None:
                balance = self._left(move.host, now) + move.amount
            self.holdings[move.host] = Holding(
                balance, 0.0 if holding is None else holding.expires, now)
            if bid_until is not None:
                await self._bid(move.host, bid_until - self.clock(), outcome)
        return move.amount

    def _returned(self, move: Move, error: Rejected) -> bool:
        """A refused funding the host paid back (``error.returned``: the bank's receipt of
        the return, checked): settle the move as failed, its money home; else False."""
        if not error.returned:
            return False
        try:
            back = verify_receipt(error.returned, self.bank.bank_key)
        except Rejected:
            return False
        ours = return_id(move.payee, f"{self.bank.account}:{move.id}")  # not another payment
        if (back.transfer_id, back.payer, back.payee, back.amount) != (
                ours, move.payee, self.bank.account, move.amount):  # fmt: skip
            return False
        self.journal.finish(move.id, status="failed", detail=f"returned ({error.code})")
        if self.bank_balance is not None:
            self.bank_balance += move.amount
        self.log.warning("funding refused and paid back", host=move.host, code=error.code,
                         amount=move.amount)
        return True

    async def _refund(self, move: Move) -> int:
        """Refund our whole balance at the host; record every refund received by its id.

        A host holding nothing of ours (``no_funds``) may have paid a pending refund on its
        own: the bank's history of payments from the host tells, and those are recorded."""
        async with self.lock(move.host):
            try:
                reply = HostRefundReply.from_body(await self.host_client(move.host).refund())
                refunds = [(str(r.get("refund_id") or f"{move.id}.{i}"), r["amount"],
                            r.get("receipt") if isinstance(r.get("receipt"), bytes) else None)
                           for i, r in enumerate(reply.refunds)
                           if isinstance(r, dict) and isinstance(r.get("amount"), int)]
            except Rejected as error:
                if error.code not in NOTHING_THERE or not move.payee:
                    raise
                refunds = await self.history.refunds_from(move.payee)
            amount = self.journal.record_refunds(move.host, move.id, refunds)
            self.journal.finish(move.id, amount=amount)
            self.holdings[move.host] = Holding(0, 0.0, self.clock())
        if self.bank_balance is not None:
            self.bank_balance += amount
        return amount
