"""The continuous agent: plan from the SLS, follow prices, rebid with hysteresis, stop on time.

One agent buys one resource for one job: a budget to spend before a deadline. It asks the
SLS for candidate hosts, solves Best Response, funds and bids through the allocator, then
listens to the price streams of the hosts in play and of the best other candidates. A
price move beyond the threshold on a host in play triggers a re-solve; the new plan
replaces the old only past the hysteresis (see :mod:`tycoon.agent.planner`). A new plan
is bid at once where the money already is (see :mod:`tycoon.agent.allocator`); the money
follows in the background. At the deadline it brings every credit home (see
:mod:`tycoon.agent.finish`): it keeps settling for up to ``grace_s`` and reports what is
still outstanding, and where.

Everything it decides is published on ``tycoon.agent.<id>.<event>`` (plan, rebid,
settled, warning, done). Its contract and money moves are journalled, so a restarted
agent keeps its deadline and repeats no payment.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tycoon.agent.allocator import Allocator
from tycoon.agent.books import HostClient
from tycoon.agent.finish import bring_home
from tycoon.agent.journal import Journal
from tycoon.agent.planner import (
    Plan,
    PlannerConfig,
    Quote,
    damped,
    make_plan,
    should_replan,
    switch_or_stay,
)
from tycoon.agent.prediction import Prediction, predict
from tycoon.bank.client import BankClient
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message, is_finite_number
from tycoon.bus.keys import is_key_of, subject_id
from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.sls.client import SLSClient

NS = 1_000_000_000
WATCHED = 5
"""Candidates followed by their price streams besides the hosts in play (at least)."""


@dataclass(frozen=True)
class AgentConfig:
    """One job: what to buy, with how much, by when."""

    budget: int
    """Micro-credits this job may spend in all."""
    deadline_s: float
    """Seconds from the job's first start (kept across restarts)."""
    resource: str = "cpu"
    max_hosts: int | None = None
    candidates: int = 100
    """How many hosts to ask the SLS for (cheapest capacity first)."""
    threshold: float = 0.05
    replan_every_s: float = 30.0
    refund_margin_s: float = 2.0
    """Stop bidding this long before the deadline and refund what is left."""
    jitter_s: float = 0.02
    """Up to this random pause before reacting to a price move."""
    switch_dwell_s: float = 2.0
    """After a plan takes on new hosts, the next ones may be taken on only this much later
    (until then a replan re-rates and may leave the hosts it has): agents that all see
    the same cheap host would otherwise herd from host to host many times a second."""
    switch_gain: float = 0.1
    """A plan that takes on new hosts must buy this much more than the best plan on the
    hosts already held: a new host costs a transfer, a funding and later a refund, and
    each switch moves another agent's prices (the scale run's agents otherwise dropped
    and took on hosts some 60 times a second between them)."""
    settle_delay_s: float = 1.0
    """A plan's rates are bid at once; its money moves (refunds, top-ups) wait until no
    newer plan came for this long, so a burst of price moves moves money once."""
    probability: float | None = None
    """Plan so the shares hold with this probability: each host is priced at this quantile
    of its price distribution (from the SLS's statistics) instead of its current price."""
    model: str = "normal"
    """Prediction model for ``probability``: normal, maxent, chebyshev or histogram."""
    grace_s: float = 180.0
    """After the deadline, keep settling (refunds, receipts) for up to this long while
    money is still away: a bank or host that is down at the deadline is waited for."""


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


