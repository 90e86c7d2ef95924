"""An auctioneer pays a pending refund until it is paid: the bank (a real ``tycoon bank
serve`` process) is SIGKILLed before a user asks for a refund, stays down across several
retries, and is restarted. Nobody asks again: the auctioneer pays on its own, once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faults_kit import Proc, check_bank, check_host_store, eventually

from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.launch import RunningAuctioneer, start_auctioneer
from tycoon.bank.client import BankClient
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import Identity, KeyStore, subject_id
from tycoon.errors import Rejected
from tycoon.money import MICRO
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.faults, pytest.mark.timeout(120)]


@dataclass
class BankAndHost:
    """A real bank process (to SIGKILL and restart) and an in-process auctioneer."""

    url: str
    bank: Proc
    bank_key: str
    operator: Identity
    host_id: Identity
    auctioneer: RunningAuctioneer
    buses: list[Bus] = field(default_factory=list)

    async def user(self, minted: int, funded: int) -> tuple[BankClient, AuctioneerClient]:
        """A user with ``minted`` µcredits at the bank, ``funded`` of them paid to the host."""
        ident = Identity.generate()
        bus, op_bus = await open_bus(self.url, ident), await open_bus(self.url, self.operator)
        self.buses += [bus, op_bus]
        user_bank = BankClient(bus, self.bank_key, timeout=2.0)
        await eventually(lambda: _opened(user_bank), 20)
        await BankClient(op_bus, self.bank_key).mint(ident.public_key, minted)
        client = AuctioneerClient(bus, subject_id(self.host_id.public_key), timeout=3.0)
        await client.fund(await user_bank.transfer(self.host_id.public_key, funded))
        return user_bank, client


@contextlib.asynccontextmanager
async def bank_and_host(nats_url: str, tmp_path: Path) -> AsyncIterator[BankAndHost]:
    home = tmp_path / "home"
    keys = KeyStore(home)
    bank_key = keys.create("bank").public_key
    operator = keys.create("operator")
    bank = Proc("bank", nats_url, home, "--as", "bank", "bank", "serve", "--db",
                str(tmp_path / "bank.db"), "--operator-key", "operator", "--no-settlement-log")
    host_id = Identity.generate()
    auctioneer: RunningAuctioneer | None = None
    world: BankAndHost | None = None
    try:
        await bank.start()
        auctioneer = await start_auctioneer(
            nats_url, host_id, bank_key=bank_key, driver=SimulatedDriver(preset="small"),
            store_path=tmp_path / "host.db", name="h1", tick_s=0.1, heartbeat_s=0.5,
        )  # fmt: skip
        world = BankAndHost(nats_url, bank, bank_key, operator, host_id, auctioneer)
        yield world
    finally:
        if auctioneer is not None:
            await auctioneer.stop()
        for bus in world.buses if world is not None else []:
            await bus.close()
        await bank.stop(5)


async def test_pending_refund_is_paid_when_the_bank_returns(nats_url: str,
                                                            tmp_path: Path) -> None:
    async with bank_and_host(nats_url, tmp_path) as w:
        users = [await w.user(10 * MICRO, 4 * MICRO) for _ in range(3)]
        await w.bank.kill()
        for _, client in users:
            with pytest.raises(Rejected) as refused:
                await client.refund()
            assert refused.value.code == "unavailable"
        market = w.auctioneer.market
        assert len(market.pending) == 3
        assert sum(r.amount for r in market.pending.values()) == 12 * MICRO
        await asyncio.sleep(5)  # down across several retries (the cap is 2 s)
        assert len(market.pending) == 3
        await w.bank.start()

        async def all_paid() -> bool:
            return not market.pending

        await eventually(all_paid, 30)
        for user_bank, client in users:
            assert await user_bank.balance() == 10 * MICRO
            account = (await client.status(user_bank.account))["account"]
            assert account["pending_refunds"] == [] and account["balance"] == 0
            with pytest.raises(Rejected) as nothing:
                await client.refund()  # nothing left, and nothing is paid twice
            assert nothing.value.code == "no_funds"
    db = tmp_path / "bank.db"
    transfers = check_bank(db)
    assert sum(1 for t in transfers if t.startswith("refund")) == 3
    assert check_host_store(tmp_path / "host.db", w.host_id.public_key, db) == 12 * MICRO


async def _opened(bank: BankClient) -> bool:
    await bank.open(exist_ok=True)
    return True


async def test_a_payment_to_a_host_that_is_down_is_redeemed_by_settle(
        nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`tycoon host fund` pays, the host dies before it redeems: the receipt is kept, and
    `tycoon host settle` (from the bank's history) redeems it once the host is back."""
    import json

    from tycoon.auctioneer.client import pay_and_fund, wallet_dir
    from tycoon.bank.launch import start_bank
    from tycoon.cli.main import main

    bank_id, operator = Identity.generate(), Identity.generate()
    bank_service = await start_bank(nats_url, bank_id, db=tmp_path / "bank.db",
                                    operator=operator.public_key)
    home = tmp_path / "home"
    keys = KeyStore(home)
    host, alice = keys.create("h1"), keys.create("alice")

    async def serve_host():  # type: ignore[no-untyped-def]
        return await start_auctioneer(
            nats_url, host, bank_key=bank_id.public_key, driver=SimulatedDriver(preset="small"),
            store_path=tmp_path / "h1.db", name="h1", tick_s=0.2)

    auctioneer = await serve_host()
    alice_bus, op_bus = await open_bus(nats_url, alice), await open_bus(nats_url, operator)
    try:
        await BankClient(auctioneer.bus, bank_id.public_key).open(exist_ok=True)
        bank = BankClient(alice_bus, bank_id.public_key)
        await bank.open()
        await BankClient(op_bus, bank_id.public_key).mint(alice.public_key, 100 * MICRO)
        client = AuctioneerClient(alice_bus, subject_id(host.public_key), timeout=1.0)
        await client.host_key()
        await auctioneer.stop()  # the host dies between the payment and the funding
        wallet = wallet_dir(home, alice.public_key)
        with pytest.raises(Rejected, match="host settle"):
            await pay_and_fund(client, bank, 7 * MICRO, wallet=wallet)
        assert len(list(wallet.glob("*.receipt"))) == 1 and await bank.balance() == 93 * MICRO

        base = ["--nats", nats_url, "--home", str(home), "--as", "alice", "host", "settle",
                "--bank", bank_id.public_key, "--json", "--timeout", "1"]

        async def settle(*extra: str) -> tuple[int, dict]:
            capsys.readouterr()
            code = await asyncio.to_thread(main, [*base, *extra])
            return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])

        code, out = await settle()
        assert code == 3 and out["waiting"] == 1  # still down: it waits, listed
        auctioneer = await serve_host()
        code, out = await settle("--refund")
        assert code == 0, out
        assert [r["result"] for r in out["receipts"]] == ["redeemed"]
        assert out["refunds"] == {subject_id(host.public_key): 7 * MICRO}
        assert not list(wallet.glob("*.receipt"))
        code, out = await settle()
        assert code == 0 and [r["result"] for r in out["receipts"]] == ["done"]
        assert await bank.balance() == 100 * MICRO
    finally:
        await auctioneer.stop()
        for bus in (alice_bus, op_bus):
            await bus.close()
        await bank_service.stop()


async def test_a_refund_the_bank_refuses_does_not_hold_up_the_others(nats_url: str,
                                                                      tmp_path: Path) -> None:
    """A refund to a closed bank account is refused (and stays pending, never dropped);
    the refunds queued behind it are paid all the same."""
    async with bank_and_host(nats_url, tmp_path) as w:
        users = [await w.user(4 * MICRO, 4 * MICRO) for _ in range(2)]
        closer, _ = users[0]
        await closer.close()  # its refund will have nowhere to go
        await w.bank.kill()
        for _, client in users:  # the closed account's refund is first in line
            with pytest.raises(Rejected):
                await client.refund()
        await w.bank.start()
        market = w.auctioneer.market

        async def only_the_refused_one_left() -> bool:
            return [r.account for r in market.pending.values()] == [closer.account]

        await eventually(only_the_refused_one_left, 30)
        assert await users[1][0].balance() == 4 * MICRO
