"""An auctioneer pays a pending refund until it is paid: the bank (a real ``tycoon bank
serve`` process) is SIGKILLed before a user asks for a refund, stays down across several
retries, and is restarted. Nobody asks again: the auctioneer pays on its own, once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from faults_kit import Proc, check_bank, check_host_store, eventually

from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.launch import start_auctioneer
from tycoon.bank.client import BankClient
from tycoon.bus.connection import open_bus
from tycoon.bus.keys import Identity, KeyStore, subject_id
from tycoon.errors import Rejected
from tycoon.money import MICRO
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.faults, pytest.mark.timeout(120)]


async def test_pending_refund_is_paid_when_the_bank_returns(nats_url: str,
                                                            tmp_path: Path) -> None:
    home = tmp_path / "home"
    keys = KeyStore(home)
    bank_key = keys.create("bank").public_key
    operator = keys.create("operator")
    db = tmp_path / "bank.db"
    bank = Proc("bank", nats_url, home, "--as", "bank", "bank", "serve", "--db", str(db),
                "--operator-key", "operator", "--no-settlement-log")
    host_id = Identity.generate()
    buses = []
    auctioneer = None
    try:
        await bank.start("ready")
        auctioneer = await start_auctioneer(
            nats_url, host_id, bank_key=bank_key, driver=SimulatedDriver(preset="small"),
            store_path=tmp_path / "host.db", name="h1", tick_s=0.1, heartbeat_s=0.5,
        )  # fmt: skip
        users = []
        for _ in range(3):
            ident = Identity.generate()
            bus = await open_bus(nats_url, ident)
            op_bus = await open_bus(nats_url, operator)
            buses += [bus, op_bus]
            user_bank = BankClient(bus, bank_key, timeout=2.0)
            await eventually(lambda b=user_bank: _opened(b), 20)
            await BankClient(op_bus, bank_key).mint(ident.public_key, 10 * MICRO)
            client = AuctioneerClient(bus, subject_id(host_id.public_key), timeout=3.0)
            receipt = await user_bank.transfer(host_id.public_key, 4 * MICRO)
            await client.fund(receipt)
            users.append((user_bank, client))

        await bank.kill()
        for _, client in users:
            with pytest.raises(Rejected) as refused:
                await client.refund()
            assert refused.value.code == "unavailable"
        market = auctioneer.market
        assert len(market.pending) == 3
        assert sum(r.amount for r in market.pending.values()) == 12 * MICRO
        await asyncio.sleep(5)  # down across several retries (the cap is 2 s)
        assert len(market.pending) == 3
        await bank.start("ready")

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
    finally:
        if auctioneer is not None:
            await auctioneer.stop()
        for bus in buses:
            await bus.close()
        await bank.stop(5)
    transfers = check_bank(db)
    assert sum(1 for t in transfers if t.startswith("refund")) == 3
    assert check_host_store(tmp_path / "host.db", host_id.public_key, db) == 12 * MICRO


async def _opened(bank: BankClient) -> bool:
    await bank.open(exist_ok=True)
    return True
