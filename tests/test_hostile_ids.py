"""Ids no one else can claim (issue 18, point 3), played by a hostile user.

A real nats-server with JetStream and the per-role permissions, a bank writing
SETTLEMENTS, an auctioneer; Mallory is an ordinary user key. Each attack of the issue is
reproduced as it was done and must now fail to hurt anyone:

* refund-id squatting: paying 1 µcredit under the victim's next refund ids;
* receipt-id squatting at a host: redeeming first a receipt with the victim's transfer id;
* Msg-Id collision: a transfer id equal to the victim's next refund id (plus a space);
* look-alike ids and bids: NFC/NFD, surrounding and no-break spaces, Unicode digits,
  unsellable unique IP addresses.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hostile_kit import Cast, call, code, expect
from world_kit import World, running_bank

from tycoon.agent.launch import launch as launch_broker
from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.launch import RunningAuctioneer, start_auctioneer
from tycoon.auctioneer.market import refund_id
from tycoon.bank.audit import audit
from tycoon.bank.client import BankClient
from tycoon.bank.ledger import Ledger
from tycoon.bank.receipt import verify_receipt
from tycoon.bank.service import BankService
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity
from tycoon.money import MICRO
from tycoon.natsconf import render_principals
from tycoon.natsserver import NatsServer, free_port
from tycoon.streams.settlements import SettlementLog, sqlite_source
from tycoon.streams.verify import verify_log
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.hostile, pytest.mark.timeout(120)]

HOUR = 3600.0


@dataclass
class IdsWorld(World):
    db: Path
    ledger: Ledger
    bank: BankService
    log: SettlementLog
    host: RunningAuctioneer | None = None

    @property
    def host_key(self) -> str:
        return self.cast.hosts[0].public_key

    async def host_client(self, identity: Identity) -> AuctioneerClient:
        return AuctioneerClient(await self.bus(identity), self.cast.host_id(0))

    async def verify(self) -> Any:
        assert await self.log.drained()
        watcher = await self.bus(self.cast.bank)
        with SqliteStore(self.db, readonly=True) as store:
            return await verify_log(watcher.nc.jetstream(timeout=5.0), store,
                                    self.cast.bank.public_key, grace_s=0)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[IdsWorld]:
    cast = Cast()
    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(render_principals(cast.principals(), port=port,
                                      jetstream_dir=str(tmp_path / "js")))
    async with NatsServer(port=port, config=conf) as server:
        db = tmp_path / "bank.db"

        def settlement_log(bus: Bus) -> SettlementLog:
            return SettlementLog(bus.nc, cast.bank.public_key, sqlite_source(db), window=8,
                                 retry_s=(0.1, 0.5))

        async with running_bank(server, cast, db, settlement_log=settlement_log) as (
                ledger, bank):
            assert isinstance(bank.settlement_log, SettlementLog)
            w = IdsWorld(cast, server, db, ledger, bank, bank.settlement_log)
            try:
                w.host = await start_auctioneer(
                    server.url, cast.hosts[0], bank_key=cast.bank.public_key,
                    driver=SimulatedDriver(preset="small", seed=0),
                    store_path=tmp_path / "h.db", name="h0", tick_s=HOUR,
                    heartbeat_s=HOUR)  # fmt: skip
                await BankClient(w.host.bus, cast.bank.public_key).open(exist_ok=True)
                await w.open_accounts([(w.alice, 1000), (w.mallory, 1000)])
                yield w
            finally:
                await w.close_buses()
                if w.host is not None:
                    with contextlib.suppress(Exception):
                        await w.host.stop()


async def test_refund_id_squatting_leaves_the_victims_refunds_payable(world: IdsWorld) -> None:
    """Mallory pays 1 µcredit under each of Alice's next refund ids (public inputs: the
    host key, Alice's key, a counter). It was `unavailable: … pending (conflict)` forever."""
    w = world
    assert w.host is not None
    alice_bank, alice = await w.bank_client(w.alice), await w.host_client(w.alice)
    before = await alice_bank.balance()
    await alice.fund(await alice_bank.transfer(w.host_key, 5 * MICRO))
    first = w.host.market.accounts[w.alice.public_key].refunds  # the counter (guessable)
    mallory = await w.bank_client(w.mallory)
    squats = [await mallory.transfer(w.alice.public_key, 1,
                                     transfer_id=refund_id(w.host_key, w.alice.public_key, n))
              for n in (first, first + 1)]
    assert all(r.payer == w.mallory.public_key for r in squats)
    for n in (first, first + 1):  # two refunds, both ids squatted
        if n > first:
            await alice.fund(await alice_bank.transfer(w.host_key, 5 * MICRO))
        reply = await alice.refund()
        (paid,) = reply["refunds"]
        receipt = verify_receipt(paid["receipt"], w.cast.bank.public_key)
        assert receipt.transfer_id == refund_id(w.host_key, w.alice.public_key, n)
        assert (receipt.payer, receipt.payee) == (w.host_key, w.alice.public_key)
        assert receipt.amount == paid["amount"] > 0
    assert w.host is not None and not w.host.market.pending
    spent = before + len(squats) - await alice_bank.balance()  # Mallory paid her 1 µcredit each
    assert 0 <= spent < 10 * MICRO  # all came back but what the host charged meanwhile
    assert audit(w.ledger.store).ok
    # and SETTLEMENTS holds both receipts of each squatted id: Msg-Ids do not collide
    report = await w.verify()
    assert report.ok and report.matched == report.ledger_transfers, report.to_dict()
    found = w.ledger.store.find_ops("transfer", [r.transfer_id for r in squats[:2]])
    assert {payer for _, payer in found} == {w.mallory.public_key, w.host_key}


