"""SIGKILL a real auctioneer process while its job prints: the job lives on, a new process
re-adopts it, and the reader gets every line in order, then the exit (its real status)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from polling import until

from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.jobclient import JobClient
from tycoon.bank.client import BankClient
from tycoon.bank.launch import launch as launch_bank
from tycoon.bus.connection import open_bus
from tycoon.bus.keys import Identity, KeyStore, subject_id
from tycoon.errors import Rejected
from tycoon.messages.jobs import JobExit, JobOutput
from tycoon.money import MICRO

pytestmark = [pytest.mark.nats, pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(90)]


def spawn(url: str, home: Path, bank_key: str, tmp: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tycoon.cli.main", "--nats", url, "--home", str(home),
         "--as", "host", "auctioneer", "serve", "--driver", "simulated", "--preset", "small",
         "--bank", bank_key, "--store", str(tmp / "host.db"), "--tick", "0.1",
         "--heartbeat", "1", "--jobs", str(tmp / "jobs")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "TYCOON_LOG": "warning"})


async def test_a_job_outlives_a_killed_auctioneer_and_loses_no_output(
        nats_url: str, tmp_path: Path) -> None:
    bank_id, operator, user = Identity.generate(), Identity.generate(), Identity.generate()
    home = tmp_path / "home"
    host_key = KeyStore(home).create("host").public_key
    async with launch_bank(nats_url, bank_id, db=tmp_path / "bank.db",
                           operator=operator.public_key):
        op_bus, bus = await open_bus(nats_url, operator), await open_bus(nats_url, user)
        host = spawn(nats_url, home, bank_id.public_key, tmp_path)
        try:
            client = AuctioneerClient(bus, subject_id(host_key), timeout=2.0)
            await until(client.status, timeout=20.0, ignore=(Rejected,), what="the host")
            bank = BankClient(bus, bank_id.public_key)
            await bank.open()
            await BankClient(op_bus, bank_id.public_key).mint(user.public_key, 100 * MICRO)
            await client.fund(await bank.transfer(host_key, 10 * MICRO))
            await client.bid("cpu:1,0,1.0", "1h")
            code = ("import time\nfor i in range(60):\n print(i, flush=True); "
                    "time.sleep(0.05)\n")
            jobs = JobClient(bus, subject_id(host_key), timeout=5.0)
            reply, stream, sub = await jobs.start([sys.executable, "-c", code])
            events = stream.events(timeout=20).__aiter__()
            got = [await events.__anext__()]
            host.send_signal(signal.SIGKILL)  # a crash: nothing is saved on the way out
            host.wait(10)
            assert Path(f"/proc/{reply['pid']}").exists()  # the job runs on, unwatched
            await asyncio.sleep(0.5)
            host = spawn(nats_url, home, bank_id.public_key, tmp_path)
            got += [e async for e in events]
            await sub.unsubscribe()
        finally:
            host.kill()
            host.wait(10)
            await bus.close()
            await op_bus.close()
    assert [e.seq for e in got] == list(range(1, len(got) + 1))
    lines = b"".join(e.data for e in got if isinstance(e, JobOutput)).split()
    assert lines == [str(i).encode() for i in range(60)]
    assert isinstance(got[-1], JobExit) and got[-1].status == 0  # its shim wrote it
