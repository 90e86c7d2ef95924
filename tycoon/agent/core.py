"""The agent's decisions, sans-IO: quotes, market moves, the replan (budget, hysteresis,
switch gain, dwell).

:class:`AgentCore` holds what one agent knows of its market and decides what to do about
it; it never waits, publishes or reads a clock: every time is passed in (``now``: the wall
clock of bids and deadlines; ``at``: a monotonic timer, for the dwell and latencies). The
async :class:`~tycoon.agent.agent.Agent` feeds it the bus's events and carries out its
decisions; the simulator (:mod:`tycoon.sim.dynamic`) drives the same core step by step.

A replan is three calls, because reading balances is I/O: :meth:`AgentCore.take_change`
(the market move this replan answers), :meth:`AgentCore.evaluate` (today's quotes, the
new baseline for move detection), then, with the balances read, :meth:`AgentCore.decide`;
a plan carried out is :meth:`AgentCore.adopt`-ed.

A job that runs a bag of tasks gives the core its :class:`~tycoon.agent.tasks.Bag`:
:meth:`AgentCore.seats` says which hosts its tasks may use (planned, and holding our
money), :meth:`AgentCore.task_moves` what to start and kill there.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tycoon.agent.books import Holding
from tycoon.agent.planner import (
    Plan,
    PlannerConfig,
    Quote,
    damped,
    make_plan,
    should_replan,
    switch_or_stay,
)
from tycoon.agent.prediction import Prediction, cushion_budget, predict
from tycoon.agent.tasks import Bag, Move, Seat
from tycoon.bus.envelope import is_finite_number
from tycoon.bus.keys import is_key_of
from tycoon.errors import Rejected

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
    the same cheap host would otherwise herd from host to host (docs/agent.md)."""
    switch_gain: float = 0.1
    """A plan that takes on new hosts must buy this much more than the best plan on the
    hosts already held: a new host costs a transfer, a funding and later a refund."""
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


@dataclass(frozen=True)
class Notice:
    """Something the agent's owner should hear (published as ``agent.warning``)."""

    message: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """The market as a replan sees it: quotes (with our own rates), the planning horizon."""

    quotes: tuple[Quote, ...]
    seconds: float
    """Seconds to plan over: to the deadline less the refund margin."""
    end: float
    """Clock time at which spending should end."""


@dataclass(frozen=True)
class Reading:
    """Our money when a replan decides: balances at hosts, at the bank, paid out so far."""

    held: Mapping[str, int]
    bank_balance: int
    committed_out: int
    """Every funding begun, net of refunds (the journal's exact count)."""
    exact: bool = False
    """Read from the hosts and the bank just now (not from the books)."""


@dataclass(frozen=True)
class Decision:
    """What a replan decided: ``plan`` is None when the current plan stays."""

    plan: Plan | None
    why: str
    dropped: frozenset[str] = frozenset()
    warnings: tuple[Notice, ...] = ()


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