async def test_msg_id_collision_cannot_drop_the_victims_receipt(world: IdsWorld) -> None:
    """A transfer id equal to the victim's next refund id plus a trailing space collided in
    SETTLEMENTS' duplicate window (nats-server trims header values): the victim's receipt
    was dropped and verify-log said MISSING."""
    w = world
    assert w.host is not None
    alice_bank, alice = await w.bank_client(w.alice), await w.host_client(w.alice)
    await alice.fund(await alice_bank.transfer(w.host_key, 5 * MICRO))
    counter = w.host.market.accounts[w.alice.public_key].refunds
    next_refund = refund_id(w.host_key, w.alice.public_key, counter)
    nc = (await w.bus(w.mallory)).nc
    transfer = subjects.bank("transfer")
    for tid in (next_refund + " ", " " + next_refund, next_refund + "\t"):
        raw = seal(w.mallory, "bank.transfer", {"payee": w.alice.public_key, "amount": 1,
                                                "transfer_id": tid, "memo": ""},
                   subject=transfer)
        await expect(nc, transfer, raw, w.cast.bank.public_key, "malformed")
    # the same id, exactly: Mallory's own transfer; its Msg-Id is its receipt's digest
    await (await w.bank_client(w.mallory)).transfer(w.alice.public_key, 1,
                                                    transfer_id=next_refund)
    (paid,) = (await alice.refund())["refunds"]
    assert paid["refund_id"] == next_refund
    assert paid["receipt"]
    report = await w.verify()
    assert report.ok and not report.missing, report.to_dict()
    assert report.matched == report.ledger_transfers == report.stream_messages


async def test_redeeming_first_a_receipt_with_the_victims_transfer_id(world: IdsWorld) -> None:
    """With ids per payer, a host that knew receipts by transfer id alone would let Mallory
    redeem 1 µcredit under Alice's next id first, and refuse Alice's receipt."""
    w = world
    mallory_bank, mallory = await w.bank_client(w.mallory), await w.host_client(w.mallory)
    alice_bank, alice = await w.bank_client(w.alice), await w.host_client(w.alice)
    tid = "agent.1.h0.f"  # an agent's move ids are predictable
    await mallory.fund(await mallory_bank.transfer(w.host_key, 1, transfer_id=tid))
    funded = await alice.fund(await alice_bank.transfer(w.host_key, 5 * MICRO, transfer_id=tid))
    assert funded["balance"] == 5 * MICRO
    again = await alice_bank.transfer(w.host_key, 5 * MICRO, transfer_id=tid)  # a retry
    with pytest.raises(Exception, match="already_redeemed"):
        await alice.fund(again)


LOOK_ALIKES = [
    unicodedata.normalize("NFC", "caf\u00e9-1"),
    unicodedata.normalize("NFD", "caf\u00e9-1"),
    "t-1 ", " t-1", "t\u00a01", "t-\u0661", "t-\uff11", "t/1", "t\u200b1", "",
]


