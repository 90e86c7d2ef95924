"""The bank over a real nats-server: the client API, and every bad request refused unchanged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tycoon.bank.audit import audit
from tycoon.bank.client import BankClient
from tycoon.bank.ledger import Ledger
from tycoon.bank.receipt import verify_receipt
from tycoon.bank.service import BankService
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bus import subjects
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.envelope import Message, open_envelope, seal
from tycoon.bus.keys import Identity
from tycoon.errors import Rejected
from tycoon.money import MAX_AMOUNT

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]


@dataclass
class Bank:
    url: str
    path: Path
    identity: Identity
    operator: Identity
    ledger: Ledger
    service: BankService
    buses: list[Bus]

    async def client(self, identity: Identity) -> BankClient:
        bus = await open_bus(self.url, identity)
        self.buses.append(bus)
        return BankClient(bus, self.identity.public_key, timeout=3.0)

    def state(self) -> tuple[Any, ...]:
        return (dict(self.ledger.accounts), self.ledger.seq, self.ledger.minted)


async def start_bank(url: str, path: Path, bank: Identity, operator: Identity,
                     buses: list[Bus]) -> tuple[Ledger, BankService]:
    ledger = Ledger(SqliteStore(path), bank, operator=operator.public_key)
    bus = await open_bus(url, bank)
    service = BankService(bus, ledger)
    await service.start()
    return ledger, service


async def stop_bank(ledger: Ledger, service: BankService) -> None:
    await service.stop()
    await service.bus.close()
    ledger.store.close()


@pytest.fixture
async def bank(nats_url: str, tmp_path: Path,
               identity_factory: Callable[[], Identity]) -> AsyncIterator[Bank]:
    ident, operator = identity_factory(), identity_factory()
    buses: list[Bus] = []
    ledger, service = await start_bank(nats_url, tmp_path / "bank.db", ident, operator, buses)
    state = Bank(nats_url, tmp_path / "bank.db", ident, operator, ledger, service, buses)
    yield state
    for bus in state.buses:
        await bus.close()
    with contextlib.suppress(Exception):
        await stop_bank(state.ledger, state.service)


async def funded(bank: Bank, identity_factory: Callable[[], Identity],
                 amount: int = 1000) -> tuple[BankClient, BankClient, BankClient]:
    alice = await bank.client(identity_factory())
    bob = await bank.client(identity_factory())
    op = await bank.client(bank.operator)
    await alice.open("alice")
    await bob.open("bob")
    await op.mint(alice.account, amount, "seed")
    return alice, bob, op


async def test_open_mint_transfer_balance_history_close(
    bank: Bank, identity_factory: Callable[[], Identity]
) -> None:
    alice, bob, op = await funded(bank, identity_factory)
    receipt = await alice.transfer(bob.account, 400, memo="lunch")
    assert verify_receipt(receipt.raw, bank.identity.public_key) == receipt
    assert (receipt.payer, receipt.payee, receipt.amount, receipt.memo) == (
        alice.account, bob.account, 400, "lunch")
    assert await alice.balance() == 600 and await bob.balance() == 400
    again = await alice.transfer(bob.account, 400, memo="lunch",
                                 transfer_id=receipt.transfer_id)
    assert again.raw == receipt.raw and await alice.balance() == 600
    history = await bob.history()
    assert [e["kind"] for e in history] == ["open", "transfer"]
    assert history[1]["receipt"] == receipt.raw and history[1]["amount"] == 400
    assert await op.balance(alice.account) == 600  # the operator may audit
    assert (await bank.client(bank.identity)) is not None
    await bob.transfer(alice.account, 400)
    closed = await bob.close()
    assert closed["account"] == bob.account
    with pytest.raises(Rejected) as info:
        await bob.balance()
    assert info.value.code == "unknown_account"
    info_body = await alice.info()
    assert info_body["bank"] == bank.identity.public_key
    assert audit(bank.ledger.store).ok


async def test_each_settlement_is_published(
    bank: Bank, identity_factory: Callable[[], Identity]
) -> None:
    alice, bob, _ = await funded(bank, identity_factory)
    watcher = await open_bus(bank.url, identity_factory())
    bank.buses.append(watcher)
    seen: list[bytes] = []
    done = asyncio.Event()

    async def on_settled(msg: Message) -> None:
        assert msg.sender == bank.identity.public_key and msg.kind == "bank.settled"
        seen.extend(msg.body["receipts"])
        if len(seen) >= 20:
            done.set()

    await watcher.subscribe(subjects.BANK_SETTLED, on_settled)
    await watcher.flush()
    receipts = await asyncio.gather(*[alice.transfer(bob.account, 1) for _ in range(20)])
    await asyncio.wait_for(done.wait(), 5)
    assert sorted(seen) == sorted(r.raw for r in receipts)
    assert len({r.seq for r in receipts}) == 20


async def raw_request(bus: Bus, subject: str, data: bytes) -> Message:
    """Send raw bytes as a request and return the bank's (signed) reply, unverified for replay."""
    resp = await bus.nc.request(subject, data, timeout=3.0)
    return open_envelope(resp.data)


