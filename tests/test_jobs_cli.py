"""``tycoon-pub exec|jobs|signal`` against a running auctioneer (simulated driver: real,
unconfined processes) and bank, through the real entry point."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tycoon.auctioneer.jobhost import JobConfig
from tycoon.auctioneer.launch import start_auctioneer
from tycoon.bank.client import BankClient
from tycoon.bank.launch import start_bank
from tycoon.bus.connection import open_bus
from tycoon.bus.keys import Identity, KeyStore
from tycoon.cli.pub import main
from tycoon.money import MICRO
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]


async def test_exec_jobs_signal(nats_url: str, tmp_path: Path,
                                capfd: pytest.CaptureFixture[str]) -> None:
    bank_id, operator = Identity.generate(), Identity.generate()
    bank = await start_bank(nats_url, bank_id, db=tmp_path / "bank.db",
                            operator=operator.public_key)
    home = tmp_path / "home"
    keys = KeyStore(home)
    host, alice = keys.create("h1"), keys.create("alice")
    auctioneer = await start_auctioneer(
        nats_url, host, bank_key=bank_id.public_key, driver=SimulatedDriver(preset="small"),
        store_path=tmp_path / "h1.db", name="h1", tick_s=0.2,
        jobs=JobConfig(root=tmp_path / "jobs"),
    )
    op_bus = await open_bus(nats_url, operator)
    alice_bus = await open_bus(nats_url, alice)
    base = ["--nats", nats_url, "--home", str(home), "--as", "alice"]

    async def pub(*argv: str) -> tuple[int, str, str]:
        capfd.readouterr()
        code = await asyncio.to_thread(main, [*base, *argv])
        out = capfd.readouterr()
        return code, out.out, out.err

    try:
        await BankClient(auctioneer.bus, bank_id.public_key).open(exist_ok=True)
        await BankClient(alice_bus, bank_id.public_key).open()
        await BankClient(op_bus, bank_id.public_key).mint(alice.public_key, 100 * MICRO)
        assert (await pub("fund", "h1", "5", "--bank", bank_id.public_key))[0] == 0
        assert (await pub("bid", "h1", "1h", "cpu:1,0,1.0"))[0] == 0
        code, out, err = await pub("exec", "h1", "--env", "JOB_N=4", "--", sys.executable,
                                   "-c", "import os,sys; print('n', os.environ['JOB_N']); "
                                   "sys.stderr.write('e'); sys.exit(3)")
        assert (code, out) == (3, "n 4\n"), err
        assert "e" in err and "exited 3" in err
        code, out, _ = await pub("exec", "h1", "--detach", "--", "sleep", "30")
        job = out.strip()
        assert code == 0 and job
        code, out, _ = await pub("jobs", "h1", "--json")
        listed = json.loads(out)
        assert code == 0 and [j["job"] for j in listed["jobs"] if j["state"] == "running"] == [job]
        code, out, _ = await pub("signal", "h1", job, "KILL")
        assert code == 0 and "signal 9" in out
        code, _, err = await pub("exec", "h1", "--", "/no/such/thing")
        assert code == 1 and "malformed" in err and "no such program" in err
    finally:
        await op_bus.close()
        await alice_bus.close()
        await auctioneer.stop()
        await bank.stop()
