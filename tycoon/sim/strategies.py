"""The players of the strategic bench: an honest bidder and the accounting games of issue 17.

Each has the same budget as the honest bidder (the setup's ``budget``) unless it chooses to
spend less; "just before" a tick is 99 % of the way to it, "just after" 1 %.
"""

from __future__ import annotations

from tycoon.sim.strategic import BOTH, Setup, Sim, Strategy
from tycoon.units import NS

EARLY, LATE = 0.01, 0.99


def around_ticks(setup: Setup) -> list[tuple[int, str]]:
    """Just after each tick ("after") and just before the next ("before")."""
    tick = setup.tick_ns
    out = []
    for k in range(setup.ticks):
        out.append((k * tick + round(EARLY * tick), "after"))
        out.append((k * tick + round(LATE * tick), "before"))
    return out


def every(setup: Setup, fraction: float) -> list[tuple[int, str]]:
    """Every ``fraction`` of a tick (not a divisor of it: the phase drifts across ticks)."""
    step = round(fraction * setup.tick_ns)
    return [(t, "flip") for t in range(step, setup.horizon_ns, step)]


def reserve(sim: Sim, account: str, duration: str, share: float) -> bool:
    """Bid with a minimum of ``share`` of cpu and memory; if refused, the same without it."""
    text = f"{duration} cpu:1,{share:.6f},1 memory:1,{share:.6f},1"
    return sim.bid(account, text) or sim.bid(account, f"{duration} {BOTH}")


class Honest(Strategy):
    """One bid for the whole horizon."""

    name = "honest"
    about = "one bid for the whole horizon"

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget

    def start(self, sim: Sim) -> None:
        me = sim.player()
        sim.fund(me, self.budget if self.budget is not None else sim.setup.budget)
        sim.bid(me, f"{sim.until_end()} {BOTH}")


class Switch(Strategy):
    """Hold one bid between ticks and switch to another just before each tick."""

    def __init__(self, name: str, between: str, at_tick: str) -> None:
        self.name = name
        self.between, self.at_tick = between, at_tick
        self.about = f"{between} bid between ticks, {at_tick} just before each"

    def start(self, sim: Sim) -> None:
        me = sim.player()
        sim.fund(me, sim.setup.budget)
        sim.bid(me, f"{self.between} {BOTH}")

    def moments(self, setup: Setup) -> list[tuple[int, str]]:
        return around_ticks(setup)

    def act(self, sim: Sim, label: str) -> None:
        duration = self.at_tick if label == "before" else self.between
        sim.bid(sim.player(), f"{duration} {BOTH}")


