"""The continuous agent's runner: it feeds the bus's events to its core and carries out
what the core decides.

One agent buys one resource for one job: a budget to spend before a deadline. The
decisions (quotes, market moves, the replan with its hysteresis) are the sans-IO
:class:`~tycoon.agent.core.AgentCore`'s; this runner asks the SLS for candidates, follows
the price and allocation streams the core wants, reads balances, bids and moves money
through the :class:`~tycoon.agent.allocator.Allocator` (rates at once, money once prices
are quiet), and at the deadline brings every credit home (:mod:`tycoon.agent.finish`).
It publishes on ``tycoon.agent.<id>.<event>`` (plan, rebid, settled, warning, done); its
contract and money moves are journalled, so a restart keeps its deadline and repeats no
payment.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tycoon.agent.books import HostClient
from tycoon.agent.core import WATCHED, AgentConfig, AgentCore, Reading, sls_candidate
from tycoon.agent.finish import bring_home
from tycoon.agent.parts import AgentParts, Summary
from tycoon.agent.planner import Plan, Quote
from tycoon.agent.prediction import Prediction
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import subject_id
from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.messages.agent import AgentPlan, AgentRebid, AgentSettled, AgentWarning
from tycoon.messages.market import Alloc, HostBidReply
from tycoon.messages.price import PriceUpdate
from tycoon.waiting import wait_set

__all__ = ["STOP_SETTLE_S", "WATCHED", "Agent", "AgentConfig", "AgentParts", "Summary",
           "sls_candidate"]

#: How long an interrupted agent (its run cancelled: Ctrl-C, SIGTERM) goes on bringing its
#: money home before it returns. What is not home by then stays in the journal, and the
#: next run of the job settles it; ``tycoon up`` waits 10 s for each agent to exit.
STOP_SETTLE_S = 5.0


class Agent:
    """A continuous bidding agent on one bus; ``run()`` returns at the deadline.

    ``Agent(bus, bank_key, config, journal_path)`` wires the usual parts
    (:meth:`AgentParts.default`); :meth:`Agent.from_parts` takes them made. The decisions
    are the :class:`~tycoon.agent.core.AgentCore`'s; this runner feeds it the bus's events,
    reads balances and carries out its plans through the allocator."""

    def __init__(self, bus: Bus, bank_key: str, config: AgentConfig, journal_path: Path | str,
                 *, host_client: Callable[[Bus, str], HostClient] | None = None,
                 clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        parts = AgentParts.default(bus, bank_key, config, journal_path,
                                   host_client=host_client, clock=clock, timer=timer)
        self._wire(bus, config, parts, clock, timer)

    @classmethod
    def from_parts(cls, bus: Bus, config: AgentConfig, parts: AgentParts, *,
                   clock: Callable[[], float] = time.time,
                   timer: Callable[[], float] = time.perf_counter) -> Agent:
        """An agent working with ``parts`` (``clock``: wall time; ``timer``: monotonic)."""
        agent = cls.__new__(cls)
        agent._wire(bus, config, parts, clock, timer)
        return agent

    def _wire(self, bus: Bus, config: AgentConfig, parts: AgentParts,
              clock: Callable[[], float], timer: Callable[[], float]) -> None:
        self.bus = bus
        self.config = config
        self.id = subject_id(bus.identity.public_key)
        self.journal = parts.journal
        self.bank = parts.bank
        self.sls = parts.sls
        self.allocator = parts.allocator
        self.allocator.on_bid = self._on_bid_reply
        self.clock = clock
        self.timer = timer
        self.log = get_logger("agent", agent=self.id)
        self.summary = Summary(self.id)
        self._wake = asyncio.Event()
        self._wake_reason = ""
        self._subscriptions: dict[str, Any] = {}
        self._settling: set[asyncio.Task[None]] = set()
        self._settling_epoch: int | None = None
        self._settle_now = asyncio.Event()
        started = float(self.journal.setdefault("started", repr(clock())))
        deadline = float(self.journal.setdefault("deadline", repr(started + config.deadline_s)))
        self.journal.setdefault("budget", config.budget)
        self.tasks = parts.tasks
        self.core = AgentCore(config, deadline, self.tasks.bag if self.tasks else None)

    @property
    def deadline(self) -> float:
        return self.core.deadline

    @property
    def plan(self) -> Plan | None:
        return self.core.plan

    @property
    def quotes(self) -> dict[str, Quote]:
        return self.core.quotes

    @property
    def payees(self) -> dict[str, str]:
        return self.core.payees

    @property
    def _predictions(self) -> dict[str, Prediction]:
        return self.core.predictions

    @property
    def seconds_left(self) -> float:
        return self.core.deadline - self.clock()

    async def publish(self, event: str, body: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await self.bus.publish(subjects.agent(self.id, event), f"agent.{event}", body)

    async def warn(self, message: str, **detail: Any) -> None:
        self.summary.warnings.append(message)
        self.log.warning("warning", message=message, **detail)
        await self.publish("warning", AgentWarning(message, detail).to_body())

    async def run(self) -> Summary:
        """Plan, follow the market and rebid until the deadline; then refund."""
        await self._open_bank_account()
        if self.seconds_left <= self.config.refund_margin_s:
            self.allocator.settle_only = True  # a rerun after the deadline only settles
        recovered = await self.allocator.recover()
        if recovered:
            self.log.info("recovered pending moves", count=recovered)
        await self.bus.subscribe(subjects.SLS_SNAPSHOT, self._on_snapshot)
        await self._follow_allocations(sorted(self.journal.hosts_funded()))
        interrupted = False
        try:
            await self._discover()
            await self._replan("start", force=True)
            self._run_tasks()
            while self.seconds_left > self.config.refund_margin_s \
                    and not self.core.tasks_finished:
                timeout = min(self.config.replan_every_s,
                              self.seconds_left - self.config.refund_margin_s)
                await wait_set(self._wake, max(timeout, 0.01))
                self._wake.clear()
                if self.seconds_left <= self.config.refund_margin_s \
                        or self.core.tasks_finished:
                    break
                reason, self._wake_reason = self._wake_reason or "periodic", ""
                # Agents hear the same price update (and start their clocks) together; a
                # short random pause keeps them from best-responding to the same stale
                # prices at the same moment.
                await asyncio.sleep(random.uniform(0, self.config.jitter_s))
                if reason == "periodic":
                    await self._discover()
                await self._replan(reason)
        except asyncio.CancelledError:
            interrupted = True
            raise
        finally:
            await self._finish(STOP_SETTLE_S if interrupted else None)
        return self.summary

    def _run_tasks(self) -> None:
        """Run the job's tasks on the hosts held (their runner wakes us when all are done)."""
        if self.tasks is not None:
            self.tasks.start(lambda cores: self.core.task_moves(
                self.allocator.holdings, cores, self.clock()), self._tasks_changed)

    def _tasks_changed(self) -> None:
        assert self.tasks is not None
        self.summary.tasks = asdict(self.tasks.bag.progress(self.clock()))
        if self.core.tasks_finished:
            self._wake_reason = "tasks done"
            self._wake.set()

    async def _open_bank_account(self) -> None:
        """Open our bank account (idempotent), waiting for the bank while it is down, up
        to the end of the grace period."""
        delay = 0.5
        while True:
            try:
                await self.bank.open(exist_ok=True)
                return
            except Rejected as error:
                if error.code not in ("unavailable", "timeout", "rate_limited") \
                        or self.seconds_left < -self.config.grace_s:
                    raise
                self.log.warning("bank unavailable; waiting", code=error.code)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _discover(self) -> None:
        """Ask the SLS for candidates (and the prices of those whose stream we do not
        follow)."""
        try:
            # Equally good hosts come in random order: agents asking together (all of
            # them, at a market's start) would otherwise all take the same first ones.
            rows = await self.sls.query(self.config.resource, sort="capacity_per_price",
                                        limit=self.config.candidates, ties="random",
                                        statistics=self.config.probability is not None)
        except Rejected as error:
            await self.warn(f"SLS unavailable: {error.code}")
            return
        refused = self.core.candidates(rows, followed=set(self._subscriptions))
        if refused:
            await self.warn(f"ignored {refused} malformed SLS row(s)")
        await self._follow_prices()

    async def _follow_prices(self) -> None:
        """Follow the price streams the core wants (the hosts in play and the best other
        candidates); the others' prices come from the SLS at each periodic replan. Each
        followed stream costs a signature check per update."""
        wanted = self.core.followed()
        for host in [h for h in self.quotes if h in self._subscriptions and h not in wanted]:
            with contextlib.suppress(Exception):
                await self._subscriptions.pop(host).unsubscribe()
        for host in sorted(wanted - set(self._subscriptions)):
            self._subscriptions[host] = await self.bus.subscribe(
                subjects.price(host), self._on_price, skip=self._own_bid_in_flight)

    async def _follow_allocations(self, hosts: Iterable[str]) -> None:
        """Follow ``tycoon.alloc.<host>`` where we hold money or a bid: the host's own word
        on our rate there. (Elsewhere our rate is 0, and each followed stream costs a
        signature check per update, so candidates are followed by their prices alone.)"""
        for host in hosts:
            if f"alloc.{host}" not in self._subscriptions:
                self._subscriptions[f"alloc.{host}"] = await self.bus.subscribe(
                    subjects.alloc(host), self._on_alloc, skip=self._own_bid_in_flight)

    def _own_bid_in_flight(self, subject: str) -> bool:
        """Whether an update on ``subject`` (a host's price or allocation stream) comes
        while our bid there is in flight: dropped unchecked, the bid's reply being a newer
        word on the same (the host publishes before replying, on one connection)."""
        return subject.rsplit(".", 1)[-1] in self.allocator.bidding

    def _on_bid_reply(self, host: str, reply: HostBidReply) -> None:
        """Take the host's price from its reply to our bid (see _own_bid_in_flight)."""
        self.core.bid_reply(host, reply.prices.get(self.config.resource))

    async def _on_price(self, msg: Message) -> None:
        host = subjects.host_of(msg.subject)  # the subject the bus checked it was signed for
        if host not in self.quotes or subject_id(msg.sender) != host:
            return
        try:
            update = PriceUpdate.from_body(msg.body)
        except Rejected:
            return
        offer = update.resources.get(self.config.resource)
        if offer is None or update.host != host:
            return
        # Our own move there in flight: this price holds our new bid, our books not yet
        # (the reply comes after the price); the next price is judged.
        if self.core.price(host, float(offer.capacity), offer.price, self.allocator.holdings,
                           self.clock(), self.timer(),
                           own_move=self.allocator.lock(host).locked()):
            self._wake_reason = f"price moved on {host}"
            self._wake.set()

    async def _on_alloc(self, msg: Message) -> None:
        """The host's own word on our bid: its rate and our balance there."""
        try:
            alloc = Alloc.from_body(msg.body)
        except Rejected:
            return
        host = alloc.host
        if subject_id(msg.sender) != host:
            return
        mine = alloc.accounts.get(self.bus.identity.public_key)
        if isinstance(mine, dict):
            rate = (mine.get("rate") or {}).get(self.config.resource)
            if isinstance(rate, int | float):
                self.core.allocation(host, float(rate), self.clock())
        elif not alloc.truncated:
            self.core.allocation(host, 0.0, self.clock())

    async def _on_snapshot(self, msg: Message) -> None:
        if msg.sender and not self.quotes:
            self._wake_reason = "snapshot"
            self._wake.set()

    async def _replan(self, reason: str, *, force: bool = False) -> None:
        """Ask the core for a plan and carry it out: publish it, bid its rates (the
        allocator's retarget), and leave its money moves to :meth:`_settle_later`."""
        changed_at = self.core.take_change()
        exact = reason in ("start", "periodic")
        if exact:
            # Exact readings and recovery need the money at rest: the last plan's money
            # moves are made now (a price move does not wait for them: see _settle_later).
            await self._settle_now_and_wait()
            if self.journal.pending():
                # A funding whose host was down (or a refund that failed) is finished on
                # the periodic round, with the ids it had.
                await self.allocator.recover()
        evaluation = self.core.evaluate(self.allocator.holdings, self.clock())
        if evaluation.seconds < 1:
            return
        try:
            held, bank_balance = await self._holdings(exact=exact)
        except Rejected as error:
            await self.warn(f"cannot read balances: {error.code}")
            return
        decision = self.core.decide(
            evaluation, Reading(held, bank_balance, self.journal.committed_out(), exact),
            self.timer(), force=force)
        for notice in decision.warnings:
            await self.warn(notice.message, **notice.detail)
        candidate, why = decision.plan, decision.why
        if candidate is None:
            return
        epoch = self.journal.next_epoch()
        self._settling_epoch = epoch  # a settlement still running for an older plan stops
        self.summary.plans += 1
        await self.publish("plan", AgentPlan(
            epoch=epoch, summary=candidate.summary(), reason=why,
            utility=candidate.utility, spend_rate=candidate.spend_rate,
            probability=self.config.probability, cushion=self.core.cushion(candidate),
            hosts={h: {"balance": candidate.balances[h], "rate": candidate.rates[h],
                       "share": candidate.shares.get(h, 0.0)} for h in candidate.hosts},
        ).to_body())
        outcome = await self.allocator.retarget(candidate, epoch, self.payees, evaluation.end,
                                                budget=self.config.budget)
        answered_at = self.timer()
        await self._follow_allocations(sorted(set(candidate.hosts) | set(outcome.funded)))
        self.core.adopt(candidate)
        self.summary.rebids += 1
        latency = None
        if changed_at is not None and outcome.placed_at is not None:
            latency = (outcome.placed_at - changed_at) * 1000
            self.summary.rebid_latencies_ms.append(latency)
            self.summary.answer_latencies_ms.append((answered_at - changed_at) * 1000)
        await self.publish("rebid", AgentRebid(
            epoch=epoch, reason=f"{reason}: {why}",
            summary=f"{len(outcome.bids)} bids, funded {len(outcome.funded)}",
            funded=outcome.funded, refunded=outcome.refunded, errors=outcome.errors,
            latency_ms=latency,
            answer_ms=self.summary.answer_latencies_ms[-1] if latency is not None else None,
        ).to_body())
        await self._follow_prices()
        task = asyncio.create_task(self._settle_later(candidate, epoch, evaluation.end))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle_later(self, plan: Plan, epoch: int, end: float) -> None:
        """Move the money of plan ``epoch`` behind its bids, once ``settle_delay_s`` passed
        without a newer plan (or at once when :meth:`_settle_now_and_wait` asks)."""
        await wait_set(self._settle_now, self.config.settle_delay_s)
        if self._settling_epoch != epoch:
            return
        started = self.timer()
        try:
            outcome = await self.allocator.settle(
                plan, epoch, self.payees, end, budget=self.config.budget,
                current=lambda: self._settling_epoch == epoch)
        except Exception:
            self.log.exception("settling failed", epoch=epoch)
            return
        await self._follow_allocations(sorted(outcome.funded))
        if self._settling_epoch == epoch and (outcome.funded or outcome.refunded):
            self.summary.settle_ms.append((self.timer() - started) * 1000)
        if outcome.funded or outcome.refunded or outcome.errors:
            await self.publish("settled", AgentSettled(
                epoch=epoch, funded=outcome.funded, refunded=outcome.refunded,
                errors=outcome.errors, superseded=self._settling_epoch != epoch,
            ).to_body())

    async def _settle_now_and_wait(self, *, supersede: bool = False) -> None:
        """Settle the last plan's money now and wait until it is done (or, with
        ``supersede``, drop what has not started and wait for what has)."""
        if not self._settling:
            return
        if supersede:
            self._settling_epoch = None
        self._settle_now.set()
        await asyncio.gather(*self._settling, return_exceptions=True)
        self._settle_now.clear()

    async def _holdings(self, *, exact: bool) -> tuple[dict[str, int], int]:
        """Our balance at each funded host and at the bank.

        Exact (one request per host) at the start and on periodic replans; in between,
        from the allocator's books (each host's last report, spent evenly until its bid
        expires), so that answering a price move costs no round of queries. Estimates
        only steer the plan: the cap on spending comes from the journal, which is exact.
        """
        if exact or self.allocator.bank_balance is None:
            held = await self.allocator.balances(self._funded_hosts())
            books = self.allocator.held()
            # a silent host is not empty: its last report (spent on) stands in for it
            held.update({h: books.get(h, 0) for h in self.allocator.unreachable})
            self.allocator.bank_balance = await self.bank.balance()
            return held, self.allocator.bank_balance
        return self.allocator.held(), self.allocator.bank_balance

    def _funded_hosts(self) -> list[str]:
        """Every host where we may hold money: by the journal, or by our books."""
        return sorted(self.journal.hosts_funded(pending=True) | set(self.allocator.holdings))

    async def _finish(self, within: float | None = None) -> None:
        """Bring every credit home (up to ``grace_s`` past the deadline) and report.

        ``within`` (an interrupted run): all of it within that many seconds; a move cut
        short stays pending in the journal (recorded before it is sent), for the next run."""
        started = self.timer()

        def left() -> float | None:
            return None if within is None else max(within - (self.timer() - started), 0.01)

        if within is not None:
            self.log.info("interrupted: settling", within_s=within)
        if self.tasks is not None:
            # what still runs is killed; the journal keeps it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.tasks.stop(), left())
            self._tasks_changed()
        try:
            await asyncio.wait_for(self._settle_now_and_wait(supersede=True), left())
        except TimeoutError:
            for task in list(self._settling):  # cut short: pending in the journal
                task.cancel()
            await asyncio.gather(*self._settling, return_exceptions=True)
        until = max(self.deadline, self.clock()) + self.config.grace_s
        if within is not None:
            until = min(until, self.clock() + (left() or 0.0))
        try:
            # bring_home stops its rounds at ``until``; a round's requests are cut at left()
            accounting = await asyncio.wait_for(bring_home(
                self.allocator, self.journal, self._funded_hosts,
                new_epoch=self.journal.next_epoch, clock=self.clock, payees=self.payees,
                until=until), left())
        except Rejected as error:  # a host's answer we cannot read: report, never hang
            await self.warn(f"final settling failed: {error.code}")
            accounting = None
        except TimeoutError:
            await self.warn("interrupted while settling: the next run settles the rest",
                            pending=len(self.journal.pending()))
            accounting = None
        if within is not None:
            self.log.info("interrupted: settled", seconds=round(self.timer() - started, 3),
                          pending=len(self.journal.pending()))
        self.summary.account(self.journal, accounting)
        if self.summary.outstanding:
            await self.warn("money still away at the end of the grace period",
                            outstanding=self.summary.outstanding)
        await self.publish("done", self.summary.done_body())
        for sub in self._subscriptions.values():
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self.journal.close()
