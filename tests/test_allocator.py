"""The allocator, rates first: against in-memory hosts and bank (pure, no server).

The fakes keep the rules that matter here: a bid spends its balance evenly until it
expires (so its rate is balance / time left), a receipt is redeemed once, a refund
returns the whole balance to the bank and ends the bid, a transfer id settles once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tycoon.agent.allocator import MIN_DURATION_S, PARK_S, Allocator
from tycoon.agent.journal import Journal
from tycoon.agent.planner import Plan
from tycoon.errors import Rejected
from tycoon.messages.market import (
    HostAccountReply,
    HostBidReply,
    HostFundReply,
    HostRefundReply,
    HostStatusReply,
)
from tycoon.units import NS


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class FakeReceipt:
    def __init__(self, transfer_id: str, amount: int) -> None:
        self.raw = f"{transfer_id}|{amount}".encode()


class FakeBank:
    def __init__(self, balance: int) -> None:
        self.balance = balance
        self.settled: dict[str, FakeReceipt] = {}
        self.entries: list[dict[str, Any]] = []
        self.down = False

    async def transfer(self, payee: str, amount: int, *, transfer_id: str,
                       memo: str = "") -> FakeReceipt:
        if self.down:
            raise Rejected("unavailable", "the bank is down")
        if transfer_id in self.settled:
            return self.settled[transfer_id]
        if amount > self.balance:
            raise Rejected("overdraft", "not enough")
        self.balance -= amount
        self.settled[transfer_id] = FakeReceipt(transfer_id, amount)
        self.entries.append({"kind": "transfer", "amount": -amount, "counterparty": payee,
                             "id": transfer_id, "receipt": self.settled[transfer_id].raw})
        return self.settled[transfer_id]

    def pay_us(self, payer: str, amount: int, transfer_id: str) -> None:
        """A payment to the agent (a host refunding on its own)."""
        self.balance += amount
        self.entries.append({"kind": "transfer", "amount": amount, "counterparty": payer,
                             "id": transfer_id, "receipt": b"r"})

    async def history(self, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        if self.down:
            raise Rejected("unavailable", "the bank is down")
        return self.entries[offset:offset + limit]


class FakeHost:
    def __init__(self, clock: Clock, bank: FakeBank) -> None:
        self.clock, self.bank = clock, bank
        self.balance, self.expires, self.at = 0, 0.0, clock()
        self.redeemed: set[str] = set()
        self.durations: list[int] = []
        self.calls = 0
        self.key = ""
        self.refunds = 0

    def _spend(self) -> None:
        now = self.clock()
        if self.expires > self.at:
            end = min(now, self.expires)
            self.balance -= int(self.balance * (end - self.at) / (self.expires - self.at))
        self.at = now

    def rate(self) -> float:
        self._spend()
        return self.balance / (self.expires - self.clock()) if self.expires > self.clock() else 0.0

    async def account(self) -> dict[str, Any]:
        self._spend()
        return HostAccountReply(
            "agent", True, self.balance, 0, 0, 0, str(self.balance),
            bid={"expires_ns": int(self.expires * NS)} if self.expires else None).to_body()

    async def fund(self, receipt: bytes) -> dict[str, Any]:
        self.calls += 1
        transfer_id, amount = receipt.decode().split("|")
        if transfer_id in self.redeemed:
            raise Rejected("already_redeemed", transfer_id)
        self._spend()
        self.redeemed.add(transfer_id)
        self.balance += int(amount)
        return HostFundReply("agent", transfer_id, int(amount), self.balance).to_body()

    async def bid(self, spec: str, duration: str) -> dict[str, Any]:
        self.calls += 1
        self._spend()
        seconds = int(duration.removesuffix("s"))
        self.durations.append(seconds)
        self.expires = self.clock() + seconds
        return HostBidReply("agent", spec, int(self.expires * NS), {"balance": self.balance},
                            {"cpu": 1.0}).to_body()

    async def refund(self) -> dict[str, Any]:
        self.calls += 1
        self._spend()
        amount, self.balance, self.expires = self.balance, 0, 0.0
        if not amount:
            raise Rejected("no_funds", "the host account holds nothing to refund")
        self.refunds += 1
        self.bank.pay_us(self.key, amount, f"refund-{self.key}-{self.refunds}")
        return HostRefundReply("agent", [{"refund_id": f"refund-{self.key}-{self.refunds}",
                                          "amount": amount}], 0).to_body()

    async def status(self) -> dict[str, Any]:
        self._spend()
        account = HostAccountReply("agent", True, self.balance, 0, 0, 0, str(self.balance),
                                   pending_refunds=[])
        return HostStatusReply("h", "h", "simulated", {}, 1, 0, 0, 0, 0, self.balance, 0,
                               0.0, 0, 0.0, account=account.to_body()).to_body()


class Market:
    def __init__(self, tmp_path: Path, bank_balance: int, hosts: int = 3) -> None:
        self.clock = Clock()
        self.bank = FakeBank(bank_balance)
        self.hosts = {f"h{i}": FakeHost(self.clock, self.bank) for i in range(hosts)}
        self.payees = {h: f"key-{h}" for h in self.hosts}
        for h, host in self.hosts.items():
            host.key = self.payees[h]
        self.journal = Journal(tmp_path / "journal.db")
        self.allocator = Allocator("agent", self.bank, self.hosts.__getitem__,  # type: ignore[arg-type]
                                   self.journal, clock=self.clock)
        self.allocator.bank_balance = bank_balance

    def money(self) -> int:
        """Everything: the bank, the host accounts, and what hosts spent (earned)."""
        return self.bank.balance + sum(h.balance for h in self.hosts.values())


def plan(rates: dict[str, float], seconds: float) -> Plan:
    return Plan(rates, {h: int(r * seconds) for h, r in rates.items()}, {}, 0.0,
                sum(rates.values()), seconds)


async def start(m: Market, rates: dict[str, float], horizon: float = 1_000.0) -> float:
    end = m.clock() + horizon
    p = plan(rates, horizon)
    outcome = await m.allocator.retarget(p, 1, m.payees, end, budget=10**9)
    await m.allocator.settle(p, 1, m.payees, end, budget=10**9, outcome=outcome)
    return end


async def test_first_plan_funds_and_bids_every_host_to_the_end(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**6)
    end = await start(m, {"h0": 100.0, "h1": 50.0})
    assert m.hosts["h0"].balance == 100_000 and m.hosts["h1"].balance == 50_000
    assert m.hosts["h0"].durations == [1_000] and m.hosts["h1"].durations == [1_000]
    assert m.hosts["h0"].rate() == pytest.approx(100.0)
    assert end == m.clock() + 1_000
    assert m.money() == 10**6


async def test_bids_in_flight_are_marked_and_their_replies_reported(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**6)
    seen: list[set[str]] = []
    replies: list[tuple[str, HostBidReply]] = []
    for host in m.hosts.values():
        bid = host.bid

        async def marked(spec: str, duration: str, bid: Any = bid) -> dict[str, Any]:
            seen.append(set(m.allocator.bidding))
            return await bid(spec, duration)

        host.bid = marked  # type: ignore[method-assign]
    m.allocator.on_bid = lambda host, reply: replies.append((host, reply))
    await start(m, {"h0": 100.0, "h1": 50.0})
    assert seen and all(s <= {"h0", "h1"} and s for s in seen)
    assert sorted(h for h, _ in replies) == ["h0", "h1"]
    assert all(reply.expires_ns > 0 and reply.prices == {"cpu": 1.0} for _, reply in replies)
    assert not m.allocator.bidding  # nothing in flight once done


async def test_retarget_changes_rates_with_bids_alone(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**6)
    end = await start(m, {"h0": 100.0, "h1": 100.0})
    m.clock.now += 100
    transfers = len(m.bank.settled)
    outcome = await m.allocator.retarget(plan({"h0": 200.0, "h1": 50.0}, 900), 2, m.payees,
                                         end)
    assert len(m.bank.settled) == transfers  # no money moved
    assert set(outcome.bids) == {"h0", "h1"} and not outcome.funded
    assert m.hosts["h0"].rate() == pytest.approx(200.0, rel=0.01)
    assert m.hosts["h1"].rate() == pytest.approx(50.0, rel=0.01)


async def test_small_moves_wait_for_settle_and_dropped_hosts_are_parked(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**6)
    end = await start(m, {"h0": 100.0, "h1": 100.0, "h2": 100.0})
    calls = {h: host.calls for h, host in m.hosts.items()}
    # h0 +20 % (under fast_slack): not now; h1 dropped: parked; h2 doubled: now.
    outcome = await m.allocator.retarget(plan({"h0": 120.0, "h2": 200.0}, 1_000), 2, m.payees,
                                         end)
    assert set(outcome.bids) == {"h1", "h2"}
    assert m.hosts["h0"].calls == calls["h0"]
    assert m.hosts["h1"].durations[-1] == PARK_S and m.hosts["h1"].rate() < 0.01
    settled = await m.allocator.settle(plan({"h0": 120.0, "h2": 200.0}, 1_000), 2, m.payees,
                                       end, budget=10**9)
    assert settled.refunded == {"h1": 100_000} and m.hosts["h1"].balance == 0
    for host, rate in (("h0", 120.0), ("h2", 200.0)):
        assert m.hosts[host].rate() == pytest.approx(rate, rel=0.02)
        assert m.hosts[host].expires == pytest.approx(end, abs=1)
    assert m.money() == 10**6


async def test_the_plans_bids_are_placed_before_dropped_hosts_are_parked(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**6, hosts=4)
    end = await start(m, {"h0": 100.0, "h1": 100.0, "h2": 100.0, "h3": 100.0})
    events: list[tuple[float, str]] = []
    for name, host in m.hosts.items():
        bid = host.bid

        async def logged(spec: str, duration: str, bid: Any = bid, name: str = name) -> Any:
            await asyncio.sleep(0)  # the bids of one phase are in flight together
            events.append((time.perf_counter(), name))
            return await bid(spec, duration)

        host.bid = logged  # type: ignore[method-assign]
    outcome = await m.allocator.retarget(plan({"h0": 300.0, "h1": 300.0}, 1_000), 2,
                                         m.payees, end)
    assert outcome.placed_at is not None
    events = sorted([*events, (outcome.placed_at, "placed")])
    names = [name for _, name in events]
    assert names[:2] == ["h0", "h1"] or names[:2] == ["h1", "h0"]
    assert names[2] == "placed" and sorted(names[3:]) == ["h2", "h3"]
    assert set(outcome.bids) == {"h0", "h1", "h2", "h3"}
    assert m.hosts["h2"].durations[-1] == PARK_S


async def test_surpluses_are_refunded_only_when_the_bank_cannot_pay(tmp_path: Path) -> None:
    m = Market(tmp_path, 200_000)
    end = await start(m, {"h0": 100.0, "h1": 100.0})
    assert m.bank.balance == 0
    target = plan({"h0": 40.0, "h1": 160.0}, 1_000)
    await m.allocator.retarget(target, 2, m.payees, end)
    outcome = await m.allocator.settle(target, 2, m.payees, end, budget=200_000)
    assert outcome.refunded == {"h0": 100_000}  # freed to pay h1's top-up
    assert m.hosts["h0"].balance == 40_000 and m.hosts["h1"].balance == 160_000
    assert m.money() == 200_000
    # With money in the bank, a surplus stays where it is (lowered rate, no refund).
    m2 = Market(tmp_path / "2", 10**6)
    end = await start(m2, {"h0": 100.0, "h1": 100.0})
    await m2.allocator.retarget(target, 2, m2.payees, end)
    outcome = await m2.allocator.settle(target, 2, m2.payees, end, budget=10**6)
    assert not outcome.refunded and m2.hosts["h0"].balance == 100_000
    assert m2.hosts["h0"].rate() == pytest.approx(40.0, rel=0.02)


async def test_budget_caps_fundings_even_when_plans_overlap(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**7)
    end = m.clock() + 1_000
    # Two plans at once (an old settle still running while a new plan funds): the budget
    # counts fundings begun, not only finished ones.
    await asyncio.gather(
        m.allocator.retarget(plan({"h0": 300.0, "h1": 300.0}, 1_000), 1, m.payees, end,
                             budget=500_000),
        m.allocator.retarget(plan({"h2": 300.0}, 1_000), 2, m.payees, end, budget=500_000))
    assert m.journal.net_paid_out() <= 500_000
    assert 10**7 - m.bank.balance == m.journal.net_paid_out()


async def test_superseded_settle_stops_between_steps(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**6)
    end = await start(m, {"h0": 100.0, "h1": 100.0})
    target = plan({"h0": 300.0}, 1_000)
    await m.allocator.retarget(target, 2, m.payees, end)
    outcome = await m.allocator.settle(target, 2, m.payees, end, budget=10**6,
                                       current=lambda: False)
    assert outcome.refunded == {"h1": 100_000}  # the step under way finishes...
    assert not outcome.funded  # ...and no later one starts
    assert m.money() == 10**6


async def test_a_raised_rate_never_spends_faster_than_the_floor(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**6)
    end = await start(m, {"h0": 1.0})
    await m.allocator.retarget(plan({"h0": 10_000.0}, 1_000), 2, m.payees, end)
    assert m.hosts["h0"].durations[-1] == MIN_DURATION_S


async def test_crash_between_transfer_and_funding_repeats_nothing(tmp_path: Path) -> None:
    m = Market(tmp_path, 10**6)
    move = m.journal.begin("agent.1.h0.f", 1, "h0", m.payees["h0"], "fund", 5_000)
    await m.bank.transfer(m.payees["h0"], 5_000, transfer_id=move.id)  # then the crash
    assert await m.allocator.recover() == 1
    assert await m.allocator.recover() == 0
    assert m.hosts["h0"].balance == 5_000 and len(m.bank.settled) == 1
    assert m.journal.net_paid_out() == 5_000


async def test_a_refused_funding_paid_back_is_money_home(tmp_path: Path) -> None:
    """A host refusing a funding with a return receipt (docs/auctioneer.md, "Refused
    fundings are paid back") settles the move: nothing pending, the money counted home.
    A return receipt not signed by the bank, or not paying this move back, is ignored."""
    from tycoon.auctioneer.market import return_id
    from tycoon.bank.receipt import make_receipt
    from tycoon.bus.keys import Identity

    bank_id, me = Identity.generate(), Identity.generate()
    m = Market(tmp_path, 10**6)
    m.bank.bank_key, m.bank.account = bank_id.public_key, me.public_key  # type: ignore[attr-defined]
    host_key = m.payees["h0"] = Identity.generate().public_key  # receipts need real keys
    move = m.journal.begin("agent.1.h0.f", 1, "h0", host_key, "fund", 500)
    await m.bank.transfer(host_key, 500, transfer_id=move.id)
    m.journal.paid(move.id, b"agent.1.h0.f|500")
    m.allocator.bank_balance = m.bank.balance

    ours = return_id(host_key, f"{me.public_key}:{move.id}")

    def back(signer: Identity, amount: int, tid: str = ours) -> bytes:
        return make_receipt(signer, transfer_id=tid, payer=host_key, payee=me.public_key,
                            amount=amount, memo="", seq=1, settled_ns=1)  # fmt: skip

    # forged, the wrong amount, another payment of the host (a refund): none is ours
    answers = [back(Identity.generate(), 500), back(bank_id, 499),
               back(bank_id, 500, "refund-1"), back(bank_id, 500)]

    async def refuse(receipt: bytes) -> dict[str, Any]:
        raise Rejected("bad_amount", "below the deposit", returned=answers.pop(0))

    m.hosts["h0"].fund = refuse  # type: ignore[method-assign]
    for _ in range(3):  # still pending, nothing counted
        await m.allocator.recover()
        assert [p.id for p in m.journal.pending()] == [move.id]
    assert await m.allocator.recover() == 1
    assert not m.journal.pending() and m.journal.net_paid_out() == 0
    assert m.journal.move(move.id).status == "failed"  # type: ignore[union-attr]
    assert m.allocator.bank_balance == m.bank.balance + 500  # the bank pays it back
