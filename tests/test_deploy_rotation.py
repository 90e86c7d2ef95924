"""Host-key rotation as docs/security.md now says, on a real server with per-key
authorization: the new key is admitted next to the old one, the old auctioneer still runs
while its users take their money back, the old host's bank earnings move to the new key,
and only then is the old key revoked. (The old procedure stopped the auctioneer first, so
refunds failed, and revoked the key with 13.07 credits still in its account.)"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from polling import refused, until

from tycoon.auctioneer.client import AuctioneerClient
from tycoon.bank.client import BankClient
from tycoon.bus.keys import Identity, subject_id
from tycoon.money import MICRO
from tycoon.natsconf import OPERATOR_CAPABILITIES, Principal, render_principals, write_config
from tycoon.natsserver import NatsServer, free_port
from tycoon.testing.localmarket import LocalMarket

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(120)]


async def test_host_key_rotation_strands_no_money(tmp_path: Path) -> None:
    bank, operator, store, old, new, user = (Identity.generate() for _ in range(6))
    port = free_port()
    conf = tmp_path / "nats.conf"

    def render(*hosts: Identity) -> None:
        principals = [Principal(bank.public_key, "bank", "bank"),
                      Principal(operator.public_key, "operator", "operator",
                                frozenset(OPERATOR_CAPABILITIES)),
                      Principal(store.public_key, "store", "store"),  # bundles (start_bank)
                      Principal(user.public_key, "user", "alice"),
                      *(Principal(h.public_key, "host", f"host-{i}") for i, h in enumerate(hosts))]
        write_config(conf, render_principals(principals, port=port))

    render(old)
    async with NatsServer(port=port, config=conf) as server:
        market = LocalMarket(server.url, tmp_path / "m", bank, operator, store)
        try:
            await market.start_bank()
            await market.add_host("small", identity=old, tick_s=0.1)
            ubus = await market.fund_user(20 * MICRO, user)
            ubank = BankClient(ubus, bank.public_key)
            at_old = AuctioneerClient(ubus, subject_id(old.public_key))
            await at_old.account()
            receipt = await ubank.transfer(old.public_key, 10 * MICRO, memo="fund host")
            await at_old.fund(receipt)
            await at_old.bid("30s cpu:1")
            await asyncio.sleep(1.0)  # the host earns: its market charges the bid

            # 1. the new key is admitted next to the old one; reload: both connect
            render(old, new)
            assert server.process is not None
            server.process.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            await market.add_host("small", identity=new, tick_s=0.1)
            # 2. with the old auctioneer still running, its user takes the money back
            refund = await at_old.refund()
            assert sum(r["amount"] for r in refund["refunds"]) > 0, refund
            # 3. the old host's bank earnings move to the new key's account
            obus = await market.bus(old)
            old_bank = BankClient(obus, bank.public_key)
            earned = await old_bank.balance()
            assert earned > 0  # what the bid paid
            await old_bank.transfer(new.public_key, earned, memo="host key rotation")
            assert await old_bank.balance() == 0
            # 4. only now: stop the old auctioneer, revoke its key, reload
            await market.hosts[0].service.stop()
            render(new)
            server.process.send_signal(signal.SIGHUP)
            await until(lambda: refused(server.url, old.seed), timeout=10, every=0.1,
                        what="the revoked host key refused")
            # no credit stranded: the user has what the bid did not spend, the new host the rest
            new_bank = BankClient(await market.bus(new), bank.public_key)
            assert await new_bank.balance() == earned
            assert await ubank.balance() + earned == 20 * MICRO
            money = market.money()
            assert money["minted"] == money["balances"]
        finally:
            await market.close()
