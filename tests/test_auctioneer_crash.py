"""SIGKILL the auctioneer (a real subprocess) mid-flood: no balance lost, no second redemption."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from polling import until

from tycoon.auctioneer.client import AuctioneerClient
from tycoon.bank.client import BankClient
from tycoon.bank.launch import launch as launch_bank
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import Identity, KeyStore, subject_id
from tycoon.errors import Rejected
from tycoon.money import MICRO

pytestmark = [pytest.mark.nats, pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(120)]


def spawn(url: str, home: Path, bank_key: str, store: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tycoon.cli.main", "--nats", url, "--home", str(home),
         "--as", "host", "auctioneer", "serve", "--driver", "simulated", "--preset", "small",
         "--bank", bank_key, "--store", str(store), "--tick", "0.05", "--heartbeat", "1",
         "--rate-limit", "off"],  # a flood from one key: limits are tested in test_hostile_flood
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "TYCOON_LOG": "warning"},
    )  # fmt: skip


async def wait_ready(client: AuctioneerClient) -> dict:
    return await until(client.status, timeout=10.0, ignore=(Rejected,),
                       what="the auctioneer's status")


@pytest.fixture
async def bank(nats_url: str, tmp_path: Path) -> AsyncIterator[tuple[Identity, Identity]]:
    ident, operator = Identity.generate(), Identity.generate()
    async with launch_bank(nats_url, ident, db=tmp_path / "bank.db",
                           operator=operator.public_key):
        yield ident, operator


async def test_sigkill_keeps_every_balance(
    nats_url: str, tmp_path: Path, bank: tuple[Identity, Identity]
) -> None:
    bank_id, operator = bank
    home = tmp_path / "home"
    host_id = KeyStore(home).create("host")
    host_key = host_id.public_key
    host = subject_id(host_key)
    store = tmp_path / "host.db"
    buses: list[Bus] = []
    users = []
    op_bus = await open_bus(nats_url, operator)
    buses.append(op_bus)
    host_bus = await open_bus(nats_url, host_id)
    buses.append(host_bus)
    await BankClient(host_bus, bank_id.public_key).open()  # users pay into it
    for _ in range(4):
        ident = Identity.generate()
        bus = await open_bus(nats_url, ident)
        buses.append(bus)
        bank_client = BankClient(bus, bank_id.public_key)
        await bank_client.open()
        await BankClient(op_bus, bank_id.public_key).mint(ident.public_key, 10_000 * MICRO)
        users.append((bank_client, AuctioneerClient(bus, host, timeout=2.0)))
    # every user holds 25 receipts payable to the host
    receipts: dict[int, list[bytes]] = {}
    for i, (bank_client, _) in enumerate(users):
        receipts[i] = [(await bank_client.transfer(host_key, (k + 1) * MICRO + i)).raw
                       for k in range(25)]  # fmt: skip
    proc = spawn(nats_url, home, bank_id.public_key, store)
    try:
        await wait_ready(users[0][1])
        # users 0 and 1 bid (they are charged on every 50 ms tick); 2 and 3 only fund
        for i in (0, 1):
            await users[i][1].fund(receipts[i][0])
            await users[i][1].bid("1h cpu:1 memory:1 net:1")
        acknowledged: set[tuple[int, int]] = {(0, 0), (1, 0)}

        async def flood(i: int) -> None:
            client = users[i][1]
            for k in range(1 if i < 2 else 0, 25):
                try:
                    await client.fund(receipts[i][k])
                except Rejected:
                    return  # the auctioneer died under us
                acknowledged.add((i, k))
                await asyncio.sleep(0.005)

        floods = [asyncio.create_task(flood(i)) for i in range(4)]
        while len(acknowledged) < 40:
            await asyncio.sleep(0.005)
        proc.send_signal(signal.SIGKILL)  # mid-flood, mid-tick
        proc.wait(timeout=10)
        await asyncio.gather(*floods)
        assert len(acknowledged) < 100  # it really died mid-flood
        proc = spawn(nats_url, home, bank_id.public_key, store)
        await wait_ready(users[0][1])
        # every acknowledged redemption survived: presenting it again is refused
        for i, k in sorted(acknowledged):
            with pytest.raises(Rejected) as info:
                await users[i][1].fund(receipts[i][k])
            assert info.value.code == "already_redeemed"
        # the rest is redeemed now, exactly once
        for i in range(4):
            for k in range(25):
                if (i, k) not in acknowledged:
                    with contextlib.suppress(Rejected):
                        await users[i][1].fund(receipts[i][k])
                with pytest.raises(Rejected, match="already_redeemed"):
                    await users[i][1].fund(receipts[i][k])
        total = sum((k + 1) * MICRO + i for i in range(4) for k in range(25))
        status = await users[0][1].status()
        assert status["funded"] == total
        assert status["funded"] == status["earnings"] + status["balances"] + status["refunded"]
        for i, (_, client) in enumerate(users):
            account = (await client.status())["account"]
            assert account["funded"] == sum((k + 1) * MICRO + i for k in range(25))
            assert account["balance"] + account["spent"] == account["funded"]
            if i >= 2:  # never bid: never charged, the balance is exactly what was funded
                assert account["balance"] == account["funded"]
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for bus in buses:
            await bus.close()
