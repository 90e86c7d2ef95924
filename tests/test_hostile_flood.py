"""Floods over a real nats-server: per-key rate limits in every service, and the bank's
account-opening budget and fee.

The attacker is an admitted principal sending valid, signed requests as fast as it can
(without waiting for replies); one key floods, another key meanwhile is served.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hostile_kit import forged, open_reply

from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.launch import RunningAuctioneer, start_auctioneer
from tycoon.bank.audit import audit
from tycoon.bank.client import BankClient
from tycoon.bank.launch import launch as launch_bank
from tycoon.bank.ledger import Ledger
from tycoon.bank.receipt import verify_receipt
from tycoon.bank.service import BankService
from tycoon.bus import ratelimit, subjects
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity, host_id, subject_id
from tycoon.bus.ratelimit import RateLimit
from tycoon.errors import Rejected
from tycoon.money import MICRO
from tycoon.natsserver import NatsServer
from tycoon.sls.client import SLSClient
from tycoon.sls.launch import launch as launch_sls
from tycoon.sls.service import SLSConfig
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.hostile, pytest.mark.timeout(120)]


async def blast(nc: Any, signer: Identity, subject: str, kind: str, body: dict[str, Any],
                count: int, service_key: str, *, forger: Identity | None = None
                ) -> collections.Counter[str]:
    """Send ``count`` requests signed by ``signer`` (or bearing its key but signed by
    ``forger``) open loop, replies to its inbox; the codes of the (verified) replies."""
    inbox = f"_INBOX.{subject_id(signer.public_key)}.blast{time.monotonic_ns()}"
    sent: dict[str, bytes] = {}
    codes: collections.Counter[str] = collections.Counter()
    last = [time.monotonic()]

    async def on_reply(msg: Any) -> None:
        reply = open_reply(sent[msg.subject], msg.data, service_key)
        codes["ok" if reply.kind == "reply" else reply.body["code"]] += 1
        if reply.kind == "error" and reply.body["code"] == "rate_limited":
            assert "retry in" in reply.body["message"]
        last[0] = time.monotonic()

    sub = await nc.subscribe(f"{inbox}.*", cb=on_reply)
    for i in range(count):
        raw = (seal(signer, kind, body, subject=subject) if forger is None
               else forged(signer, forger, kind, body, subject))
        sent[f"{inbox}.{i}"] = raw
        await nc.publish(subject, raw, reply=f"{inbox}.{i}")
    await nc.flush()
    last[0] = time.monotonic()
    # done when every request is answered; a quiet 3 s means the rest never will be (0.5 s
    # was too short for a bank answering 200 opens on a loaded machine)
    while time.monotonic() - last[0] < 3.0 and sum(codes.values()) < count:
        await asyncio.sleep(0.05)
    await sub.unsubscribe()
    return codes


@dataclass
class World:
    server: NatsServer
    bank_id: Identity
    operator: Identity
    ledger: Ledger
    bank: BankService
    buses: dict[str, Bus] = field(default_factory=dict)

    async def bus(self, identity: Identity) -> Bus:
        if identity.public_key not in self.buses:
            self.buses[identity.public_key] = await open_bus(self.server.url, identity)
        return self.buses[identity.public_key]

    async def client(self, identity: Identity) -> BankClient:
        return BankClient(await self.bus(identity), self.bank_id.public_key, timeout=5.0)

    async def funded(self, identity: Identity, credits: int = 1000) -> BankClient:
        client = await self.client(identity)
        await client.open()
        await (await self.client(self.operator)).mint(identity.public_key, credits * MICRO)
        return client


@contextlib.asynccontextmanager
async def world(tmp_path: Path, **bank_options: Any) -> AsyncIterator[World]:
    bank_id, operator = Identity.generate(), Identity.generate()
    async with NatsServer() as server, launch_bank(
            server.url, bank_id, db=tmp_path / "bank.db", operator=operator.public_key,
            **bank_options) as bank:
        w = World(server, bank_id, operator, bank.ledger, bank.service)
        try:
            yield w
        finally:
            for bus in w.buses.values():
                with contextlib.suppress(Exception):
                    await bus.close()


async def host(w: World, tmp_path: Path) -> RunningAuctioneer:
    running = await start_auctioneer(
        w.server.url, Identity.generate(), bank_key=w.bank_id.public_key,
        driver=SimulatedDriver(preset="medium"), store_path=tmp_path / "host.db")
    await BankClient(running.bus, w.bank_id.public_key).open(exist_ok=True)
    return running


def admitted_at_most(limit: RateLimit, seconds: float) -> float:
    return limit.burst + limit.rate * seconds


async def test_a_key_flooding_an_auctioneer_is_refused_while_another_is_served(
        tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        running = await host(w, tmp_path)
        try:
            hid = host_id(running.bus.identity.public_key)
            victim, attacker = Identity.generate(), Identity.generate()
            clients = {}
            for who in (victim, attacker):
                bank = await w.funded(who)
                client = AuctioneerClient(await w.bus(who), hid)
                await client.fund(await bank.transfer(running.bus.identity.public_key,
                                                      100 * MICRO))
                clients[who.public_key] = client
            subject = subjects.host_op(hid, "bid")
            body = {"duration": "1h", "resources": "cpu:5 memory:5"}

            async def honest() -> list[str]:
                outcomes = []
                for k in range(15):  # 15 bids at 10/s: within the auctioneer's limit
                    try:
                        await clients[victim.public_key].bid(f"{k + 1}m cpu:1,0.1")
                        outcomes.append("ok")
                    except Rejected as error:
                        outcomes.append(error.code)
                    await asyncio.sleep(0.1)
                return outcomes

            start = time.monotonic()
            codes, outcomes = await asyncio.gather(
                blast((await w.bus(attacker)).nc, attacker, subject, "host.bid", body, 3000,
                      running.bus.identity.public_key),
                honest())
            elapsed = time.monotonic() - start
            assert outcomes == ["ok"] * 15
            assert codes["rate_limited"] > 0, codes
            assert set(codes) <= {"ok", "rate_limited"}, codes
            assert codes["ok"] <= admitted_at_most(ratelimit.AUCTIONEER, elapsed), codes
            stats = running.service.service.stats
            assert stats.rate_limited == 3000 - codes["ok"]
            # the victim's bid stands as placed, and the market is consistent
            bid = running.service.market.accounts[victim.public_key].bid
            assert bid is not None and bid.text.startswith("cpu:1")
            assert running.service.market.conserved()
        finally:
            await running.stop()


async def test_a_refusal_says_when_to_retry_and_the_key_is_served_after(
        tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        w.bank.service.set_rate_limit(RateLimit(rate=4, burst=3, max_pending=4, parallel=1))
        alice = await w.funded(Identity.generate())
        alice.retries = 0  # to see the refusal itself: clients retry rate_limited by default
        await asyncio.sleep(1.0)  # the bucket refills after opening and funding
        for _ in range(3):
            await alice.balance()
        with pytest.raises(Rejected) as refused:
            await alice.balance()
        assert refused.value.code == "rate_limited"
        assert re.search(r"4 requests/s per key \(burst 3\); retry in 0\.\d{3} s",
                         refused.value.message), refused.value.message
        await asyncio.sleep(0.3)
        assert await alice.balance() == 1000 * MICRO
        alice.retries = 3  # a refusal means nothing was done: the client waits and sends again
        assert [await alice.balance() for _ in range(6)] == [1000 * MICRO] * 6


async def test_forged_requests_in_a_victims_name_do_not_spend_its_tokens(
        tmp_path: Path) -> None:
    """Tokens are taken only after the signature verified: a flood of forgeries bearing
    the victim's key is refused (as forged, or, while too many of them wait, as
    rate_limited by the claimed key's pending cap), and the victim keeps its whole burst."""
    async with world(tmp_path) as w:
        limit = RateLimit(rate=1, burst=10, max_pending=10, parallel=1)
        w.bank.service.set_rate_limit(limit)
        victim, mallory = Identity.generate(), Identity.generate()
        await w.funded(victim)
        await asyncio.sleep(limit.burst / limit.rate)  # full bucket again
        nc = (await w.bus(mallory)).nc
        codes = await blast(nc, victim, subjects.bank("balance"), "bank.balance", {}, 300,
                            w.bank_id.public_key, forger=mallory)
        assert codes["ok"] == 0 and codes["bad_signature"] > 0, codes
        assert set(codes) <= {"bad_signature", "rate_limited"}, codes
        client = await w.client(victim)
        for _ in range(limit.burst):
            await client.balance()