async def expect_code(bank: Bank, code: str, coro: Any) -> None:
    before = bank.state()
    with pytest.raises(Rejected) as info:
        await coro
    assert info.value.code == code, info.value
    assert bank.state() == before


async def test_bad_requests_get_their_code_and_change_nothing(
    bank: Bank, identity_factory: Callable[[], Identity]
) -> None:
    alice, bob, op = await funded(bank, identity_factory)
    stranger = await bank.client(identity_factory())
    first = await alice.transfer(bob.account, 10, transfer_id="t-1")
    for amount in (0, -1, MAX_AMOUNT + 1, 1.5, "10", None, True):
        await expect_code(bank, "bad_amount", alice.transfer(bob.account, amount))  # type: ignore[arg-type]
    await expect_code(bank, "overdraft", alice.transfer(bob.account, 991))
    await expect_code(bank, "self_transfer", alice.transfer(alice.account, 5))
    await expect_code(bank, "unknown_account", alice.transfer(stranger.account, 5))
    await expect_code(bank, "unknown_account", stranger.transfer(alice.account, 5))
    await expect_code(bank, "unknown_account", alice.transfer("not-a-key", 5))
    await expect_code(bank, "conflict", alice.transfer(bob.account, 11, transfer_id="t-1"))
    await expect_code(bank, "forbidden", alice.mint(alice.account, 5))
    await expect_code(bank, "forbidden", stranger.balance(alice.account))
    await expect_code(bank, "forbidden", bob.history(account=alice.account))
    await expect_code(bank, "account_exists", alice.open())
    await expect_code(bank, "not_empty", alice.close())
    await expect_code(bank, "unknown_account", stranger.close())
    await expect_code(bank, "unknown_account", op.mint(stranger.account, 5))
    await expect_code(bank, "conflict", op.mint(alice.account, 5, "seed"))
    await expect_code(bank, "malformed", alice._call("transfer", {"amount": 5}, retry=False))
    await expect_code(bank, "malformed", alice.history(limit=0))
    await expect_code(bank, "malformed", alice.open("x" * 100))

    bus = alice.bus
    subject = subjects.bank("transfer")
    body = {"payee": bob.account, "amount": 5, "transfer_id": "raw-1", "memo": ""}
    good = seal(bus.identity, "bank.transfer", body, subject=subject)
    forged = good[:-1] + bytes([good[-1] ^ 1])
    someone_else = bytearray(seal(stranger.bus.identity, "bank.transfer", body,
                                  subject=subject))
    someone_else[3:35] = bus.identity.raw_public_key  # claims to be alice, signed by stranger
    cases = [
        (forged, "bad_signature"),
        (bytes(someone_else), "bad_signature"),
        (seal(bus.identity, "bank.transfer", body, subject=subjects.bank("balance")),
         "wrong_subject"),
        (seal(bus.identity, "bank.balance", {}, subject=subject), "unknown_kind"),
        (seal(bus.identity, "bank.transfer", body, subject=subject, ts_ns=1), "stale"),
        (b"not an envelope at all", "malformed"),
    ]
    for data, code in cases:
        before = bank.state()
        reply = await raw_request(bus, subject, data)
        assert reply.sender == bank.identity.public_key
        assert (reply.kind, reply.body["code"]) == ("error", code)
        assert bank.state() == before
    # a replay of an accepted request is refused, and pays nothing twice
    reply = await raw_request(bus, subject, good)
    assert reply.kind == "reply"
    after_once = bank.state()
    replayed = await raw_request(bus, subject, good)
    assert (replayed.kind, replayed.body["code"]) == ("error", "replayed")
    assert bank.state() == after_once
    assert await alice.balance() == 1000 - 10 - 5
    assert (await alice.transfer(bob.account, 10, transfer_id="t-1")).raw == first.raw
    report = audit(bank.ledger.store)
    assert report.ok and report.transfers == 2


async def test_client_refuses_a_reply_not_signed_by_the_bank(
    bank: Bank, identity_factory: Callable[[], Identity]
) -> None:
    alice, _, _ = await funded(bank, identity_factory)
    impostor = BankClient(alice.bus, identity_factory().public_key, timeout=3.0)
    with pytest.raises(Rejected) as info:
        await impostor.balance()
    assert info.value.code == "wrong_reply"


async def test_retry_after_restart_returns_the_identical_receipt(
    bank: Bank, identity_factory: Callable[[], Identity]
) -> None:
    alice, bob, _ = await funded(bank, identity_factory)
    receipt = await alice.transfer(bob.account, 77, transfer_id="restart-1")
    await stop_bank(bank.ledger, bank.service)
    with pytest.raises(Rejected) as info:
        await alice.balance()
    assert info.value.code in ("unavailable", "timeout")
    bank.ledger, bank.service = await start_bank(bank.url, bank.path, bank.identity,
                                                 bank.operator, bank.buses)
    again = await alice.transfer(bob.account, 77, transfer_id="restart-1")
    assert again.raw == receipt.raw
    assert await bob.balance() == 77
