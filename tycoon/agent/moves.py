"""The allocator's decisions, sans-IO: which host gets a bid, a funding or a refund.

The :class:`~tycoon.agent.allocator.Allocator` carries these moves out (journal, bank,
hosts, one lock per host); what it does is decided here from a plan, its books and the
time passed in. A settlement is decided in two stages because the first stage's refunds
change what the bank can pay: :func:`drops` (refund the hosts the plan left), then
:func:`top_ups` (what each planned host needs to last to the end, and which surpluses to
refund when the bank cannot pay the top-ups otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tycoon.agent.books import Holding
from tycoon.agent.planner import Plan

PARK_S = 365 * 86_400
"""A host dropped from the plan is re-bid to spend its balance over this long (a rate
of almost nothing) until its money is refunded."""


@dataclass(frozen=True)
class Rebid:
    """Bid again where the money is, for ``seconds``: the duration that spends the balance
    at the planned rate."""

    host: str
    seconds: float


@dataclass(frozen=True)
class Fund:
    """The host holds nothing of ours: money first (transfer, funding), then a bid."""

    host: str


@dataclass(frozen=True)
class TopUps:
    """A settlement's second stage: each planned host's balance ``targets``, the top-ups
    ``needs`` (beyond ``slack``), and the ``surplus`` hosts to refund whole (then fund
    afresh) because the bank cannot pay the top-ups otherwise (``short``)."""

    targets: Mapping[str, int]
    needs: Mapping[str, int]
    short: bool
    surplus: tuple[str, ...]


def retarget_order(plan: Plan) -> list[tuple[str, float]]:
    """The plan's hosts and rates, the largest rate first."""
    return sorted(plan.rates.items(), key=lambda kv: -kv[1])


def host_move(host: str, left: int, current_rate: float, rate: float,
              slack: float) -> Rebid | Fund | None:
    """How to bring ``host`` to ``rate``: re-bid the ``left`` balance there when the rate
    moves by more than ``slack`` of it; fund a host where nothing is left."""
    if left <= 0:
        return Fund(host)
    if abs(current_rate - rate) > slack * rate:
        return Rebid(host, left / rate)
    return None


def parks(plan: Plan, books: Mapping[str, Holding], now: float) -> list[str]:
    """Hosts left by ``plan`` whose bid still spends (and is not parked already)."""
    return [h for h, holding in books.items()
            if h not in plan.rates and holding.rate(now) > 0
            and holding.expires - now < PARK_S / 2]


def funding(rate: float, end: float, now: float, left: int, allowance: int | None,
            slack: float) -> int:
    """What to pay a host so that, bid at ``rate``, its balance lasts until ``end``: 0
    when nothing is needed, the allowance is spent, or (money being there) the top-up is
    within ``slack`` of the target."""
    target = math.floor(rate * (end - now))
    need = target - left
    if allowance is not None:
        need = min(need, allowance)
    if need <= 0 or (left > 0 and need <= slack * target):
        return 0
    return need


def drops(plan: Plan, held: Mapping[str, int]) -> list[str]:
    """A settlement's first stage: hosts holding money the plan left, to refund."""
    return [h for h, left in held.items() if left > 0 and h not in plan.rates]


def top_ups(plan: Plan, held: Mapping[str, int], end: float, now: float,
            allowance: int | None, slack: float, refund_slack: float) -> TopUps:
    """A settlement's second stage (see :class:`TopUps`). Surpluses (a host keeping more
    than ``refund_slack`` above its planned balance) pay for the top-ups the bank cannot:
    largest first, each refunded whole."""
    targets = {h: math.floor(r * (end - now)) for h, r in plan.rates.items()}
    needs = {h: t - held.get(h, 0) for h, t in targets.items()
             if t - held.get(h, 0) > slack * t}
    shortfall = sum(needs.values()) - (allowance if allowance is not None else math.inf)
    chosen: list[str] = []
    if shortfall > 0:
        surplus = sorted(((held.get(h, 0) - t, h) for h, t in targets.items()
                          if held.get(h, 0) > t * (1 + refund_slack)), reverse=True)
        freed = 0
        for extra, host in surplus:
            if freed >= shortfall:
                break
            freed += extra
            chosen.append(host)
    return TopUps(targets, needs, shortfall > 0, tuple(chosen))