async def test_the_sls_limits_a_flooding_key_too(tmp_path: Path) -> None:
    async with NatsServer() as server, \
            launch_sls(server.url, None, SLSConfig(warm_start_s=0)) as running:
        sls = running.service
        buses = [await open_bus(server.url, Identity.generate()) for _ in range(2)]
        try:
            attacker, victim = buses
            codes, rows = await asyncio.gather(
                blast(attacker.nc, attacker.identity, subjects.sls("query"), "sls.query",
                      {"resource": "cpu"}, 2000, sls.bus.identity.public_key),
                SLSClient(victim).query("cpu"))
            assert rows == []
            assert codes["rate_limited"] > 0 and codes["ok"] <= 1000, codes
            assert sls.service.stats.rate_limited == 2000 - codes["ok"]
        finally:
            for bus in buses:
                await bus.close()


async def test_free_keys_cannot_open_accounts_beyond_the_banks_opening_budget(
        tmp_path: Path) -> None:
    """The reproduction: 20,000 accounts from self-generated keys in 3.2 s. Here 200 keys
    try at once against a budget of 10 at once and 5 a second; the operator is not counted."""
    async with world(tmp_path, open_rate=5, open_burst=10) as w:
        before = len(w.ledger.accounts)
        keys = [Identity.generate() for _ in range(200)]
        nc = (await w.bus(keys[0])).nc  # one connection signing as many keys
        start = time.monotonic()
        replies = await asyncio.gather(*(
            blast(nc, k, subjects.bank("open"), "bank.open", {}, 1, w.bank_id.public_key)
            for k in keys))
        elapsed = time.monotonic() - start
        codes = sum(replies, collections.Counter())
        assert codes["ok"] <= 10 + 5 * elapsed, codes
        assert codes["rate_limited"] == 200 - codes["ok"], codes
        assert len(w.ledger.accounts) == before + codes["ok"]
        late = Identity.generate()
        await (await w.client(w.operator)).open(account=late.public_key)  # exempt
        assert late.public_key in w.ledger.accounts