class ReserveTiny(Strategy):
    """A large minimum bought with a tiny budget."""

    name = "reserve-tiny"
    about = "min 0.9 for the horizon funded with 1/1000 of the budget"

    def start(self, sim: Sim) -> None:
        me = sim.player()
        sim.fund(me, max(1, sim.setup.budget // 1000))
        reserve(sim, me, sim.until_end(), 0.9)


class ReservePriced(Strategy):
    """A minimum whose rate just covers 'minimum x the others' price'."""

    name = "reserve-priced"
    about = "min = own rate / (1.01 x the others' price): above the proportional share"

    def start(self, sim: Sim) -> None:
        me = sim.player()
        sim.fund(me, sim.setup.budget)
        rate = sim.setup.budget / 2 / (sim.setup.horizon_ns / NS)  # per resource
        share = min(0.9, rate / (1.01 * float(sim.rival_price[:2].max())))
        reserve(sim, me, sim.until_end(), share)


class ReserveFirst(Strategy):
    """A large minimum with a small budget, placed while nobody else bids (an instant before
    the rivals): priced against an empty host, it then holds against them."""

    name = "reserve-first"
    about = "min 0.9 with 1 % of the budget, an instant before the rivals bid"

    def early(self, sim: Sim) -> None:
        me = sim.player()
        sim.fund(me, max(1, sim.setup.budget // 100))
        reserve(sim, me, sim.until_end(), 0.9)


class ReserveToggle(Strategy):
    """The honest bid's terms, with a minimum of 0.9 either between ticks or just before."""

    def __init__(self, name: str, *, between: bool) -> None:
        self.name = name
        self.between = between
        where = "between ticks, dropped just before each" if between else "just before ticks"
        self.about = f"honest terms plus min 0.9 {where}"

    def start(self, sim: Sim) -> None:
        me = sim.player()
        sim.fund(me, sim.setup.budget)
        self._bid(sim, self.between)

    def moments(self, setup: Setup) -> list[tuple[int, str]]:
        return around_ticks(setup)

    def act(self, sim: Sim, label: str) -> None:
        self._bid(sim, (label == "after") == self.between)

    def _bid(self, sim: Sim, with_min: bool) -> None:
        if with_min:
            reserve(sim, sim.player(), sim.until_end(), 0.9)
        else:
            sim.bid(sim.player(), f"{sim.until_end()} {BOTH}")


class ReserveThenSplit(Strategy):
    """Reserve with half the budget at exactly the admission price, then bid the other half
    from a second account: the reservation was priced against the others before the second
    bid, which now dilutes only the rivals."""

    name = "reserve-then-split"
    about = "account A: min at the price of admission (half the budget); then B bids the rest"

    def start(self, sim: Sim) -> None:
        first, second = sim.player(0), sim.player(1)
        half = sim.setup.budget // 2
        sim.fund(first, half)
        rate = half / 2 / (sim.setup.horizon_ns / NS)  # per resource
        q = rate / (1.001 * float(sim.rival_price[:2].max()))  # 0.1 % above lo/(1-lo)·others
        reserve(sim, first, sim.until_end(), q / (1 + q))
        sim.fund(second, sim.setup.budget - half)
        sim.bid(second, f"{sim.until_end()} {BOTH}")


class Split(Strategy):
    """One budget over several accounts (keys), each bidding honestly."""

    def __init__(self, accounts: int = 8) -> None:
        self.accounts = accounts
        self.name = f"split-{accounts}"
        self.about = f"the budget over {accounts} accounts, each one honest bid"

    def start(self, sim: Sim) -> None:
        for i in range(self.accounts):
            key = sim.player(i)
            sim.fund(key, sim.setup.budget // self.accounts)
            sim.bid(key, f"{sim.until_end()} {BOTH}")


class Flap(Strategy):
    """Re-bid every 0.3 of a tick, alternating two bids."""

    def __init__(self, name: str, first: str, second: str, start_bid: str) -> None:
        self.name, self.first, self.second, self.start_bid = name, first, second, start_bid
        self.about = f"every 0.3 tick alternate '{first}' / '{second}'"
        self._flip = False

    def start(self, sim: Sim) -> None:
        me = sim.player()
        sim.fund(me, sim.setup.budget)
        sim.bid(me, self.start_bid.replace("END", sim.until_end()))
        self._flip = False

    def moments(self, setup: Setup) -> list[tuple[int, str]]:
        return every(setup, 0.3)

    def act(self, sim: Sim, label: str) -> None:
        self._flip = not self._flip
        sim.bid(sim.player(), self.first if self._flip else self.second)


class ExpiryTail(Strategy):
    """Just after each tick, fund one tick's worth and bid for 2 % of a tick: the bid's
    money is spent by its expiry, but its share stays until the market next recomputes."""

    name = "expiry-tail"
    about = "fund a tick's worth and bid for 0.02 tick just after each tick"

    def moments(self, setup: Setup) -> list[tuple[int, str]]:
        return [(t, label) for t, label in around_ticks(setup) if label == "after"]

    def act(self, sim: Sim, label: str) -> None:
        me = sim.player()
        sim.fund(me, sim.setup.budget // sim.setup.ticks)
        sim.bid(me, f"{0.02 * sim.setup.tick_s:.9f}s {BOTH}")


class RefundCycle(Strategy):
    """Refund just before each tick, fund again (what the refund paid back) just after."""

    name = "refund-cycle"
    about = "refund just before each tick, re-fund and re-bid just after"

    def __init__(self) -> None:
        self.held = 0

    def start(self, sim: Sim) -> None:
        me = sim.player()
        sim.fund(me, sim.setup.budget)
        sim.bid(me, f"{sim.until_end()} {BOTH}")
        self.held = 0

    def moments(self, setup: Setup) -> list[tuple[int, str]]:
        return around_ticks(setup)

    def act(self, sim: Sim, label: str) -> None:
        me = sim.player()
        if label == "before":
            self.held += sim.refund(me)
        elif self.held:
            sim.fund(me, self.held)
            self.held = 0
            sim.bid(me, f"{sim.until_end()} {BOTH}")


def all_strategies() -> list[Strategy]:
    """Every player of the bench, the honest bidder first."""
    return [
        Honest(),
        Switch("timing-long-at-tick", "10s", "1h"),
        Switch("timing-short-at-tick", "1h", "10s"),
        ReserveTiny(),
        ReservePriced(),
        ReserveFirst(),
        ReserveToggle("reserve-between-ticks", between=True),
        ReserveToggle("reserve-at-ticks", between=False),
        Split(8),
        ReserveThenSplit(),
        Flap("flap-durations", f"1h {BOTH}", f"10s {BOTH}", f"10s {BOTH}"),
        Flap("flap-weights", "0 cpu:3 memory:1", "0 cpu:1 memory:3", f"END {BOTH}"),
        RefundCycle(),
        ExpiryTail(),
    ]
