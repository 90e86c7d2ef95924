"""Hostile input against the bank, over a real nats-server with the per-role config.

Every hostile request gets a signed error reply with its code; afterwards the ledger
(accounts, sequence, minted total, the audit of the store) is exactly as before and the
bank still answers normally.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
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
    signed_payload,
    tally,
    wait_for,
)
from structlog.testing import capture_logs
from world_kit import World, running_bank

from tycoon.bank.audit import audit
from tycoon.bank.client import BankClient
from tycoon.bank.ledger import Ledger
from tycoon.bank.service import BankService
from tycoon.bus import subjects
from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity
from tycoon.money import MAX_AMOUNT, MICRO

pytestmark = [pytest.mark.nats, pytest.mark.hostile, pytest.mark.timeout(120)]

MIB = 1024 * 1024


@dataclass
class BankWorld(World):
    ledger: Ledger
    service: BankService

    @property
    def key(self) -> str:
        return self.cast.bank.public_key

    async def client(self, identity: Identity) -> BankClient:
        return await self.bank_client(identity, timeout=5.0)

    def state(self) -> tuple[Any, ...]:
        report = audit(self.ledger.store)
        assert report.ok, report.to_dict()
        return (dict(self.ledger.accounts), self.ledger.seq, self.ledger.minted,
                self.ledger.total_balances())


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[BankWorld]:
    cast = Cast()
    async with secure_server(tmp_path, cast) as server, \
            running_bank(server, cast, tmp_path / "bank.db") as (ledger, service):
        w = BankWorld(cast, server, ledger, service)
        try:
            await w.open_accounts([(w.alice, 1000), (w.bob, 100), (w.mallory, 0)])
            yield w
        finally:
            await w.close_buses()


def transfer_body(payee: str, amount: Any, transfer_id: str = "t-1") -> dict[str, Any]:
    return {"payee": payee, "amount": amount, "transfer_id": transfer_id, "memo": ""}


async def test_forged_wrong_key_replayed_and_stale_requests(world: BankWorld) -> None:
    w = world
    nc = (await w.bus(w.mallory)).nc
    alice_nc = (await w.bus(w.alice)).nc
    transfer = subjects.bank("transfer")
    # a legitimate transfer first: its bytes are what an eavesdropper would replay
    legit = seal(w.alice, "bank.transfer", transfer_body(w.bob.public_key, 5 * MICRO, "legit"),
                 subject=transfer)
    assert code(await call(alice_nc, transfer, legit, w.key)) == "ok"
    before = w.state()

    # forged: names alice as the sender, signed by mallory
    raw = forged(w.alice, w.mallory, "bank.transfer",
                 transfer_body(w.mallory.public_key, MICRO, "steal"), transfer)
    await expect(nc, transfer, raw, w.key, "bad_signature")
    # tampered: a byte of a good envelope changed after signing
    tampered = bytearray(legit)
    tampered[-70] ^= 1
    await expect(nc, transfer, bytes(tampered), w.key, "bad_signature")
    # valid signatures by the wrong key for the account
    for op, body in (
        ("balance", {"account": w.alice.public_key}),
        ("history", {"account": w.alice.public_key}),
        ("mint", {"account": w.mallory.public_key, "amount": MICRO, "mint_id": "m"}),
    ):
        raw = seal(w.mallory, f"bank.{op}", body, subject=subjects.bank(op))
        await expect(nc, subjects.bank(op), raw, w.key, "forbidden")
    # a payer field is ignored: the payer IS the signer (mallory holds nothing)
    raw = seal(w.mallory, "bank.transfer",
               {**transfer_body(w.mallory.public_key, MICRO, "x"), "payer": w.alice.public_key},
               subject=transfer)
    await expect(nc, transfer, raw, w.key, "self_transfer")
    raw = seal(w.mallory, "bank.transfer", transfer_body(w.bob.public_key, MICRO, "y"),
               subject=transfer)
    await expect(nc, transfer, raw, w.key, "overdraft")
    # the same bytes again, by anyone, on the same or another subject (and a log line)
    with capture_logs() as logs:
        await expect(nc, transfer, legit, w.key, "replayed")
    assert any(e.get("code") == "replayed" and e.get("log_level") == "warning" for e in logs)
    await expect(alice_nc, transfer, legit, w.key, "replayed")
    for op in ("mint", "close", "open"):
        await expect(nc, subjects.bank(op), legit, w.key, "wrong_subject")
    # signed for one subject, sent to the bank on another
    raw = seal(w.alice, "bank.transfer", transfer_body(w.bob.public_key, MICRO, "z"),
               subject=subjects.host_op("abc", "fund"))
    await expect(alice_nc, transfer, raw, w.key, "wrong_subject")
    # stale and future timestamps (the window is 60 s), and absurd ones
    now = time.time_ns()
    for ts in (now - 61 * NS, now + 61 * NS, 0, 1, 2**63 - 1):
        raw = seal(w.alice, "bank.transfer", transfer_body(w.bob.public_key, MICRO, f"ts{ts}"),
                   subject=transfer, ts_ns=ts)
        await expect(alice_nc, transfer, raw, w.key, "stale")
    # kinds that do not belong here
    raw = seal(w.alice, "price", transfer_body(w.bob.public_key, MICRO, "k"), subject=transfer)
    await expect(alice_nc, transfer, raw, w.key, "unknown_kind")
    raw = signed_payload(w.alice, msgpack.packb(
        ["bank.steal", transfer, b"", time.time_ns(), b"\x00" * 16, {}]))
    await expect(alice_nc, transfer, raw, w.key, "unknown_kind")
    assert w.state() == before
    assert w.service.service.stats.rejections["replayed"] >= 2


async def test_bad_amounts_accounts_sizes_and_nesting(world: BankWorld) -> None:
    w = world
    alice_nc = (await w.bus(w.alice)).nc
    op_nc = (await w.bus(w.cast.operator)).nc
    before = w.state()
    transfer, mint = subjects.bank("transfer"), subjects.bank("mint")
    bad = (0, -1, -(2**63), 1.5, float("nan"), float("inf"), float("-inf"), "10", "1e3", True,
           None, b"\x01", [1], {"v": 1}, 2**63, 2**64 - 1)
    for i, amount in enumerate(bad):
        raw = seal(w.alice, "bank.transfer", transfer_body(w.bob.public_key, amount, f"a{i}"),
                   subject=transfer)
        await expect(alice_nc, transfer, raw, w.key, "bad_amount")
        raw = seal(w.cast.operator, "bank.mint",
                   {"account": w.bob.public_key, "amount": amount, "mint_id": f"m{i}"},
                   subject=mint)
        await expect(op_nc, mint, raw, w.key, "bad_amount")
    # the largest amount is well-formed, but nobody holds it; minting it overflows the ledger
    raw = seal(w.alice, "bank.transfer", transfer_body(w.bob.public_key, MAX_AMOUNT, "max"),
               subject=transfer)
    await expect(alice_nc, transfer, raw, w.key, "overdraft")
    raw = seal(w.cast.operator, "bank.mint",
               {"account": w.bob.public_key, "amount": MAX_AMOUNT, "mint_id": "max"},
               subject=mint)
    await expect(op_nc, mint, raw, w.key, "bad_amount")
    # unknown accounts and ids that are not keys
    for payee in (Identity.generate().public_key, "nobody", "", "U" + "A" * 55, "x" * 64):
        raw = seal(w.alice, "bank.transfer", transfer_body(payee, MICRO, f"p{payee[:9]}"),
                   subject=transfer)
        await expect(alice_nc, transfer, raw, w.key, "unknown_account", "malformed")
    for field_, value in (("transfer_id", ""), ("transfer_id", "x" * 129), ("transfer_id", 7),
                          ("transfer_id", "a\nb"), ("memo", "m" * 257), ("memo", "\x00"),
                          ("payee", None), ("payee", 5)):
        body = {**transfer_body(w.bob.public_key, MICRO, "f"), field_: value}
        raw = seal(w.alice, "bank.transfer", body, subject=transfer)
        await expect(alice_nc, transfer, raw, w.key, "malformed")
    history = subjects.bank("history")
    for offset, limit in ((2**63, 10), (2**64 - 1, 10), (-1, 10), (0, 0), (0, 2**63), (0, -5),
                          (1.5, 10), ("0", 10)):
        raw = seal(w.alice, "bank.history", {"offset": offset, "limit": limit}, subject=history)
        await expect(alice_nc, history, raw, w.key, "malformed")
    # sizes: at the envelope limit the request is handled; one byte more is refused
    balance = subjects.bank("balance")
    raw = padded(w.alice, "bank.balance", balance, {}, MIB)
    assert len(raw) == MIB
    assert code(await call(alice_nc, balance, raw, w.key)) == "ok"
    raw = padded(w.alice, "bank.balance", balance, {}, MIB + 1)
    await expect(alice_nc, balance, raw, w.key, "too_large")
    # nesting: one level over the limit, and far beyond what a recursive decoder survives
    raw = seal(w.alice, "bank.balance", {"x": nested(20)}, subject=balance)
    await expect(alice_nc, balance, raw, w.key, "too_deep")
    raw = deep_msgpack(w.alice, "bank.balance", balance, 200_000)
    await expect(alice_nc, balance, raw, w.key, "too_deep", "malformed")
    # a request without a reply subject is dropped and counted
    dropped = w.service.service.stats.rejections["malformed"]
    await alice_nc.publish(transfer, seal(w.alice, "bank.transfer",
                                          transfer_body(w.bob.public_key, MICRO, "noreply"),
                                          subject=transfer))
    await wait_for(lambda: w.service.service.stats.rejections["malformed"] > dropped)
    assert w.state() == before
    # still answers normally
    receipt = await (await w.client(w.alice)).transfer(w.bob.public_key, MICRO)
    assert receipt.amount == MICRO


async def test_ten_thousand_random_and_mutated_requests(world: BankWorld) -> None:
    w = world
    attacker = w.cast.agents[0]  # authenticated, no bank account
    bus = await w.bus(attacker)
    values = (w.alice.public_key, w.bob.public_key, w.mallory.public_key, w.key,
              w.cast.operator.public_key, attacker.public_key, "legit", "t-1")
    targets = [
        Target(subjects.bank("open"), "bank.open", {"name": "x"}, fuzz_body=False),
        Target(subjects.bank("mint"), "bank.mint",
               {"account": attacker.public_key, "amount": MICRO, "mint_id": "m"}),
        Target(subjects.bank("transfer"), "bank.transfer",
               transfer_body(w.alice.public_key, MICRO)),
        Target(subjects.bank("balance"), "bank.balance", {"account": w.alice.public_key}),
        Target(subjects.bank("history"), "bank.history", {"offset": 0, "limit": 10}),
        Target(subjects.bank("close"), "bank.close", {}),
        Target(subjects.bank("info"), "bank.info", {}),
    ]
    fuzzer = Fuzzer(attacker, targets, values=values,
                    other_subjects=(subjects.BANK_SETTLED, subjects.host_op("abc", "fund")))
    items = fuzzer.messages(draw_recipes())
    assert len(items) >= 10_000
    before = w.state()
    w.service.service.set_rate_limit(None)  # limits: test_hostile_flood.py
    replies = await flood(bus.nc, bus.inbox_prefix, items, w.key)
    counts = tally(replies)
    print("replies by code:", dict(counts))
    assert_no_success_except(items, replies, {subjects.bank(op)
                                              for op in ("balance", "history", "info")})
    for expected in ("bad_signature", "malformed", "stale", "replayed", "wrong_subject",
                     "unknown_kind", "forbidden", "unknown_account"):
        assert counts[expected] > 0, counts
    assert w.state() == before
    receipt = await (await w.client(w.alice)).transfer(w.bob.public_key, MICRO)
    assert receipt.payee == w.bob.public_key
