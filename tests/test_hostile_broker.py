"""Hostile input against a broker, over a real nats-server with the per-role config.

A broker redeems bank receipts that pay it (budget + fee) into jobs. Forged, replayed,
misdirected and reused receipts, bad deadlines and resources, and 10,000 random or
mutated requests each get an error reply with its code; no job is created, no money
moves, and the broker still answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
    padded,
    secure_server,
    tally,
)
from world_kit import World, running_bank

from tycoon.agent.broker import Broker
from tycoon.agent.launch import launch as launch_broker
from tycoon.bank.ledger import Ledger
from tycoon.bank.receipt import make_receipt
from tycoon.bank.service import BankService
from tycoon.bus import subjects
from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity
from tycoon.money import MAX_AMOUNT, MICRO

pytestmark = [pytest.mark.nats, pytest.mark.hostile, pytest.mark.timeout(120)]

MIB = 1024 * 1024
MIN_FEE = 2


@dataclass
class BrokerWorld(World):
    ledger: Ledger
    bank: BankService
    broker: Broker

    @property
    def key(self) -> str:
        return self.cast.broker.public_key

    def subject(self, op: str) -> str:
        return subjects.broker(self.broker.id, op)

    async def pay(self, payer: Identity, payee: str, amount: int) -> bytes:
        client = await self.bank_client(payer)
        return (await client.transfer(payee, amount, memo="broker enrollment")).raw

    def state(self) -> tuple[Any, ...]:
        jobs = self.broker.db.execute(
            "SELECT transfer_id, user, key_name, budget, fee FROM jobs ORDER BY transfer_id"
        ).fetchall()
        return jobs, dict(self.ledger.accounts), self.ledger.seq, self.ledger.minted


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[BrokerWorld]:
    cast = Cast()
    async with secure_server(tmp_path, cast) as server, \
            running_bank(server, cast, tmp_path / "bank.db") as (ledger, bank), \
            launch_broker(server.url, cast.broker, bank_key=cast.bank.public_key,
                          state=tmp_path / "broker", fee_percent=5,
                          min_fee=MIN_FEE) as running:
        w = BrokerWorld(cast, server, ledger, bank, running.broker)
        try:
            await w.open_accounts((user, 1000) for user in cast.users)  # alice, bob, mallory
            yield w
        finally:
            await w.close_buses()


async def settled(w: BrokerWorld) -> tuple[Any, ...]:
    """The state once every job has moved its budget (the jobs then wait on the market)."""
    for _ in range(200):
        rows = w.broker.db.execute("SELECT status FROM jobs").fetchall()
        if all(status != "new" for (status,) in rows):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    return w.state()


async def test_receipts_deadlines_and_resources(world: BrokerWorld) -> None:
    w = world
    enroll = w.subject("enroll")
    alice_nc, nc = (await w.bus(w.alice)).nc, (await w.bus(w.mallory)).nc

    def enroll_by(who: Identity, receipt: Any, deadline: Any = "1h", **extra: Any) -> bytes:
        return seal(who, "broker.enroll", {"receipt": receipt, "deadline": deadline, **extra},
                    subject=enroll)

    paid = await w.pay(w.alice, w.key, 20 * MICRO)
    to_host = await w.pay(w.alice, w.cast.users[1].public_key, MICRO)
    tiny = await w.pay(w.mallory, w.key, 1)  # less than the broker's minimum fee
    before = await settled(w)
    # forged receipts: signed by another key, or the bank's signature broken
    for signer in (w.mallory, w.cast.broker):
        fake = make_receipt(signer, transfer_id="fake", payer=w.mallory.public_key,
                            payee=w.key, amount=MAX_AMOUNT, memo="", seq=1,
                            settled_ns=time.time_ns())
        await expect(nc, enroll, enroll_by(w.mallory, fake), w.key, "bad_receipt")
    broken = bytearray(paid)
    broken[-3] ^= 4
    await expect(alice_nc, enroll, enroll_by(w.alice, bytes(broken)), w.key, "bad_receipt")
    for junk in (b"", b"\x00" * 100, 7, None, "receipt", paid * 2):
        await expect(nc, enroll, enroll_by(w.mallory, junk), w.key, "bad_receipt", "malformed")
    # a real receipt that pays someone else; alice's receipt presented by mallory
    await expect(alice_nc, enroll, enroll_by(w.alice, to_host), w.key, "wrong_host")
    await expect(nc, enroll, enroll_by(w.mallory, paid), w.key, "forbidden")
    # a budget that is nothing once the fee is taken
    await expect(nc, enroll, enroll_by(w.mallory, tiny), w.key, "bad_amount")
    # invalid deadlines, resources and host counts
    bad: list[dict[str, Any]] = [
        {"deadline": d} for d in ("0", "-1h", "1x", "", "nan", "9" * 400 + "y", "101y", 5,
                                  None, 1.5, float("nan"), ["1h"])
    ]
    bad += [{"resource": r} for r in ("gpu", "CPU ", "cpu.>", 5, ["cpu"])]
    bad += [{"max_hosts": n} for n in (0, -1, -(2**63), 1.5, "2", float("inf"))]
    for extra in bad:
        body = {"deadline": "1h", **extra}
        got = code(await call(alice_nc, enroll, enroll_by(w.alice, paid, **body), w.key))
        assert got in ("bad_bid", "malformed"), (extra, got)
    # stale, future, forged, on another subject, oversize, deeply nested
    now = time.time_ns()
    for ts in (now - 61 * NS, now + 61 * NS):
        raw = seal(w.alice, "broker.enroll", {"receipt": paid, "deadline": "1h"},
                   subject=enroll, ts_ns=ts)
        await expect(alice_nc, enroll, raw, w.key, "stale")
    raw = forged(w.alice, w.mallory, "broker.enroll", {"receipt": paid, "deadline": "1h"},
                 enroll)
    await expect(nc, enroll, raw, w.key, "bad_signature")
    raw = seal(w.alice, "broker.enroll", {"receipt": paid, "deadline": "1h"},
               subject=subjects.broker("otherbroker00000", "enroll"))
    await expect(alice_nc, enroll, raw, w.key, "wrong_subject")
    await expect(alice_nc, enroll, padded(w.alice, "broker.enroll", enroll,
                                          {"receipt": paid, "deadline": "1h"}, MIB + 1),
                 w.key, "too_large")
    await expect(alice_nc, enroll, deep_msgpack(w.alice, "broker.enroll", enroll, 200_000),
                 w.key, "too_deep", "malformed")
    assert w.state() == before
    # the legitimate enrollment works once; its bytes again are a replay; the receipt again
    # (new envelope) is already redeemed
    legit = enroll_by(w.alice, paid)
    assert code(await call(alice_nc, enroll, legit, w.key)) == "ok"
    after = await settled(w)
    await expect(alice_nc, enroll, legit, w.key, "replayed")
    await expect(alice_nc, enroll, enroll_by(w.alice, paid), w.key, "already_redeemed")
    status = w.subject("status")
    reply = await call(nc, status, seal(w.mallory, "broker.status", {}, subject=status), w.key)
    assert reply.body["jobs"] == []  # mallory sees none of alice's jobs
    assert w.state() == after


async def test_ten_thousand_random_and_mutated_requests(world: BrokerWorld) -> None:
    w = world
    paid = await w.pay(w.alice, w.key, 20 * MICRO)
    alice_nc = (await w.bus(w.alice)).nc
    raw = seal(w.alice, "broker.enroll", {"receipt": paid, "deadline": "1h"},
               subject=w.subject("enroll"))
    assert code(await call(alice_nc, w.subject("enroll"), raw, w.key)) == "ok"
    to_host = await w.pay(w.alice, w.cast.users[1].public_key, MICRO)
    attacker = w.cast.agents[0]
    bus = await w.bus(attacker)
    values = (paid, to_host, w.alice.public_key, attacker.public_key, w.key, "1h", "cpu", 2)
    targets = [
        Target(w.subject("enroll"), "broker.enroll",
               {"receipt": paid, "deadline": "1h", "resource": "cpu", "max_hosts": 2}),
        Target(w.subject("status"), "broker.status", {}),
    ]
    fuzzer = Fuzzer(attacker, targets, values=values,
                    other_subjects=(subjects.broker("otherbroker00000", "enroll"),
                                    subjects.bank("transfer")))
    items = fuzzer.messages(draw_recipes())
    before = await settled(w)
    w.broker.service.set_rate_limit(None)  # limits: test_hostile_flood.py
    replies = await flood(bus.nc, bus.inbox_prefix, items, w.key)
    assert_no_success_except(items, replies, {w.subject("status")})
    counts = tally(replies)
    print("replies by code:", dict(counts))
    for expected in ("bad_signature", "malformed", "stale", "replayed", "bad_receipt",
                     "forbidden"):
        assert counts[expected] > 0, counts
    assert w.state() == before
    status = w.subject("status")
    reply = await call(alice_nc, status, seal(w.alice, "broker.status", {}, subject=status),
                       w.key)
    assert len(reply.body["jobs"]) == 1
