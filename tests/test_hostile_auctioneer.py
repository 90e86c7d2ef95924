"""Hostile input against an auctioneer, over a real nats-server with the per-role config.

Receipts forged, replayed, redeemed twice or at the wrong host; NaN, infinite and
malformed bids; stale, replayed and misdirected requests; oversize and deeply nested
payloads; 10,000 random and mutated messages. Every one gets an error reply with its
code; balances, redemptions, bids and shares stay exactly as they were, and the host
still answers normally.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hostile_kit import (
    NS,
    Cast,
    Fuzzer,
    Target,
    assert_no_success_except,
    call,
    code,
    deep_msgpack,
    draw_recipes,
    expect,
    flood,
    forged,
    nested,
    padded,
    secure_server,
    tally,
)
from world_kit import World, running_bank

from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.launch import RunningAuctioneer, start_auctioneer
from tycoon.bank.client import BankClient
from tycoon.bank.ledger import Ledger
from tycoon.bank.receipt import make_receipt
from tycoon.bank.service import BankService
from tycoon.bus import subjects
from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity
from tycoon.errors import Rejected
from tycoon.money import MAX_AMOUNT, MICRO
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.hostile, pytest.mark.timeout(120)]

MIB = 1024 * 1024
HOUR = 3600.0


@dataclass
class HostWorld(World):
    ledger: Ledger
    bank: BankService
    hosts: list[RunningAuctioneer] = field(default_factory=list)
    receipts: dict[str, bytes] = field(default_factory=dict)

    @property
    def host(self) -> RunningAuctioneer:
        return self.hosts[0]

    @property
    def key(self) -> str:
        return self.cast.hosts[0].public_key

    def subject(self, op: str, i: int = 0) -> str:
        return subjects.host_op(self.cast.host_id(i), op)

    async def host_client(self, identity: Identity, i: int = 0) -> AuctioneerClient:
        return AuctioneerClient(await self.bus(identity), self.cast.host_id(i))

    def state(self) -> tuple[Any, ...]:
        m = self.host.market
        accounts = {
            k: (a.balance, a.funded, a.spent, a.refunded, a.refunds,
                None if a.bid is None else (a.bid.expires_ns, a.bid.weights, a.bid.lo, a.bid.hi))
            for k, a in m.accounts.items()
        }  # fmt: skip
        audit = self.host.store.audit()
        assert audit["funded"] == audit["earnings"] + audit["refunded"] + audit["balances"]
        return (accounts, set(m.redeemed), m.funded, m.refunded, m.earnings, set(m.pending),
                m.shares_map(), audit, dict(self.ledger.accounts), self.ledger.seq)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[HostWorld]:
    cast = Cast()
    async with secure_server(tmp_path, cast) as server, \
            running_bank(server, cast, tmp_path / "bank.db") as (ledger, bank):
        w = HostWorld(cast, server, ledger, bank)
        try:
            for i in range(2):  # no ticks or heartbeats during a test: state moves only by requests
                w.hosts.append(await start_auctioneer(
                    server.url, cast.hosts[i], bank_key=cast.bank.public_key,
                    driver=SimulatedDriver(preset="small", seed=i),
                    store_path=tmp_path / f"host{i}.db", name=f"h{i}", tick_s=HOUR,
                    heartbeat_s=HOUR))  # fmt: skip
                await BankClient(w.hosts[i].bus, cast.bank.public_key).open(exist_ok=True)
            await w.open_accounts([(w.alice, 1000), (w.mallory, 1000)])
            alice_bank = await w.bank_client(w.alice)
            # alice: a funded host account with a live bid on host 0
            receipt = await alice_bank.transfer(cast.hosts[0].public_key, 100 * MICRO)
            alice = await w.host_client(w.alice)
            await alice.fund(receipt)
            await alice.bid("1h cpu:1,0.1,1 memory:1,0.1,0.5")
            w.receipts["redeemed"] = receipt.raw
            w.receipts["unredeemed"] = (await alice_bank.transfer(
                cast.hosts[0].public_key, 7 * MICRO)).raw
            w.receipts["host1"] = (await (await w.bank_client(w.mallory)).transfer(
                cast.hosts[1].public_key, 5 * MICRO)).raw
            w.receipts["to_mallory"] = (await alice_bank.transfer(
                w.mallory.public_key, 3 * MICRO)).raw
            yield w
        finally:
            await w.close_buses()
            for host in w.hosts:
                with contextlib.suppress(Exception):
                    await host.stop()


def fake_receipt(signer: Identity, payer: str, payee: str, amount: int = 50 * MICRO,
                 transfer_id: str = "fake") -> bytes:
    return make_receipt(signer, transfer_id=transfer_id, payer=payer, payee=payee,
                        amount=amount, memo="", seq=1, settled_ns=time.time_ns())


async def test_receipts_forged_replayed_twice_and_at_the_wrong_host(world: HostWorld) -> None:
    w = world
    nc = (await w.bus(w.mallory)).nc
    alice_nc = (await w.bus(w.alice)).nc
    fund = w.subject("fund")
    before = w.state()

    def fund_with(identity: Identity, receipt: Any) -> bytes:
        return seal(identity, "host.fund", {"receipt": receipt}, subject=fund)

    # redeemed once already: neither its payer nor anyone else can redeem it again
    for who, conn in ((w.alice, alice_nc), (w.mallory, nc)):
        await expect(conn, fund, fund_with(who, w.receipts["redeemed"]), w.key,
                     "already_redeemed")
    # a real receipt that pays another host, or a user
    await expect(nc, fund, fund_with(w.mallory, w.receipts["host1"]), w.key, "wrong_host")
    await expect(nc, fund, fund_with(w.mallory, w.receipts["to_mallory"]), w.key, "wrong_host")
    # forged: signed by a key that is not the bank's, or the bank's signature broken
    for signer in (w.mallory, w.cast.hosts[0], w.cast.operator):
        raw = fake_receipt(signer, w.mallory.public_key, w.key, MAX_AMOUNT)
        await expect(nc, fund, fund_with(w.mallory, raw), w.key, "bad_receipt")
    broken = bytearray(w.receipts["unredeemed"])
    broken[-1] ^= 0x80
    await expect(nc, fund, fund_with(w.mallory, bytes(broken)), w.key, "bad_receipt")
    # something else the bank signed is not a receipt: a reply
    reply = await call(alice_nc, subjects.bank("info"),
                       seal(w.alice, "bank.info", {}, subject=subjects.bank("info")),
                       w.cast.bank.public_key)
    for raw in (reply.raw, b"", b"\x00" * 64, w.receipts["redeemed"] * 2, 5, None, "receipt"):
        await expect(nc, fund, fund_with(w.mallory, raw), w.key, "bad_receipt", "malformed")
    # a funding request replayed (same bytes), sent to another host, or to another op
    legit = fund_with(w.alice, w.receipts["unredeemed"])
    await expect(alice_nc, w.subject("fund", 1), legit, w.cast.hosts[1].public_key,
                 "wrong_subject")
    await expect(alice_nc, w.subject("bid"), legit, w.key, "wrong_subject")
    assert w.state() == before
    assert code(await call(alice_nc, fund, legit, w.key)) == "ok"
    after = w.state()
    await expect(alice_nc, fund, legit, w.key, "replayed")
    await expect(alice_nc, fund, fund_with(w.alice, w.receipts["unredeemed"]), w.key,
                 "already_redeemed")
    await expect(alice_nc, w.subject("fund", 1),
                 seal(w.alice, "host.fund", {"receipt": w.receipts["unredeemed"]},
                      subject=w.subject("fund", 1)), w.cast.hosts[1].public_key, "wrong_host")
    assert w.state() == after
    # a receipt stolen before it was redeemed funds its payer, never the thief
    spare = await (await w.bank_client(w.alice)).transfer(w.key, 2 * MICRO)
    reply = await call(nc, fund, fund_with(w.mallory, spare.raw), w.key)
    assert code(reply) == "ok" and reply.body["account"] == w.alice.public_key
    assert w.mallory.public_key not in w.host.market.accounts


async def test_bad_bids_stale_and_forged_requests(world: HostWorld) -> None:
    w = world
    w.hosts[0].service.service.set_rate_limit(None)  # limits: test_hostile_flood.py
    alice_nc = (await w.bus(w.alice)).nc
    nc = (await w.bus(w.mallory)).nc
    bid = w.subject("bid")
    before = w.state()
    nan, inf = float("nan"), float("inf")

    def bid_by(identity: Identity, body: dict[str, Any], **kw: Any) -> bytes:
        return seal(identity, "host.bid", body, subject=bid, **kw)

    bad_bodies: list[dict[str, Any]] = [
        {"duration": "1h", "resources": "cpu:nan,0.1,1"},
        {"duration": "1h", "resources": "cpu:inf,0.1,1"},
        {"duration": "1h", "resources": "cpu:1,nan,1"},
        {"duration": "1h", "resources": "cpu:1,0.1,inf"},
        {"duration": "1h", "resources": "cpu:1,-inf,1"},
        {"duration": "1h", "resources": "cpu:-1,0.1,1"},
        {"duration": "1h", "resources": "cpu:0"},
        {"duration": "1h", "resources": "cpu:1,0.9,0.1"},
        {"duration": "1h", "resources": "cpu:1e309"},
        {"duration": "1h", "resources": {"cpu": {"weight": nan}}},
        {"duration": "1h", "resources": {"cpu": {"weight": inf}}},
        {"duration": "1h", "resources": {"cpu": {"weight": -inf}}},
        {"duration": "1h", "resources": {"cpu": {"weight": 1, "min": nan}}},
        {"duration": "1h", "resources": {"cpu": {"weight": 1, "max": inf}}},
        {"duration": "1h", "resources": {"cpu": {"weight": 2**64 - 1, "min": -1}}},
        {"duration": "1h", "resources": {"memory": {"weight": 1, "min": "512XB"}}},
        {"duration": "1h", "resources": {"gpu": {"weight": 1}}},
        {"duration": "1h", "resources": "gpu:1"},
        {"duration": "1h", "resources": "memory:1,512XB,1GB"},
        {"duration": "1h", "resources": "memory:1,5KB"},
        {"duration": "1h", "resources": "cpu:1,0.1,2"},
        {"duration": "1h", "resources": "tcpv4port,99999:1"},
        {"duration": "1h", "resources": "ipv4address,999.0.0.1:1"},
        {"duration": "1h", "resources": ""},
        {"duration": "1h", "resources": 5},
        {"duration": "1h", "resources": ["cpu"]},
        {"duration": "1h"},
        {"resources": "cpu:1"},
    ]
    for duration in ("-1h", "1x", "h", "", " ", "1h-", "nan", "inf", "1e400s", "9" * 400 + "y",
                     "101y", "1.5.5h", -1, 2**63, 2**64 - 1, 1.5, nan, inf, True, None, [1],
                     {"h": 1}):
        bad_bodies.append({"duration": duration, "resources": "cpu:1,0.1,1"})
    for i, body in enumerate(bad_bodies):
        got = code(await call(alice_nc, bid, bid_by(w.alice, body), w.key))
        assert got in ("bad_bid", "not_admitted", "malformed"), (i, body, got)
        assert w.state() == before, (i, body)
    # a bid on a host that does not exist: nobody answers its subject
    with pytest.raises(Rejected) as info:
        await (await w.host_client(w.alice, 0)).bus.request(
            subjects.host_op("nohostnohost0000", "bid"), "host.bid",
            {"duration": "1h", "resources": "cpu:1"}, timeout=2.0)
    assert info.value.code == "unavailable"
    # wrong key for the account: mallory has no host account, and cannot see alice's
    await expect(nc, bid, bid_by(w.mallory, {"duration": "1h", "resources": "cpu:1"}), w.key,
                 "unknown_account")
    await expect(nc, w.subject("refund"), seal(w.mallory, "host.refund", {},
                                               subject=w.subject("refund")),
                 w.key, "unknown_account")
    status = w.subject("status")
    await expect(nc, status, seal(w.mallory, "host.status", {"account": w.alice.public_key},
                                  subject=status), w.key, "forbidden")
    # forged: alice's name, mallory's signature (a bid, a refund)
    for op, kind, body in (("bid", "host.bid", {"duration": "1h", "resources": "cpu:1,0.9"}),
                           ("refund", "host.refund", {})):
        raw = forged(w.alice, w.mallory, kind, body, w.subject(op))
        await expect(nc, w.subject(op), raw, w.key, "bad_signature")
    # stale and future timestamps
    now = time.time_ns()
    for ts in (now - 61 * NS, now + 61 * NS, 0):
        raw = bid_by(w.alice, {"duration": "1h", "resources": "cpu:1,0.9"}, ts_ns=ts)
        await expect(alice_nc, bid, raw, w.key, "stale")
    # sizes and nesting
    raw = padded(w.alice, "host.status", status, {}, MIB)
    assert code(await call(alice_nc, status, raw, w.key)) == "ok"
    await expect(alice_nc, status, padded(w.alice, "host.status", status, {}, MIB + 1), w.key,
                 "too_large")
    await expect(alice_nc, bid, bid_by(w.alice, {"duration": "1h", "resources": nested(30)}),
                 w.key, "too_deep")
    await expect(alice_nc, bid, deep_msgpack(w.alice, "host.bid", bid, 200_000), w.key,
                 "too_deep", "malformed")
    assert w.state() == before
    # the host still answers: alice raises her bid, a real change
    reply = await (await w.host_client(w.alice)).bid("1h cpu:2,0.1,1")
    assert reply["account"] == w.alice.public_key


async def test_ten_thousand_random_and_mutated_requests(world: HostWorld) -> None:
    w = world
    attacker = w.cast.agents[0]  # authenticated; no host account
    bus = await w.bus(attacker)
    forged_receipt = fake_receipt(attacker, attacker.public_key, w.key)
    values = (w.alice.public_key, attacker.public_key, w.key, w.receipts["redeemed"],
              w.receipts["host1"], w.receipts["to_mallory"], forged_receipt, "1h",
              "cpu:1,0.1,1", {"cpu": {"weight": 1, "min": 0.1, "max": 1}},
              {"8080": {"weight": 1, "target": 80}}, {"10.0.0.1": 1})
    targets = [
        Target(w.subject("account"), "host.account", {}, fuzz_body=False),
        Target(w.subject("fund"), "host.fund", {"receipt": w.receipts["redeemed"]}),
        Target(w.subject("bid"), "host.bid", {"duration": "1h", "resources": "cpu:1,0.1,1"}),
        Target(w.subject("bid"), "host.bid",
               {"duration": 60, "resources": {"cpu": {"weight": 1, "min": 0.1, "max": "1GHz"}},
                "ports": {"8080": 1}, "ips": {"10.0.0.1": 1}}),
        Target(w.subject("refund"), "host.refund", {}),
        Target(w.subject("status"), "host.status", {"account": attacker.public_key}),
    ]
    fuzzer = Fuzzer(attacker, targets, values=values,
                    other_subjects=(w.subject("bid", 1), w.subject("fund", 1),
                                    subjects.bank("transfer")))
    items = fuzzer.messages(draw_recipes())
    assert len(items) >= 10_000
    before = w.state()
    w.hosts[0].service.service.set_rate_limit(None)  # limits: test_hostile_flood.py
    replies = await flood(bus.nc, bus.inbox_prefix, items, w.key)
    counts = tally(replies)
    print("replies by code:", dict(counts))
    assert_no_success_except(items, replies, {w.subject("status")})
    for expected in ("bad_signature", "malformed", "stale", "replayed", "wrong_subject",
                     "unknown_kind", "bad_bid", "bad_receipt", "unknown_account"):
        assert counts[expected] > 0, counts
    assert w.state() == before
    assert (await (await w.host_client(w.alice)).status())["seq"] > 0
