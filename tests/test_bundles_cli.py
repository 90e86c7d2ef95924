"""``tycoon-pub push|pull`` and ``exec --bundle --collect --results`` through the real entry
point, against a store, a bank and an auctioneer (simulated driver) on a JetStream server."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import nats
import pytest
from jobs_kit import job_market
from test_bundles_jobs import bundle_service

from tycoon.auctioneer.jobhost import JobConfig
from tycoon.bank.client import BankClient
from tycoon.bundles.client import ensure_bucket
from tycoon.bus.connection import open_bus
from tycoon.bus.keys import KeyStore, subject_id
from tycoon.cli.pub import main
from tycoon.money import MICRO
from tycoon.natsserver import NatsServer
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]


async def test_push_exec_collect_pull(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    async with NatsServer(jetstream=True) as server, bundle_service(server.url), job_market(
            server.url, tmp_path, SimulatedDriver(preset="small"),
            JobConfig(root=tmp_path / "jobs")) as m:
        alice = KeyStore(tmp_path / "home").create("alice")
        alice_bus, op_bus = await open_bus(server.url, alice), await open_bus(server.url,
                                                                              m.operator)
        m.buses += [alice_bus, op_bus]
        await BankClient(alice_bus, m.bank_id.public_key).open()
        await BankClient(op_bus, m.bank_id.public_key).mint(alice.public_key, 100 * MICRO)
        nc = await nats.connect(server.url)
        await ensure_bucket(nc, subject_id(alice.public_key))
        await nc.close()
        base = ["--nats", server.url, "--home", str(tmp_path / "home"), "--as", "alice"]

        async def pub(*argv: str) -> tuple[int, str, str]:
            capfd.readouterr()
            code = await asyncio.to_thread(main, [*base, *argv])
            out = capfd.readouterr()
            return code, out.out, out.err

        assert (await pub("fund", m.host, "5", "--bank", m.bank_id.public_key))[0] == 0
        assert (await pub("bid", m.host, "1h", "cpu:1,0,1.0"))[0] == 0
        src = tmp_path / "src"
        src.mkdir()
        (src / "in.txt").write_text("bundled")
        code, out, err = await pub("push", str(src))
        digest = out.strip()
        assert code == 0 and re.fullmatch(r"[0-9a-f]{64}", digest), err
        script = "import os; os.mkdir('out'); open('out/r.txt','w').write(open('in.txt').read())"
        code, out, err = await pub("exec", m.host, "--bundle", digest, "--collect", "out",
                                   "--results", str(tmp_path / "got"), "--",
                                   sys.executable, "-c", script)
        assert code == 0, err
        assert (tmp_path / "got" / "out" / "r.txt").read_text() == "bundled"
        result = re.search(r"results ([0-9a-f]{64})", err)
        assert result, err
        code, out, _ = await pub("pull", result.group(1), str(tmp_path / "again"))
        assert code == 0 and (tmp_path / "again" / "out" / "r.txt").exists()
        code, _, err = await pub("pull", "0" * 64, str(tmp_path / "none"))
        assert code != 0 and "unknown_bundle" in err
        code, _, err = await pub("exec", m.host, "--bundle", "1" * 64, "--", "true")
        assert code != 0 and "unknown_bundle" in err
