"""The agent's planning core (sans-IO): market quotes in, a funding plan out.

Given what each host charges (the sum of everyone's bid rates) and what we bid there
ourselves, the planner solves Best Response for the rate we can afford until the deadline
and turns the rates into host-account balances: a bid spends its balance evenly until it
expires, so a balance of ``x_j · T`` with a bid lasting ``T`` seconds bids at rate ``x_j``.

Hysteresis: a new plan replaces the current one only when it buys noticeably more
utility under today's prices (``threshold``), when a host in play disappeared, or when
the spending rate drifted by more than the threshold. Noise in prices therefore moves
no money.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from tycoon.agent.best_response import best_response, shares
from tycoon.money import format_rate


@dataclass(frozen=True)
class Quote:
    """What the agent knows of one host for the resource it buys."""

    host: str
    capacity: float
    price: float
    """Σ of every bid rate on the resource (micro-credits/s), ours included."""
    own_rate: float = 0.0
    preference: float = 1.0

    @property
    def others(self) -> float:
        return max(0.0, self.price - self.own_rate)

    @property
    def worth(self) -> float:
        return self.capacity * self.preference


@dataclass(frozen=True)
class Plan:
    """Target bid rates and host-account balances, and what they are expected to buy."""

    rates: Mapping[str, float]
    balances: Mapping[str, int]
    shares: Mapping[str, float]
    utility: float
    spend_rate: float
    seconds_left: float
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(h for h, b in self.balances.items() if b > 0)

    def summary(self) -> str:
        top = sorted(self.shares.items(), key=lambda kv: -kv[1])[:3]
        parts = " ".join(f"{h[:6]}={s:.0%}" for h, s in top)
        return (f"{len(self.hosts)} hosts, {format_rate(self.spend_rate)} credits/s,"
                f" utility {self.utility:.4g}; {parts}")


@dataclass(frozen=True)
class PlannerConfig:
    max_hosts: int | None = None
    threshold: float = 0.05
    """Relative utility gain (or spending-rate drift) that justifies moving money."""
    reserve_fraction: float = 0.01
    """A host with no other bidder is priced as if someone bid this fraction of our rate on
    it (split over such hosts): any bid wins it whole today, but not tomorrow."""
    min_balance: int = 1_000
    """Smallest host-account balance worth funding (micro-credits)."""
    damping: float = 0.5
    """Fraction of the way to the new best response taken per replan (1 = all the way)."""


def make_plan(
    quotes: list[Quote], money_left: int, seconds_left: float, config: PlannerConfig
) -> Plan:
    """The best split of ``money_left`` (micro-credits) over ``quotes`` until the deadline."""
    if not quotes or money_left <= 0 or seconds_left <= 0:
        return Plan({}, {}, {}, 0.0, 0.0, max(seconds_left, 0.0), ("nothing to spend",))
    rate = money_left / seconds_left
    worth = np.array([q.worth for q in quotes], dtype=float)
    others = np.array([q.others for q in quotes], dtype=float)
    # Hosts (nearly) nobody bids on are priced as if someone bid a small reserve there.
    free = others < config.reserve_fraction * rate / len(quotes)
    if free.any():
        others[free] = config.reserve_fraction * rate / int(free.sum())
    usable = worth > 0
    if not usable.any():
        return Plan({}, {}, {}, 0.0, 0.0, seconds_left, ("no host is worth anything",))
    solution = best_response(rate, np.where(usable, worth, 0.0), others,
                             max_hosts=config.max_hosts)
    rates, balances, expected = {}, {}, {}
    budget_left = money_left
    for index in np.argsort(-solution.bids):
        x = float(solution.bids[index])
        balance = min(budget_left, math.floor(x * seconds_left))
        if balance < config.min_balance:
            continue
        host = quotes[int(index)].host
        rates[host] = balance / seconds_left
        balances[host] = balance
        budget_left -= balance
    x_all = np.array([rates.get(q.host, 0.0) for q in quotes])
    share = shares(x_all, others)
    for q, s in zip(quotes, share, strict=True):
        if q.host in rates:
            expected[q.host] = float(s)
    value = float(np.sum(worth * share))
    return Plan(rates, balances, expected, value, sum(rates.values()), seconds_left)


def switch_or_stay(target: Plan, stay: Plan, gain: float, *, dwelling: bool = False) -> Plan:
    """``target`` (which takes on new hosts) if it buys more than ``gain`` over ``stay``
    (the best plan on the hosts already held) and no dwell is running, else ``stay``."""
    if dwelling or target.utility <= stay.utility * (1 + gain):
        return stay
    return target


def damped(current: Plan | None, target: Plan, quotes: list[Quote], alpha: float,
           min_balance: int) -> Plan:
    """Move only ``alpha`` of the way up from ``current`` to ``target``.

    Agents that best-respond at the same moment to the same prices overshoot together
    and oscillate; moving part of the way is the classic damping that lets simultaneous
    best responses settle (the simulator uses the same idea, see docs/simulator.md).
    """
    if current is None or alpha >= 1.0:
        return target
    seconds = target.seconds_left
    rates: dict[str, float] = {}
    balances: dict[str, int] = {}
    budget = round(target.spend_rate * seconds)
    for host in sorted(set(current.rates) | set(target.rates),
                       key=lambda h: -target.rates.get(h, 0.0)):
        now, goal = current.rates.get(host, 0.0), target.rates.get(host, 0.0)
        # Only increases are damped: agents overshoot by all piling onto the same host,
        # while leaving a host at once is safe (and moving money back in halves would
        # cost a refund each time).
        rate = goal if goal <= now else (1 - alpha) * now + alpha * goal
        balance = min(budget, math.floor(rate * seconds))
        if balance < min_balance:
            continue
        rates[host], balances[host] = balance / seconds, balance
        budget -= balance
    by_host = {q.host: q for q in quotes}
    expected = {h: r / (r + by_host[h].others) if h in by_host and r + by_host[h].others > 0
                else 0.0 for h, r in rates.items()}
    return Plan(rates, balances, expected, utility_of(rates, quotes), sum(rates.values()),
                seconds, target.reasons)


def utility_of(rates: Mapping[str, float], quotes: list[Quote]) -> float:
    """What bidding ``rates`` buys against the others' current bids."""
    total = 0.0
    for q in quotes:
        x = rates.get(q.host, 0.0)
        if x > 0:
            total += q.worth * x / (x + q.others)
    return total


def should_replan(
    current: Plan | None, candidate: Plan, quotes: list[Quote], config: PlannerConfig
) -> tuple[bool, str]:
    """Whether ``candidate`` is worth the money moves that replacing ``current`` costs."""
    if current is None or not current.hosts:
        return bool(candidate.hosts), "first plan"
    live = {q.host for q in quotes}
    gone = current.hosts - live
    if gone:
        return True, f"{len(gone)} host(s) in play disappeared"
    now_value = utility_of(current.rates, quotes)
    if candidate.utility > now_value * (1 + config.threshold):
        gain = candidate.utility / now_value - 1 if now_value > 0 else math.inf
        return True, f"utility +{gain:.1%} under current prices"
    if current.spend_rate > 0:
        drift = abs(candidate.spend_rate / current.spend_rate - 1)
        if drift > config.threshold:
            return True, f"spending rate drifted {drift:.1%}"
    return False, "within hysteresis"
