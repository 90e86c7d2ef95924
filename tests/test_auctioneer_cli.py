"""``tycoon host …`` against a running auctioneer and bank (the real ``tycoon`` entry point)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tycoon.auctioneer.launch import start_auctioneer
from tycoon.bank.client import BankClient
from tycoon.bank.launch import start_bank
from tycoon.bus.connection import open_bus
from tycoon.bus.keys import Identity, KeyStore
from tycoon.cli.main import main
from tycoon.money import MICRO
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]


async def test_host_commands(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bank_id, operator = Identity.generate(), Identity.generate()
    bank = await start_bank(nats_url, bank_id, db=tmp_path / "bank.db",
                            operator=operator.public_key)
    home = tmp_path / "home"
    keys = KeyStore(home)
    host = keys.create("h1")
    alice = keys.create("alice")
    auctioneer = await start_auctioneer(
        nats_url, host, bank_key=bank_id.public_key, driver=SimulatedDriver(preset="small"),
        store_path=tmp_path / "h1.db", name="h1", tick_s=0.2, alloc_every_s=0.1,
    )  # fmt: skip
    assert auctioneer.service.alloc_every_s == 0.1
    op_bus = await open_bus(nats_url, operator)
    alice_bus = await open_bus(nats_url, alice)
    try:
        await BankClient(auctioneer.bus, bank_id.public_key).open(exist_ok=True)
        await BankClient(alice_bus, bank_id.public_key).open()
        await BankClient(op_bus, bank_id.public_key).mint(alice.public_key, 100 * MICRO)
        base = ["--nats", nats_url, "--home", str(home), "--as", "alice", "host"]

        async def tycoon(*argv: str) -> tuple[int, dict | str]:
            capsys.readouterr()
            code = await asyncio.to_thread(main, [*base, *argv])
            out = capsys.readouterr()
            text = out.out.strip().splitlines()[-1] if out.out.strip() else out.err
            try:
                return code, json.loads(text)
            except json.JSONDecodeError:
                return code, out.out + out.err

        code, funded = await tycoon("fund", "h1", "12.5", "--bank", bank_id.public_key, "--json")
        assert code == 0 and funded["amount"] == 12_500_000, funded
        code, placed = await tycoon("bid", "h1", "1h", "cpu:1,0.1,1.0", "memory:1,256MB", "--json")
        assert code == 0 and placed["allocation"]["cpu"] == pytest.approx(1.0)
        code, status = await tycoon("status", auctioneer.market.host_id, "--json")
        assert code == 0 and status["account"]["bid"]["resources"].startswith("cpu:1,0.1,1")
        assert status["resources"]["cpu"]["bidders"] == 1
        code, text = await tycoon("status", "h1")
        assert code == 0 and "cpu" in str(text) and "credits/s" in str(text)
        code, text = await tycoon("bid", "h1", "1h", "gpu:1")
        assert code == 1 and "bad_bid" in str(text) and "gpu:1" in str(text)
        code, refund = await tycoon("refund", "h1", "--json")
        assert code == 0 and refund["balance"] == 0 and refund["refunds"][0]["amount"] > 0
        code, text = await tycoon("status", "nosuchhost")
        assert code == 1 and "no host named nosuchhost (tycoon hosts lists them)" in str(text)
    finally:
        await op_bus.close()
        await alice_bus.close()
        await auctioneer.stop()
        await bank.stop()


def test_serve_refuses_a_bad_allocation_period(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "-1", "nan", "soon"):
        with pytest.raises(SystemExit) as exit_:
            main(["auctioneer", "serve", "--alloc-every", bad])
        assert exit_.value.code == 2
        assert "--alloc-every" in capsys.readouterr().err