class Agent:
    """A continuous bidding agent on one bus; ``run()`` returns at the deadline."""

    def __init__(
        self,
        bus: Bus,
        bank_key: str,
        config: AgentConfig,
        journal_path: Path | str,
        *,
        host_client: Callable[[Bus, str], HostClient] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.config = config
        self.id = subject_id(bus.identity.public_key)
        self.journal = Journal(journal_path)
        self.bank = BankClient(bus, bank_key)
        self.sls = SLSClient(bus)
        self.clock = clock
        self.log = get_logger("agent", agent=self.id)
        make_client = host_client or _auctioneer_client
        self._clients: dict[str, HostClient] = {}
        self.allocator = Allocator(
            self.id, self.bank, lambda h: self._client(h, make_client), self.journal,
            resource=config.resource, clock=clock, on_bid=self._on_bid_reply,
        )
        self.planner = PlannerConfig(max_hosts=config.max_hosts, threshold=config.threshold)
        self.plan: Plan | None = None
        self.quotes: dict[str, Quote] = {}
        self.payees: dict[str, str] = {}
        self.summary = Summary(self.id)
        self._wake = asyncio.Event()
        self._wake_reason = ""
        self._changed_at: float | None = None
        self._subscriptions: dict[str, Any] = {}
        self._reported_rate: dict[str, tuple[float, float]] = {}
        """Our rate at each host as its allocation stream last reported it, and when."""
        self._baseline: dict[str, float] = {}
        """The others' bid rate at each host when the market was last evaluated."""
        self._predictions: dict[str, Prediction] = {}
        self._settling: set[asyncio.Task[None]] = set()
        self._settling_epoch: int | None = None
        self._settle_now = asyncio.Event()
        self._switched_at = -math.inf
        started = float(self.journal.setdefault("started", repr(clock())))
        self.deadline = float(self.journal.setdefault("deadline",
                                                      repr(started + config.deadline_s)))
        self.journal.setdefault("budget", config.budget)

    def _client(self, host: str, make: Callable[[Bus, str], HostClient]) -> HostClient:
        if host not in self._clients:
            self._clients[host] = make(self.bus, host)
        return self._clients[host]

    @property
    def seconds_left(self) -> float:
        return self.deadline - self.clock()

    async def publish(self, event: str, body: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await self.bus.publish(subjects.agent(self.id, event), f"agent.{event}", body)

    async def warn(self, message: str, **detail: Any) -> None:
        self.summary.warnings.append(message)
        self.log.warning("warning", message=message, **detail)
        await self.publish("warning", {"message": message, **detail})

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
        try:
            await self._discover()
            await self._replan("start", force=True)
            while self.seconds_left > self.config.refund_margin_s:
                timeout = min(self.config.replan_every_s,
                              self.seconds_left - self.config.refund_margin_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(timeout, 0.01))
                self._wake.clear()
                if self.seconds_left <= self.config.refund_margin_s:
                    break
                reason, self._wake_reason = self._wake_reason or "periodic", ""
                # Agents hear the same price update (and start their clocks) together; a
                # short random pause keeps them from best-responding to the same stale
                # prices at the same moment.
                await asyncio.sleep(random.uniform(0, self.config.jitter_s))
                if reason == "periodic":
                    await self._discover()
                await self._replan(reason)
        finally:
            await self._finish()
        return self.summary

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
        refused = 0
        for row in rows:
            candidate = sls_candidate(row)
            if candidate is None:
                refused += 1
                continue
            host, key, capacity, price = candidate
            self.payees[host] = key
            if self.config.probability is not None and row.get("statistics"):
                with contextlib.suppress(Rejected):
                    self._predictions[host] = predict(row["statistics"], self.config.model)
            if host not in self.quotes or host not in self._subscriptions:
                self.quotes[host] = Quote(host, capacity, price)
        if refused:
            await self.warn(f"ignored {refused} malformed SLS row(s)")
        await self._follow_prices()

    async def _follow_prices(self) -> None:
        """Follow the price streams of the hosts in play and of as many more candidates
        (at least ``WATCHED``), the best capacity for the price first; the other
        candidates' prices come from the SLS at each periodic replan. Each followed
        stream costs a signature check per update: at scale, following every candidate
        was most of an agent's work."""
        in_play = set(self.plan.hosts) if self.plan else set()
        others = sorted((h for h in self.quotes if h not in in_play),
                        key=lambda h: -self.quotes[h].capacity / max(self.quotes[h].price, 1e-9))
        wanted = in_play | set(others[:max(WATCHED, len(in_play))])
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
        while our bid there is in flight: it is dropped unchecked, since the bid's reply
        is a newer word on the same (the host publishes its updates before replying, on
        one connection, so they arrive first). An agent answering a move with 90 bids
        would otherwise check 180 signatures of its own doing."""
        return subject.rsplit(".", 1)[-1] in self.allocator.bidding

    def _on_bid_reply(self, host: str, reply: dict[str, Any]) -> None:
        """Take the host's price from its reply to our bid (see _own_bid_in_flight)."""
        prices = reply.get("prices")
        price = prices.get(self.config.resource) if isinstance(prices, dict) else None
        old = self.quotes.get(host)
        if old is not None and isinstance(price, int | float) and math.isfinite(price):
            self.quotes[host] = Quote(host, old.capacity, max(float(price), 0.0))

    async def _on_price(self, msg: Message) -> None:
        body = msg.body
        host = body.get("host")
        if host not in self.quotes or subject_id(msg.sender) != host:
            return
        offer = (body.get("resources") or {}).get(self.config.resource)
        if not isinstance(offer, dict):
            return
        old = self.quotes[host]
        self.quotes[host] = Quote(host, float(offer.get("capacity", old.capacity)),
                                  float(offer.get("price", old.price)))
        if self.allocator.lock(host).locked():
            # Our own move there is in flight: this price holds our new bid, our books
            # not yet (the reply comes after the price); the next price is judged.
            return
        if self._moved(host):
            if self._changed_at is None:
                self._changed_at = time.perf_counter()
            self._wake_reason = f"price moved on {host}"
            self._wake.set()

    def _moved(self, host: str) -> bool:
        """Whether the others' bids at ``host`` moved past the threshold since the last
        evaluation: any way on a host in play, down (cheaper) on any other."""
        others = self._quote(host).others
        base = self._baseline.get(host)
        if base is None:
            return False
        change = (others - base) / max(base, 1e-9)
        in_play = self.plan is not None and host in self.plan.hosts
        return abs(change) > self.config.threshold if in_play \
            else change < -self.config.threshold

    def _quote(self, host: str) -> Quote:
        """The last quote of ``host`` with our own rate there as we know it now."""
        q = self.quotes[host]
        return Quote(host, q.capacity, q.price, own_rate=self._own_rate(host))

    async def _on_alloc(self, msg: Message) -> None:
        """The host's own word on our bid: its rate and our balance there."""
        host = msg.body.get("host")
        if not isinstance(host, str) or subject_id(msg.sender) != host:
            return
        accounts = msg.body.get("accounts")
        mine = accounts.get(self.bus.identity.public_key) if isinstance(accounts, dict) else None
        if isinstance(mine, dict):
            rate = (mine.get("rate") or {}).get(self.config.resource)
            if isinstance(rate, int | float):
                self._reported_rate[host] = (float(rate), self.clock())
        elif isinstance(accounts, dict) and not msg.body.get("truncated"):
            self._reported_rate[host] = (0.0, self.clock())

    async def _on_snapshot(self, msg: Message) -> None:
        if msg.sender and not self.quotes:
            self._wake_reason = "snapshot"
            self._wake.set()

    async def _replan(self, reason: str, *, force: bool = False) -> None:
        # The price move this answers; one arriving from now on is answered by the next.
        changed_at, self._changed_at = self._changed_at, None
        exact = reason in ("start", "periodic")
        if exact:
            # Exact readings and recovery need the money at rest: the last plan's money
            # moves are made now (a price move does not wait for them: see _settle).
            await self._settled()
            if self.journal.pending():
                # A funding whose host was down (or a refund that failed) is finished on
                # the periodic round, with the ids it had.
                await self.allocator.recover()
        fresh = [self._quote(host) for host in self.quotes]
        self._baseline = {q.host: q.others for q in fresh}
        quotes = [self._pessimistic(q) for q in fresh]
        # Plan over the exact horizon (so the spending rate does not jump as whole seconds
        # tick by); bids are rounded up to whole seconds.
        seconds = self.seconds_left - self.config.refund_margin_s
        if seconds < 1:
            return
        end = self.deadline - self.config.refund_margin_s
        try:
            held, bank_balance = await self._holdings(exact=exact)
        except Rejected as error:
            await self.warn(f"cannot read balances: {error.code}")
            return
        budget_left = self.config.budget - self.journal.committed_out()
        money = min(budget_left, bank_balance) + sum(held.values())
        if exact and bank_balance < budget_left:
            await self.warn("funds will not last to the deadline",
                            bank_balance=bank_balance, budget_left=budget_left)
        target = make_plan(quotes, money, seconds, self.planner)
        if self.plan is not None and target.hosts - self.plan.hosts:
            held_quotes = [q for q in quotes if q.host in self.plan.hosts]
            held = make_plan(held_quotes, money, seconds, self.planner)
            dwelling = time.monotonic() - self._switched_at < self.config.switch_dwell_s
            target = switch_or_stay(target, held, self.config.switch_gain, dwelling=dwelling)
        go, why = should_replan(self.plan, target, quotes, self.planner)
        if not (go or force):
            return
        candidate = damped(self.plan, target, quotes, self.planner.damping,
                           self.planner.min_balance)
        if self.plan:
            dropped = self.plan.hosts - candidate.hosts
            if dropped:
                await self.warn(f"priced out of {len(dropped)} host(s)", hosts=sorted(dropped))
        if self.plan is None or candidate.hosts - self.plan.hosts:
            self._switched_at = time.monotonic()
        epoch = self.journal.next_epoch()
        self._settling_epoch = epoch  # a settlement still running for an older plan stops
        self.summary.plans += 1
        await self.publish("plan", {
            "epoch": epoch, "summary": candidate.summary(), "reason": why,
            "utility": candidate.utility, "spend_rate": candidate.spend_rate,
            "probability": self.config.probability, "cushion": self.cushion(candidate),
            "hosts": {h: {"balance": candidate.balances[h], "rate": candidate.rates[h],
                          "share": candidate.shares.get(h, 0.0)} for h in candidate.hosts},
        })
        outcome = await self.allocator.retarget(candidate, epoch, self.payees, end,
                                                budget=self.config.budget)
        answered_at = time.perf_counter()
        await self._follow_allocations(sorted(set(candidate.hosts) | set(outcome.funded)))
        self.plan = candidate
        self.summary.rebids += 1
        latency = None
        if changed_at is not None and outcome.placed_at is not None:
            latency = (outcome.placed_at - changed_at) * 1000
            self.summary.rebid_latencies_ms.append(latency)
            self.summary.answer_latencies_ms.append((answered_at - changed_at) * 1000)
        await self.publish("rebid", {
            "epoch": epoch, "reason": f"{reason}: {why}",
            "summary": f"{len(outcome.bids)} bids, funded {len(outcome.funded)}",
            "funded": outcome.funded, "refunded": outcome.refunded, "errors": outcome.errors,
            "latency_ms": latency,
            "answer_ms": self.summary.answer_latencies_ms[-1] if latency is not None else None,
        })
        await self._follow_prices()
        task = asyncio.create_task(self._settle(candidate, epoch, end))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, plan: Plan, epoch: int, end: float) -> None:
        """Move the money of plan ``epoch`` behind its bids, once ``settle_delay_s`` passed
        without a newer plan (or at once when :meth:`_settled` asks)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settle_now.wait(), self.config.settle_delay_s)
        if self._settling_epoch != epoch:
            return
        started = time.perf_counter()
        try:
            outcome = await self.allocator.settle(
                plan, epoch, self.payees, end, budget=self.config.budget,
                current=lambda: self._settling_epoch == epoch)
        except Exception:
            self.log.exception("settling failed", epoch=epoch)
            return
        await self._follow_allocations(sorted(outcome.funded))
        if self._settling_epoch == epoch and (outcome.funded or outcome.refunded):
            self.summary.settle_ms.append((time.perf_counter() - started) * 1000)
        if outcome.funded or outcome.refunded or outcome.errors:
            await self.publish("settled", {
                "epoch": epoch, "funded": outcome.funded, "refunded": outcome.refunded,
                "errors": outcome.errors,
                "superseded": self._settling_epoch != epoch,
            })

    async def _settled(self, *, supersede: bool = False) -> None:
        """Settle the last plan's money now and wait until it is done (or, with
        ``supersede``, drop what has not started and wait for what has)."""
        if not self._settling:
            return
        if supersede:
            self._settling_epoch = None
        self._settle_now.set()
        await asyncio.gather(*self._settling, return_exceptions=True)
        self._settle_now.clear()

    def _pessimistic(self, quote: Quote) -> Quote:
        """With ``probability`` set: price the others' bids at that quantile of the host's
        price distribution (never below what they bid now)."""
        prediction = self._predictions.get(quote.host)
        if self.config.probability is None or prediction is None:
            return quote
        quantile = prediction.dist.quantile(self.config.probability) - quote.own_rate
        if not math.isfinite(quantile) or quantile <= quote.others:
            return quote
        return Quote(quote.host, quote.capacity, quote.own_rate + quantile, quote.own_rate,
                     quote.preference)

    def cushion(self, plan: Plan) -> int:
        """Extra micro-credits that would keep every planned share with ``probability``."""
        if self.config.probability is None:
            return 0
        extra = 0.0
        for host, rate in plan.rates.items():
            prediction = self._predictions.get(host)
            if prediction is not None:
                extra += prediction.cushion(plan.shares.get(host, 0.0), rate,
                                            self.config.probability)
        return round(extra * plan.seconds_left) if math.isfinite(extra) else -1

    def _own_rate(self, host: str) -> float:
        """Our bid rate at ``host``: as its allocation stream or our own books (the last
        reply of the host: our balance there, spent evenly until the bid expires) say,
        whichever heard from the host last."""
        reported = self._reported_rate.get(host)
        holding = self.allocator.holdings.get(host)
        if reported is not None and (holding is None or reported[1] >= holding.at):
            return reported[0]
        return self.allocator.rate(host)

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

    async def _finish(self) -> None:
        """Bring every credit home (up to ``grace_s`` past the deadline) and report."""
        await self._settled(supersede=True)
        try:
            accounting = await bring_home(
                self.allocator, self.journal, self._funded_hosts,
                new_epoch=self.journal.next_epoch, clock=self.clock, payees=self.payees,
                until=max(self.deadline, self.clock()) + self.config.grace_s)
        except Rejected as error:  # a host's answer we cannot read: report, never hang
            await self.warn(f"final settling failed: {error.code}")
            accounting = None
        totals = self.journal.totals()
        self.summary.funded = sum(f for f, _ in totals.values())
        self.summary.refunded = sum(r for _, r in totals.values())
        self.summary.paid_out = self.journal.net_paid_out()
        if accounting is None:
            self.summary.spent = self.summary.paid_out
            self.summary.outstanding = [{"host": "?", "what": "unknown", "amount":
                                         self.summary.paid_out, "detail": "not settled"}]
        else:
            self.summary.spent = accounting.spent
            self.summary.outstanding = [o.to_dict() for o in accounting.outstanding]
        if self.summary.outstanding:
            await self.warn("money still away at the end of the grace period",
                            outstanding=self.summary.outstanding)
        await self.publish("done", {
            "summary": f"spent {self.summary.spent} µc, refunded {self.summary.refunded} µc, "
                       f"outstanding {len(self.summary.outstanding)}",
            "spent": self.summary.spent, "refunded": self.summary.refunded,
            "funded": self.summary.funded, "outstanding": self.summary.outstanding,
            "plans": self.summary.plans,
        })
        for sub in self._subscriptions.values():
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self.journal.close()


def sls_candidate(row: Any) -> tuple[str, str, float, float] | None:
    """``(host, public key, capacity, price)`` of one SLS row; None unless well formed and
    the key is the host's own. A host's id is derived from its key, so a forged or corrupt
    row cannot make us pay another account for a host (the key is the payee of our bank
    transfers)."""
    if not isinstance(row, dict):
        return None
    host, key = row.get("host"), row.get("public_key")
    capacity, price = row.get("capacity", 0), row.get("price", 0.0)
    if not isinstance(host, str) or not isinstance(key, str) or not is_key_of(host, key):
        return None
    if not all(is_finite_number(v) and v >= 0 for v in (capacity, price)):
        return None
    return host, key, float(capacity), float(price)


def _auctioneer_client(bus: Bus, host: str) -> HostClient:
    from tycoon.auctioneer.client import AuctioneerClient

    return AuctioneerClient(bus, host)  # type: ignore[return-value]