async def test_look_alike_transfer_and_mint_ids_are_malformed(world: IdsWorld) -> None:
    w = world
    nc = (await w.bus(w.mallory)).nc
    op_nc = (await w.bus(w.cast.operator)).nc
    bank = w.cast.bank.public_key
    before = (dict(w.ledger.accounts), w.ledger.seq)
    for tid in LOOK_ALIKES:
        raw = seal(w.mallory, "bank.transfer", {"payee": w.alice.public_key, "amount": 1,
                                                "transfer_id": tid, "memo": ""},
                   subject=subjects.bank("transfer"))
        await expect(nc, subjects.bank("transfer"), raw, bank, "malformed")
        raw = seal(w.cast.operator, "bank.mint", {"account": w.alice.public_key, "amount": 1,
                                                  "mint_id": tid, "memo": ""},
                   subject=subjects.bank("mint"))
        await expect(op_nc, subjects.bank("mint"), raw, bank, "malformed")
    assert (dict(w.ledger.accounts), w.ledger.seq) == before


async def test_look_alike_bids_and_unsellable_addresses_are_refused(world: IdsWorld) -> None:
    w = world
    alice_bank, alice = await w.bank_client(w.alice), await w.host_client(w.alice)
    await alice.fund(await alice_bank.transfer(w.host_key, 5 * MICRO))
    nc = (await w.bus(w.alice)).nc
    subject = subjects.host_op(w.cast.host_id(0), "bid")
    bids = [
        {"duration": "\u0661h", "resources": "cpu:1"},
        {"duration": "1h", "resources": "cpu:\u0661,\u0660.\u0665"},
        {"duration": "1h", "resources": "cpu:1\u00a0memory:1"},
        {"duration": "1h", "resources": "cpu:1 tcpv4port,\u00b2:1"},
        {"duration": "1h", "resources": "cpu:1 ipv4address,0.0.0.0:1"},
        {"duration": "1h", "resources": "cpu:1 ipv4address,255.255.255.255:1"},
        {"duration": "1h", "resources": "cpu:1 ipv4address,224.0.0.1:1"},
        {"duration": "1h", "ips": {"169.254.169.254": 1}},
    ]
    assert w.host is not None
    before = {k: a.bid for k, a in w.host.market.accounts.items()}
    for body in bids:
        raw = seal(w.alice, "host.bid", body, subject=subject)
        got = code(await call(nc, subject, raw, w.host_key))
        assert got == "bad_bid", (body, got)
    assert {k: a.bid for k, a in w.host.market.accounts.items()} == before
    ok = seal(w.alice, "host.bid", {"duration": "1h", "resources": "cpu:1 ipv4address,10.0.0.5:1"},
              subject=subject)
    assert code(await call(nc, subject, ok, w.host_key)) == "ok"


async def test_enrolling_first_at_a_broker_under_the_victims_transfer_id(
    world: IdsWorld, tmp_path: Path
) -> None:
    """A broker that knew jobs by transfer id alone would let Mallory enroll first under
    Alice's (predictable) id and refuse Alice's paid receipt as already enrolled."""
    w = world
    async with launch_broker(w.server.url, w.cast.broker, bank_key=w.cast.bank.public_key,
                             state=tmp_path / "broker", fee_percent=5, min_fee=2) as running:
        broker = running.broker
        enroll = subjects.broker(broker.id, "enroll")
        key = w.cast.broker.public_key
        jobs = []
        for who in (w.mallory, w.alice):
            paid = await (await w.bank_client(who)).transfer(key, 10 * MICRO,
                                                             transfer_id="job-2026-12-06")
            raw = seal(who, "broker.enroll", {"receipt": paid.raw, "deadline": "1h"},
                       subject=enroll)
            reply = await call((await w.bus(who)).nc, enroll, raw, key)
            assert code(reply) == "ok", reply.body
            jobs.append(reply.body["job"])
            again = seal(who, "broker.enroll", {"receipt": paid.raw, "deadline": "1h"},
                         subject=enroll)
            await expect((await w.bus(who)).nc, enroll, again, key, "already_redeemed")
        assert jobs[0] != jobs[1]  # two jobs, two keys: one per (payer, id)
