"""A strategic-bidder test bench on the pure market core (``tycoon sim strategic``).

One host's :class:`~tycoon.auctioneer.market.Market` (no bus) driven by a simulated clock:
constant rivals bid for the whole horizon, one *player* follows a strategy
(:mod:`tycoon.sim.strategies`), and the market ticks every ``tick`` seconds with every
sandbox using all of its share. The bench measures what the player received
(resource-seconds: ∫ share dt summed over cpu and memory, the resources every bid names)
and what it paid (µcredits it funded minus what refunds gave back), and compares it with an
honest constant-rate bidder who spends the same amount in the same market:

    gain = (received / spent) / (honest received / honest spent)

With the rivals' rates constant, ``x/(x + Y)`` is concave in the player's rate x, so no
schedule of rates that costs ∫x dt beats the constant one: a gain above 1 can only come
from gaming the accounting (see ``docs/auctioneer.md``, *Incentives*).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from tycoon.auctioneer.bidparse import BidSpec, parse_bid
from tycoon.auctioneer.events import RefundDue
from tycoon.auctioneer.market import Market
from tycoon.bank.receipt import make_receipt
from tycoon.bus.keys import Identity
from tycoon.errors import Rejected
from tycoon.money import MICRO
from tycoon.resources import RESOURCES, Capacity, Usage
from tycoon.units import NS

T0_NS = 1_750_000_000 * NS
LIMIT = 1.01
"""A strategy may get at most 1 % more per credit than the honest bidder."""
BOTH = "cpu:1 memory:1"
"""The preferences of every bid on the bench (except the flapping of weights)."""
ROWS = (RESOURCES.index("cpu"), RESOURCES.index("memory"))
CAPACITY = Capacity(cpu=1000, memory=10**9, disk=10**10, net=10**8, cores=1)


@dataclass(frozen=True)
class Setup:
    """A stationary market: the horizon, the tick, the player's budget, the rivals' budgets."""

    horizon_s: float = 600.0
    tick_s: float = 1.0
    budget: int = 1000 * MICRO
    rivals: tuple[int, ...] = (1000 * MICRO, 1000 * MICRO)

    @property
    def tick_ns(self) -> int:
        return round(self.tick_s * NS)

    @property
    def ticks(self) -> int:
        return max(1, round(self.horizon_s / self.tick_s))

    @property
    def horizon_ns(self) -> int:
        return self.ticks * self.tick_ns


def make_setup(horizon_s: float = 600.0, tick_s: float = 1.0, seed: int = 0,
               rivals: int = 2) -> Setup:  # fmt: skip
    """Rivals with budgets drawn from the seed (0.5x to 2x the player's 1,000 credits)."""
    if not (math.isfinite(horizon_s) and math.isfinite(tick_s) and 0 < tick_s <= horizon_s):
        raise Rejected("bad_input", "need 0 < tick <= horizon (seconds)")
    if not 1 <= rivals <= 64:
        raise Rejected("bad_input", "rivals must be between 1 and 64")
    if horizon_s / tick_s > 100_000:
        raise Rejected("bad_input", "at most 100,000 ticks per run")
    rng = np.random.default_rng(seed)
    budget = 1000 * MICRO
    spread = rng.uniform(0.5, 2.0, size=rivals)
    return Setup(horizon_s, tick_s, budget, tuple(int(budget * f) for f in spread))


class Keys:
    """Identities reused across runs (generating and signing is the slow part)."""

    def __init__(self) -> None:
        self.bank = Identity.generate()
        self.host = Identity.generate()
        self._users: list[str] = []

    def user(self, index: int) -> str:
        while len(self._users) <= index:
            self._users.append(Identity.generate().public_key)
        return self._users[index]


@lru_cache(maxsize=4096)
def _spec(text: str) -> BidSpec:
    return parse_bid(text, now_ns=T0_NS)


class Sim:
    """One run: the market, the clock, the rivals' bids and what the player got and paid."""

    def __init__(
        self, setup: Setup, keys: Keys, early: Callable[[Sim], None] | None = None
    ) -> None:
        self.setup = setup
        self.keys = keys
        self.market = Market(
            host_key=keys.host.public_key, bank_key=keys.bank.public_key, capacity=CAPACITY,
            name="bench", tick_s=setup.tick_s,
        )  # fmt: skip
        self.now_ns = T0_NS
        self.end_ns = T0_NS + setup.horizon_ns
        self.players: list[str] = []
        self.received = 0.0
        self.funded = 0
        self.refunded = 0
        self.rejected: list[str] = []
        self._held = 0.0
        self._shares: dict[str, np.ndarray] = {}  # every account's shares now
        self._used: dict[str, np.ndarray] = {}  # ∫ share dt since the last reading
        self._read_ns = self.now_ns
        self._transfers = 0
        if early is not None:
            early(self)  # the player's moves an instant before the rivals bid
        for i, budget in enumerate(setup.rivals):
            rival = keys.user(1000 + i)
            self.fund(rival, budget)
            self.bid(rival, f"{self.until_end()} {BOTH}")
        self.rival_price = self.prices()

    # ---------------------------------------------------------------- the player's moves

    def player(self, index: int = 0) -> str:
        """The key of the player's ``index``-th account."""
        key = self.keys.user(index)
        if key not in self.players:
            self.players.append(key)
        return key

    def fund(self, account: str, amount: int) -> None:
        """Pay ``amount`` to the host from ``account`` and present the receipt."""
        self._transfers += 1
        raw = make_receipt(
            self.keys.bank, transfer_id=f"bench-{self._transfers}", payer=account,
            payee=self.keys.host.public_key, amount=amount, memo="", seq=self._transfers,
            settled_ns=self.now_ns,
        )  # fmt: skip
        self.market.fund(raw, self.now_ns)
        if account in self.players:
            self.funded += amount
        self._observe()

    def bid(self, account: str, text: str) -> bool:
        """Place a bid; False (and the code recorded) if the market refuses it."""
        try:
            self.market.place_bid(account, _spec(text), self.now_ns)
        except Rejected as refused:
            self.rejected.append(refused.code)
            return False
        finally:
            self._observe()
        return True

    def refund(self, account: str) -> int:
        """Refund the account; the bank pays the refund back at once. The amount returned."""
        try:
            events = self.market.refund(account, self.now_ns)
        except Rejected as refused:
            self.rejected.append(refused.code)
            self._observe()
            return 0
        paid = 0
        for event in events:
            if not isinstance(event, RefundDue):
                continue
            r = event.refund
            self._transfers += 1
            raw = make_receipt(
                self.keys.bank, transfer_id=r.refund_id, payer=self.keys.host.public_key,
                payee=r.account, amount=r.amount, memo="refund", seq=self._transfers,
                settled_ns=self.now_ns,
            )  # fmt: skip
            self.market.refund_paid(r.refund_id, raw)
            paid += r.amount
        if account in self.players:
            self.refunded += paid
        self._observe()
        return paid

    def until_end(self) -> str:
        """A bid duration that expires at the end of the horizon."""
        return f"{max(self.end_ns - self.now_ns, 1) / NS:.9f}s"

    def prices(self) -> np.ndarray:
        """The price feed: Σ bid rates per resource (µcredits/s)."""
        return np.asarray(self.market.rates.sum(axis=1), dtype=np.float64)

    # ---------------------------------------------------------------- the clock

    def _observe(self) -> None:
        """Read the shares the core computed (what the driver would apply until the next call)."""
        self._shares = {a: np.array([s.cpu, s.memory, s.disk, s.net])
                        for a, s in self.market.shares_map().items()}  # fmt: skip
        self._held = sum(float(self._shares[a][list(ROWS)].sum()) for a in self.players
                         if a in self._shares)  # fmt: skip

    def advance(self, now_ns: int) -> None:
        """Move the clock; every sandbox uses all of its share meanwhile."""
        if now_ns > self.now_ns:
            dt = (now_ns - self.now_ns) / NS
            self.received += self._held * dt
            for account, share in self._shares.items():
                used = self._used.get(account)
                self._used[account] = share * dt if used is None else used + share * dt
            self.now_ns = now_ns

    def tick(self) -> None:
        """A usage reading: each sandbox's mean use since the previous one (= its mean share)."""
        span = (self.now_ns - self._read_ns) / NS
        usage = {a: Usage(*(u / span).tolist()) for a, u in self._used.items()} if span else {}
        self._used, self._read_ns = {}, self.now_ns
        self.market.tick(self.now_ns, usage)
        self._observe()

    def spent(self) -> int:
        """What the player paid so far: funded − refunded − what its accounts still hold."""
        held = sum(self.market.accounts[a].balance for a in self.players
                   if a in self.market.accounts)  # fmt: skip
        return self.funded - self.refunded - held


class Strategy:
    """A player: acts at the start and at the moments it names (ns since the start)."""

    name = "strategy"
    about = ""

    def early(self, sim: Sim) -> None:
        """Moves at time 0 before the rivals bid (most players have none)."""

    def start(self, sim: Sim) -> None:
        """Fund and bid at time 0, after the rivals."""

    def moments(self, setup: Setup) -> list[tuple[int, str]]:
        """When to act, as (ns since the start, label), in (0, horizon)."""
        return []

    def act(self, sim: Sim, label: str) -> None:
        """One move at one of the moments."""


@dataclass(frozen=True)
class Outcome:
    """What one run gave the player: resource-seconds, µcredits spent, refusals, a trace."""

    name: str
    received: float
    spent: int
    rejected: tuple[str, ...]
    conserved: bool = True
    """``Market.conserved()`` held after every tick and at the end."""
    trace: tuple[tuple[float, float, float], ...] = field(default=(), repr=False)
    """(time s, µcredits spent, resource-seconds) after every tick."""


def run(strategy: Strategy, setup: Setup, keys: Keys | None = None) -> Outcome:
    """Play ``strategy`` for the horizon; refund every account of the player at the end."""
    sim = Sim(setup, keys or Keys(), strategy.early)
    strategy.start(sim)
    tick = setup.tick_ns
    events = [(k * tick, 0, "tick") for k in range(1, setup.ticks + 1)]
    events += [(t, 1, label) for t, label in strategy.moments(setup) if 0 < t < setup.horizon_ns]
    events.sort(key=lambda e: (e[0], e[1]))
    trace = []
    conserved = True
    for t, _, label in events:
        sim.advance(T0_NS + t)
        if label == "tick":
            sim.tick()
            conserved = conserved and sim.market.conserved()
            trace.append((t / NS, sim.spent() / MICRO, sim.received))
        else:
            strategy.act(sim, label)
    sim.advance(sim.end_ns)
    for account in list(sim.players):
        if sim.market.accounts.get(account) and sim.market.accounts[account].balance > 0:
            sim.refund(account)
    conserved = conserved and sim.market.conserved()
    return Outcome(
        strategy.name, sim.received, sim.spent(), tuple(sim.rejected), conserved, tuple(trace)
    )


def gain(outcome: Outcome, honest: Outcome) -> float:
    """Resource-seconds per µcredit against the honest bidder's (spends of 0 count as 1)."""
    if outcome.received <= 0:
        return 0.0
    if honest.received <= 0:
        return math.inf
    mine = outcome.received / max(outcome.spent, 1)
    theirs = honest.received / max(honest.spent, 1)
    return mine / theirs


def bench(
    setup: Setup, strategies: Sequence[Strategy], honest: Callable[[int], Strategy]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run every strategy and an honest bidder with the same spend; rows and plot data."""
    keys = Keys()
    baselines: dict[int, Outcome] = {}
    rows, traces = [], {}
    price = Sim(setup, keys).rival_price
    for strategy in strategies:
        out = run(strategy, setup, keys)
        spend = max(out.spent, 1)
        if spend not in baselines:
            baselines[spend] = run(honest(spend), setup, keys)
        base = baselines[spend]
        ratio = gain(out, base)
        rows.append({
            "name": strategy.name,
            "about": strategy.about,
            "resource_seconds": round(out.received, 3),
            "spent": out.spent,
            "honest_resource_seconds": round(base.received, 3),
            "honest_spent": base.spent,
            "gain": ratio if math.isfinite(ratio) else None,
            "rejected": len(out.rejected),
            "ahead": not ratio <= LIMIT,
            "conserved": out.conserved and base.conserved,
        })  # fmt: skip
        traces[strategy.name] = out.trace
    honest_points = sorted((o.spent / MICRO, o.received) for o in baselines.values())
    plot = {"traces": traces, "honest": honest_points, "rival_price": price.tolist(),
            "horizon_s": setup.horizon_ns / NS}  # fmt: skip
    return rows, plot


def honest_curve(plot: dict[str, Any], spends: np.ndarray) -> np.ndarray:
    """Resource-seconds of a constant-rate bidder spending ``spends`` credits (theory)."""
    horizon = plot["horizon_s"]
    price = np.asarray(plot["rival_price"])[list(ROWS)]
    rate = spends[:, None] * MICRO / horizon / len(ROWS)
    return (horizon * rate / (rate + price[None, :])).sum(axis=1)