async def test_an_opening_fee_is_paid_by_a_sponsor_and_money_is_conserved(
        tmp_path: Path) -> None:
    fee = 3 * MICRO
    async with world(tmp_path, open_fee=fee) as w:
        operator = await w.client(w.operator)
        sponsor_id, newcomer, poor_id = (Identity.generate() for _ in range(3))
        await operator.open(account=sponsor_id.public_key)
        await operator.mint(sponsor_id.public_key, 10 * MICRO)
        newcomer_client = await w.client(newcomer)
        with pytest.raises(Rejected) as refused:  # opening oneself is not free any more
            await newcomer_client.open()
        assert refused.value.code == "forbidden" and "3 credits" in refused.value.message
        sponsor = await w.client(sponsor_id)
        reply = await sponsor.open("new", account=newcomer.public_key)
        assert reply["account"] == newcomer.public_key and reply["fee"] == fee
        receipt = verify_receipt(reply["receipt"], w.bank_id.public_key)
        assert (receipt.payer, receipt.payee, receipt.amount) == (
            sponsor_id.public_key, w.bank_id.public_key, fee)
        assert await sponsor.balance() == 7 * MICRO
        assert await newcomer_client.balance() == 0
        # a sponsor that cannot pay opens nothing; a second opening is refused before paying
        await operator.open(account=poor_id.public_key)
        with pytest.raises(Rejected) as broke:
            await (await w.client(poor_id)).open(account=Identity.generate().public_key)
        assert broke.value.code == "overdraft"
        with pytest.raises(Rejected) as again:
            await sponsor.open(account=newcomer.public_key)
        assert again.value.code == "account_exists"
        assert await sponsor.balance() == 7 * MICRO
        report = audit(w.ledger.store)
        assert report.ok, report.to_dict()
        assert w.ledger.total_balances() == w.ledger.minted == 10 * MICRO
        assert w.ledger.accounts[w.bank_id.public_key].balance == fee


async def test_without_a_fee_only_the_operator_opens_another_keys_account(
        tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        mallory = await w.funded(Identity.generate())
        with pytest.raises(Rejected) as refused:
            await mallory.open(account=Identity.generate().public_key)
        assert refused.value.code == "forbidden"


async def test_transfers_sent_again_after_rate_limited_pay_exactly_once(
        tmp_path: Path) -> None:
    """A rate_limited refusal means nothing was done, so the client sends the transfer
    again: the best a hostile timing can make of it is a second payment. Payments fired
    together through a tight limit (with retries racing the refill) each pay once, and a
    retried id answers with the first receipt."""
    async with world(tmp_path) as w:
        w.bank.service.set_rate_limit(RateLimit(rate=5, burst=2, max_pending=8, parallel=1))
        alice = await w.funded(Identity.generate())
        # a refusal past the key's refusal budget is dropped unanswered: a timeout, sent
        # again like a rate_limited one (a transfer id makes either safe)
        alice.retries, alice.retry_wait, alice.timeout = 8, 0.1, 1.0
        bob_id = Identity.generate()
        await (await w.client(bob_id)).open()
        bob = bob_id.public_key
        await asyncio.sleep(1.0)  # the bucket refills after opening and funding
        ids = [f"pay-{k}" for k in range(6)]
        receipts = await asyncio.gather(*(alice.transfer(bob, MICRO, transfer_id=t)
                                          for t in ids))
        assert sorted(r.transfer_id for r in receipts) == ids
        again = await alice.transfer(bob, MICRO, transfer_id=ids[0])
        assert again.raw == next(r.raw for r in receipts if r.transfer_id == ids[0])
        assert await alice.balance() == 1000 * MICRO - 6 * MICRO
        assert w.bank.service.stats.rate_limited > 0  # the limit really refused some