class AgentCore:
    """One agent's market knowledge and replan policy (no I/O, no clock)."""

    def __init__(self, config: AgentConfig, deadline: float, bag: Bag | None = None) -> None:
        self.config = config
        self.bag = bag
        """The job's tasks, if it runs any."""
        self.deadline = deadline
        self.planner_config = PlannerConfig(max_hosts=config.max_hosts,
                                            threshold=config.threshold)
        self.plan: Plan | None = None
        self.quotes: dict[str, Quote] = {}
        self.payees: dict[str, str] = {}
        self.predictions: dict[str, Prediction] = {}
        self.reported: dict[str, tuple[float, float]] = {}
        """Our rate at each host as its allocation stream last reported it, and when."""
        self.baseline: dict[str, float] = {}
        """The others' bid rate at each host when the market was last evaluated."""
        self.switched_at = -math.inf
        """Timer reading when a plan last took on new hosts."""
        self.changed_at: float | None = None
        """Timer reading of the first market move not answered yet."""

    # -- what the market tells -------------------------------------------------------

    def candidates(self, rows: list[Any], *, followed: set[str]) -> int:
        """Take an SLS answer: payees, predictions, and the quotes of hosts whose price
        stream is not ``followed`` (a followed stream is newer). Returns how many rows
        were refused (malformed, or a key that is not the host's)."""
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
                    self.predictions[host] = predict(row["statistics"], self.config.model)
            if host not in self.quotes or host not in followed:
                self.quotes[host] = Quote(host, capacity, price)
        return refused

    def offer(self, host: str, capacity: float, price: float) -> None:
        """Set a host's quote (capacity and total price) without judging it."""
        self.quotes[host] = Quote(host, capacity, price)

    def price(self, host: str, capacity: float | None, price: float | None,
              books: Mapping[str, Holding], now: float, at: float, *,
              own_move: bool = False) -> bool:
        """A price update of ``host``; True when it is a market move worth a replan (then
        ``changed_at`` holds ``at`` of the first unanswered move). An update that arrives
        while our own move there is in flight (``own_move``) carries our new bid before the
        reply tells us of it: it is recorded, not judged."""
        old = self.quotes.get(host)
        if old is None:
            return False
        self.quotes[host] = Quote(host, old.capacity if capacity is None else capacity,
                                  old.price if price is None else price)
        if own_move or not self.moved(host, books, now):
            return False
        if self.changed_at is None:
            self.changed_at = at
        return True

    def bid_reply(self, host: str, price: Any) -> None:
        """Take the host's price from its reply to our bid (a newer word than the stream
        updates dropped while the bid was in flight)."""
        old = self.quotes.get(host)
        if old is not None and isinstance(price, int | float) and math.isfinite(price):
            self.quotes[host] = Quote(host, old.capacity, max(float(price), 0.0))

    def allocation(self, host: str, rate: float, now: float) -> None:
        """The host's own word on our bid rate there."""
        self.reported[host] = (rate, now)

    def moved(self, host: str, books: Mapping[str, Holding], now: float) -> bool:
        """Whether the others' bids at ``host`` moved past the threshold since the last
        evaluation: any way on a host in play, down (cheaper) on any other."""
        others = self.quote(host, books, now).others
        base = self.baseline.get(host)
        if base is None:
            return False
        change = (others - base) / max(base, 1e-9)
        in_play = self.plan is not None and host in self.plan.hosts
        return abs(change) > self.config.threshold if in_play \
            else change < -self.config.threshold

    def own_rate(self, host: str, books: Mapping[str, Holding], now: float) -> float:
        """Our bid rate at ``host``: as its allocation stream or our books (its last reply:
        our balance there, spent evenly until the bid expires) say, whichever is newer."""
        reported = self.reported.get(host)
        holding = books.get(host)
        if reported is not None and (holding is None or reported[1] >= holding.at):
            return reported[0]
        return 0.0 if holding is None else holding.rate(now)

    def quote(self, host: str, books: Mapping[str, Holding], now: float) -> Quote:
        """The last quote of ``host`` with our own rate there as we know it at ``now``."""
        q = self.quotes[host]
        return Quote(host, q.capacity, q.price, own_rate=self.own_rate(host, books, now))

    def followed(self) -> set[str]:
        """Hosts whose price streams to follow: those in play and as many more candidates
        (at least ``WATCHED``), the best capacity for the price first."""
        in_play = set(self.plan.hosts) if self.plan else set()
        others = sorted((h for h in self.quotes if h not in in_play),
                        key=lambda h: -self.quotes[h].capacity / max(self.quotes[h].price, 1e-9))
        return in_play | set(others[:max(WATCHED, len(in_play))])

    # -- the replan ------------------------------------------------------------------

    def take_change(self) -> float | None:
        """The market move this replan answers; one arriving from now on is the next's."""
        changed, self.changed_at = self.changed_at, None
        return changed

    def evaluate(self, books: Mapping[str, Holding], now: float) -> Evaluation:
        """Today's quotes (priced pessimistically with ``probability``); they become the
        baseline that later updates are judged against."""
        fresh = [self.quote(host, books, now) for host in self.quotes]
        self.baseline = {q.host: q.others for q in fresh}
        # Plan over the exact horizon (so the spending rate does not jump as whole seconds
        # tick by); bids are rounded up to whole seconds.
        end = self.deadline - self.config.refund_margin_s
        return Evaluation(tuple(self.pessimistic(q) for q in fresh), end - now, end)

    def decide(self, evaluation: Evaluation, reading: Reading, at: float, *,
               force: bool = False) -> Decision:
        """The plan to carry out now, if any: the best response to ``evaluation`` with the
        money of ``reading``, kept on the hosts held while the dwell runs or a switch gains
        less than ``switch_gain``, and adopted past the hysteresis (or ``force``)."""
        quotes = list(evaluation.quotes)
        seconds = evaluation.seconds
        budget_left = self.config.budget - reading.committed_out
        money = min(budget_left, reading.bank_balance) + sum(reading.held.values())
        warnings: list[Notice] = []
        if reading.exact and reading.bank_balance < budget_left:
            warnings.append(Notice("funds will not last to the deadline",
                                     {"bank_balance": reading.bank_balance,
                                      "budget_left": budget_left}))
        target = make_plan(quotes, money, seconds, self.planner_config)
        if self.plan is not None and target.hosts - self.plan.hosts:
            held_quotes = [q for q in quotes if q.host in self.plan.hosts]
            stay = make_plan(held_quotes, money, seconds, self.planner_config)
            dwelling = at - self.switched_at < self.config.switch_dwell_s
            target = switch_or_stay(target, stay, self.config.switch_gain, dwelling=dwelling)
        go, why = should_replan(self.plan, target, quotes, self.planner_config)
        if not (go or force):
            return Decision(None, why, warnings=tuple(warnings))
        candidate = damped(self.plan, target, quotes, self.planner_config.damping,
                           self.planner_config.min_balance)
        dropped = frozenset(self.plan.hosts - candidate.hosts) if self.plan else frozenset()
        if dropped:
            warnings.append(Notice(f"priced out of {len(dropped)} host(s)",
                                     {"hosts": sorted(dropped)}))
        if self.plan is None or candidate.hosts - self.plan.hosts:
            self.switched_at = at
        return Decision(candidate, why, dropped, tuple(warnings))

    def adopt(self, plan: Plan) -> None:
        """``plan`` is carried out: it is the current plan from now on."""
        self.plan = plan

    # -- tasks -------------------------------------------------------------------------

    def seats(self, books: Mapping[str, Holding], cores: Mapping[str, int],
              now: float) -> dict[str, Seat]:
        """The hosts tasks may run on: in the plan and holding money of ours now, with
        their cores (1 until known) and our planned share there."""
        if self.plan is None:
            return {}
        return {h: Seat(cores.get(h, 1), self.plan.shares.get(h, 0.0))
                for h in sorted(self.plan.hosts)
                if (held := books.get(h)) is not None and held.left(now) > 0}

    def task_moves(self, books: Mapping[str, Holding], cores: Mapping[str, int],
                   now: float) -> list[Move]:
        """The bag's moves for the hosts held now: kills on hosts left, then starts."""
        if self.bag is None:
            return []
        return self.bag.hold(self.seats(books, cores, now), now) + self.bag.place(now)

    @property
    def tasks_finished(self) -> bool:
        """The job runs a bag of tasks and every one is done."""
        return self.bag is not None and self.bag.finished

    def pessimistic(self, quote: Quote) -> Quote:
        """With ``probability`` set: price the others' bids at that quantile of the host's
        price distribution (never below what they bid now)."""
        prediction = self.predictions.get(quote.host)
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
        hosts = [h for h in plan.rates if h in self.predictions]
        extra = cushion_budget([self.predictions[h] for h in hosts],
                               [plan.rates[h] for h in hosts],
                               [plan.shares.get(h, 0.0) for h in hosts],
                               self.config.probability, plan.seconds_left)
        return round(extra) if math.isfinite(extra) else -1
