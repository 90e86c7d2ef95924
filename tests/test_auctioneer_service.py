"""The auctioneer over a real nats-server, with the real bank service in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bank_kit import funded_user

from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.launch import RunningAuctioneer, start_auctioneer
from tycoon.bank.client import BankClient
from tycoon.bank.launch import RunningBank, start_bank
from tycoon.bank.receipt import make_receipt, verify_receipt
from tycoon.bus import subjects
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.envelope import Message, open_envelope, seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.errors import Rejected
from tycoon.money import MICRO
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]


@dataclass
class Market:
    url: str
    tmp: Path
    bank_id: Identity
    operator: Identity
    host_id: Identity
    bank: RunningBank
    auctioneer: RunningAuctioneer
    driver: SimulatedDriver
    buses: list[Bus] = field(default_factory=list)

    @property
    def host(self) -> str:
        return subject_id(self.host_id.public_key)

    async def user(self, credits: int = 1000) -> tuple[BankClient, AuctioneerClient]:
        """A new user with a bank account holding ``credits``, and its auctioneer client."""
        _, bus, bank = await funded_user(self.url, self.bank_id.public_key, self.operator,
                                         self.buses, credits)
        return bank, AuctioneerClient(bus, self.host, timeout=3.0)

    def state(self) -> tuple[Any, ...]:
        m = self.auctioneer.market
        return (
            {a: (x.balance, x.funded) for a, x in m.accounts.items()},
            set(m.redeemed), m.funded, self.auctioneer.store.audit(),
        )  # fmt: skip


@pytest.fixture
async def market(nats_url: str, tmp_path: Path) -> AsyncIterator[Market]:
    bank_id, operator, host_id = Identity.generate(), Identity.generate(), Identity.generate()
    bank = await start_bank(nats_url, bank_id, db=tmp_path / "bank.db",
                            operator=operator.public_key)
    driver = SimulatedDriver(preset="small")
    auctioneer = await start_auctioneer(
        nats_url, host_id, bank_key=bank_id.public_key, driver=driver,
        store_path=tmp_path / "host.db", name="h1", tick_s=0.1, heartbeat_s=0.2,
    )  # fmt: skip
    # the host's own bank account (users pay into it; refunds come from it)
    await BankClient(auctioneer.bus, bank_id.public_key).open(exist_ok=True)
    state = Market(nats_url, tmp_path, bank_id, operator, host_id, bank, auctioneer, driver)
    yield state
    for bus in state.buses:
        await bus.close()
    with contextlib.suppress(Exception):
        await state.auctioneer.stop()
    await state.bank.stop()


async def pay(bank: BankClient, host_key: str, credits: float) -> bytes:
    receipt = await bank.transfer(host_key, int(credits * MICRO))
    return receipt.raw


async def test_fund_bid_publish_refund(market: Market) -> None:
    bank, client = await market.user(1000)
    prices: list[Message] = []
    allocs: list[Message] = []
    watcher = await open_bus(market.url, Identity.generate())
    market.buses.append(watcher)

    async def on_price(msg: Message) -> None:
        prices.append(msg)

    async def on_alloc(msg: Message) -> None:
        allocs.append(msg)

    await watcher.subscribe(subjects.price(market.host), on_price)
    await watcher.subscribe(subjects.alloc(market.host), on_alloc)
    await watcher.flush()

    opened = await client.account()
    assert opened["account"] == bank.account and opened["balance"] == 0
    assert await client.host_key() == market.host_id.public_key
    raw = await pay(bank, market.host_id.public_key, 100)
    funded = await client.fund(raw)
    assert funded == {"account": bank.account, "transfer_id": funded["transfer_id"],
                      "amount": 100 * MICRO, "balance": 100 * MICRO}  # fmt: skip
    placed = await client.bid("1h cpu:2,0.1,1.0 memory:1,512MB tcpv4port,8080:1")
    assert placed["allocation"]["cpu"] == pytest.approx(1.0)
    # shares are applied to the driver before the reply
    applied = market.driver.shares()[bank.account]
    assert applied.cpu == pytest.approx(1.0) and applied.ports == (8080,)
    assert market.driver.capacity().memory * applied.memory >= 512e6
    await asyncio.sleep(0.5)  # a few ticks and heartbeats
    assert prices and allocs
    last = prices[-1]
    assert last.sender == market.host_id.public_key and last.kind == "price"
    body = last.body
    assert body["host"] == market.host == subject_id(last.sender)
    assert set(body["resources"]) == {"cpu", "memory", "disk", "net"}
    assert body["resources"]["cpu"]["bidders"] == 1 and body["resources"]["cpu"]["price"] > 0
    assert body["heartbeat_s"] == 0.2 and body["name"] == "h1" and body["driver"] == "simulated"
    seqs = [m.body["seq"] for m in prices]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    alloc = allocs[-1].body
    assert alloc["accounts"][bank.account]["cpu"] == pytest.approx(1.0)
    assert alloc["ports"] == {"8080": bank.account}
    status = await client.status()
    assert status["account"]["balance"] < 100 * MICRO  # charged for use
    assert status["funded"] == status["earnings"] + status["balances"] + status["refunded"]
    before = await bank.balance()
    refund = await client.refund()
    (paid,) = refund["refunds"]
    assert refund["balance"] == 0 and paid["amount"] > 0 and paid["receipt"]
    assert await bank.balance() == before + paid["amount"]
    with pytest.raises(Rejected) as info:
        await client.refund()
    assert info.value.code == "no_funds"
    assert await bank.balance() == before + paid["amount"]  # paid once
    assert bank.account not in market.driver.shares()  # no bid, no share
    assert market.auctioneer.market.conserved()


async def test_bid_reply_has_prices_and_allocations_are_coalesced(market: Market) -> None:
    bank, client = await market.user(1000)
    await client.fund(await pay(bank, market.host_id.public_key, 100))
    allocs: list[Message] = []
    watcher = await open_bus(market.url, Identity.generate())
    market.buses.append(watcher)

    async def on_alloc(msg: Message) -> None:
        allocs.append(msg)

    await watcher.subscribe(subjects.alloc(market.host), on_alloc)
    await watcher.flush()
    replies = [await client.bid(f"{600 + i}s cpu:1,0,1") for i in range(5)]
    last = replies[-1]
    own = last["allocation"]["rate"]["cpu"]
    assert last["prices"]["cpu"] == pytest.approx(own)  # the only bidder: its own rate
    assert set(last["prices"]) == {"cpu", "memory", "disk", "net"}
    await asyncio.sleep(3 * market.auctioneer.service.alloc_every_s)
    # five bids within one window: one allocation (or two, if a window closed between)
    assert 1 <= len(allocs) <= 2
    view = allocs[-1].body["accounts"][bank.account]
    assert view["rate"]["cpu"] == pytest.approx(own, rel=1e-3)  # the last bid's rate
    assert "balance" not in view and "expires_ns" not in view  # the owner's alone


async def test_refused_funding_changes_nothing(market: Market) -> None:
    bank, client = await market.user(1000)
    raw = await pay(bank, market.host_id.public_key, 10)
    await client.fund(raw)
    before = market.state()

    async def refused(code: str, receipt: bytes) -> None:
        with pytest.raises(Rejected) as info:
            await client.fund(receipt)
        assert info.value.code == code, info.value
        assert market.state() == before

    # already redeemed: the same receipt again
    await refused("already_redeemed", raw)
    # forged: a receipt signed by a key that is not the bank's
    forger = Identity.generate()
    forged = make_receipt(forger, transfer_id="forged", payer=bank.account,
                          payee=market.host_id.public_key, amount=10**12, memo="", seq=1,
                          settled_ns=1)  # fmt: skip
    await refused("bad_receipt", forged)
    # tampered: the bank's receipt with a flipped byte
    await refused("bad_receipt", raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:])
    # foreign host: a real receipt paying another host
    other = Identity.generate()
    other_bus = await open_bus(market.url, other)
    market.buses.append(other_bus)
    await BankClient(other_bus, market.bank_id.public_key).open()
    foreign = await pay(bank, other.public_key, 5)
    await refused("wrong_host", foreign)
    # replayed: the exact signed request bytes sent again are refused by the bus
    subject = subjects.host_op(market.host, "fund")
    fresh = await pay(bank, market.host_id.public_key, 3)
    bus = client.bus
    request = seal(bus.identity, "host.fund", {"receipt": fresh}, subject=subject)
    first = open_envelope((await bus.nc.request(subject, request, timeout=3)).data)
    assert first.kind == "reply" and first.body["amount"] == 3 * MICRO
    before = market.state()
    second = open_envelope((await bus.nc.request(subject, request, timeout=3)).data)
    assert second.kind == "error" and second.body["code"] == "replayed"
    assert market.state() == before
    # malformed bodies
    for body in ({}, {"receipt": "text"}, {"receipt": b"x" * 5000}):
        with pytest.raises(Rejected) as info:
            await bus.request(subject, "host.fund", body, timeout=3)
        assert info.value.code in ("malformed", "bad_receipt")
        assert market.state() == before


async def test_bad_bids_and_admission_over_the_bus(market: Market) -> None:
    bank_a, a = await market.user(100)
    bank_b, b = await market.user(100)
    for bank, client in ((bank_a, a), (bank_b, b)):
        await client.fund(await pay(bank, market.host_id.public_key, 50))
    await a.bid("1h cpu:1,0.6")
    with pytest.raises(Rejected) as info:
        await b.bid("1h cpu:1,0.5")
    assert info.value.code == "not_admitted" and "0.4" in info.value.message
    for text, token in (("1h gpu:1", "gpu:1"), ("soon cpu:1", "soon"),
                        ("1h cpu:nan", "cpu:nan"), ("1h cpu:1,2", "cpu:1,2")):  # fmt: skip
        with pytest.raises(Rejected) as info:
            await b.bid(text)
        assert info.value.code == "bad_bid" and repr(token) in info.value.message
    structured = await b.bid({"duration": 60, "resources": {"cpu": {"weight": 1, "max": 0.3}}})
    assert structured["allocation"]["cpu"] == pytest.approx(0.3)
    assert market.driver.shares()[bank_a.account].cpu == pytest.approx(0.7)
    with pytest.raises(Rejected) as info:
        await a.status(bank_b.account)
    assert info.value.code == "forbidden"
    stranger = AuctioneerClient(a.bus, "0000000000000000", timeout=1.0)
    with pytest.raises(Rejected) as info:
        await stranger.status()
    assert info.value.code == "unavailable"


async def test_pending_refund_is_paid_after_the_bank_returns(market: Market) -> None:
    bank, client = await market.user(100)
    await client.fund(await pay(bank, market.host_id.public_key, 40))
    before = await bank.balance()
    await market.bank.stop()  # the bank goes away
    with pytest.raises(Rejected) as info:
        await client.refund()
    assert info.value.code == "unavailable"
    assert market.auctioneer.market.accounts[bank.account].balance == 0
    assert len(market.auctioneer.market.pending) == 1
    market.bank = await start_bank(market.url, market.bank_id, db=market.tmp / "bank.db",
                                   operator=market.operator.public_key)  # and comes back
    refund = await client.refund()  # the retry pays the same refund, once
    assert [r["amount"] for r in refund["refunds"]] == [40 * MICRO]
    assert await bank.balance() == before + 40 * MICRO
    assert not market.auctioneer.market.pending
    with pytest.raises(Rejected, match="no_funds"):
        await client.refund()


async def test_restart_keeps_balances_and_redemptions(market: Market) -> None:
    bank, client = await market.user(100)
    raw = await pay(bank, market.host_id.public_key, 30)
    await client.fund(raw)
    await client.bid("1h cpu:1")
    await asyncio.sleep(0.3)
    await market.auctioneer.stop()
    kept = {a: x.balance for a, x in market.auctioneer.market.accounts.items()}
    market.auctioneer = await start_auctioneer(
        market.url, market.host_id, bank_key=market.bank_id.public_key, driver=market.driver,
        store_path=market.tmp / "host.db", tick_s=0.1, heartbeat_s=0.2,
    )  # fmt: skip
    restored = market.auctioneer.market
    assert {a: x.balance for a, x in restored.accounts.items()} == kept
    assert restored.accounts[bank.account].bid is not None
    with pytest.raises(Rejected, match="already_redeemed"):
        await client.fund(raw)
    assert restored.conserved()


async def test_unfunded_keys_open_nothing_and_idle_accounts_go(market: Market) -> None:
    """Issue 17: host.account from self-made keys made lasting accounts and sandboxes. Now
    asking creates nothing, and an account empty and idle for idle_s goes with its sandbox."""
    core = market.auctioneer.market
    bank, client = await market.user(1000)
    await client.fund(await pay(bank, market.host_id.public_key, 1))
    accounts, sandboxes = set(core.accounts), set(market.driver.sandboxes())
    assert accounts == {bank.account} and bank.account in sandboxes
    for _ in range(50):  # fresh keys: account, bid, refund, status
        ident = Identity.generate()
        bus = await open_bus(market.url, ident)
        other = AuctioneerClient(bus, market.host, timeout=3.0)
        detail = await other.account()
        assert detail["open"] is False and detail["balance"] == 0 and detail["bid"] is None
        for call in (other.bid("1h cpu:1"), other.refund()):
            with pytest.raises(Rejected) as info:
                await call
            assert info.value.code == "unknown_account"
        await bus.close()
    assert set(core.accounts) == accounts and set(market.driver.sandboxes()) == sandboxes
    assert market.auctioneer.store.db.execute("SELECT COUNT(*) FROM accounts").fetchone() == (1,)
    await client.bid("1h cpu:1")
    refund = await client.refund()
    assert refund["balance"] == 0 and refund["refunds"][0]["receipt"]
    core.idle_ns = 200_000_000  # 0.2 s (the tick is 0.1 s)
    for _ in range(100):
        if bank.account not in core.accounts:
            break
        await asyncio.sleep(0.05)
    assert bank.account not in core.accounts
    assert bank.account not in market.driver.sandboxes()  # the sandbox went too
    assert market.auctioneer.store.db.execute("SELECT COUNT(*) FROM accounts").fetchone() == (0,)
    audit = market.auctioneer.store.audit()
    assert audit["funded"] == audit["earnings"] + audit["balances"] + audit["refunded"]
    # funding again opens a new account, whose refund is paid (a new refund id)
    await client.fund(await pay(bank, market.host_id.public_key, 2))
    again = await client.refund()
    assert again["refunds"][0]["refund_id"] != refund["refunds"][0]["refund_id"]
    assert again["refunds"][0]["receipt"]


@pytest.mark.hostile
@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_twenty_thousand_account_requests_from_fresh_keys_leave_nothing(
    market: Market,
) -> None:
    """Issue 17: 20,000 host.account requests from self-made keys made 20,000 accounts
    (and sandboxes) for good. Now the account table and the driver stay as they were."""
    from hostile_kit import open_reply, tally

    from tycoon.bus.connection import inbox_prefix

    core = market.auctioneer.market
    bank, client = await market.user(1000)
    await client.fund(await pay(bank, market.host_id.public_key, 1))
    accounts, sandboxes = set(core.accounts), set(market.driver.sandboxes())
    subject = subjects.host_op(market.host, "account")
    items = []
    for _ in range(20_000):
        ident = Identity.generate()  # replies go only to the signer's own inbox
        items.append((inbox_prefix(ident), seal(ident, "host.account", {}, subject=subject)))
    sender = await open_bus(market.url, Identity.generate())  # an open server: any inbox
    market.buses.append(sender)
    got: dict[int, bytes] = {}
    slots, done = asyncio.Semaphore(256), asyncio.Event()

    async def on_reply(msg: Any) -> None:
        index = int(msg.subject.rsplit(".", 1)[1])
        if index not in got:
            got[index] = msg.data
            slots.release()
        if len(got) == len(items):
            done.set()

    await sender.nc.subscribe("_INBOX.*.flood.*", cb=on_reply)
    for index, (prefix, raw) in enumerate(items):
        await slots.acquire()
        await sender.nc.publish(subject, raw, reply=f"{prefix}.flood.{index}")
    await asyncio.wait_for(done.wait(), 200)
    replies = [open_reply(raw, got[i], market.host_id.public_key)
               for i, (_, raw) in enumerate(items)]  # fmt: skip
    counts = tally(replies)
    assert set(counts) <= {"ok", "rate_limited"}, counts
    assert set(core.accounts) == accounts and set(market.driver.sandboxes()) == sandboxes
    rows = market.auctioneer.store.db.execute("SELECT COUNT(*) FROM accounts").fetchone()
    assert rows == (len(accounts),)


async def test_a_refused_funding_is_paid_back_once(market: Market) -> None:
    """A receipt paid to the host but below its deposit: refused with the return receipt,
    the money back at the payer; replays and concurrent funds pay nothing more."""
    core = market.auctioneer.market
    core.deposit = 1000
    bank, client = await market.user(1)
    start = await bank.balance()
    small = (await bank.transfer(market.host_id.public_key, 999)).raw
    answers = await asyncio.gather(client.fund(small), client.fund(small),
                                   return_exceptions=True)  # fmt: skip
    assert all(isinstance(a, Rejected) and a.code == "bad_amount" for a in answers), answers
    first = answers[0]
    assert isinstance(first, Rejected) and first.returned
    assert all(isinstance(a, Rejected) and a.returned == first.returned for a in answers)
    back = verify_receipt(first.returned, market.bank_id.public_key)
    assert (back.payer, back.payee, back.amount) == (market.host_id.public_key, bank.account,
                                                     999)  # fmt: skip
    assert await bank.balance() == start and not core.pending and not core.accounts
    before = market.state()
    with pytest.raises(Rejected) as info:  # replayed after the return: nothing moves
        await client.fund(small)
    assert info.value.code == "bad_amount" and info.value.returned == first.returned
    assert market.state() == before and await bank.balance() == start
    audit = market.auctioneer.store.audit()
    assert audit["funded"] == audit["refunded"] == 999
