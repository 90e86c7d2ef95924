"""Bank restore, scripted on a real server with JetStream: a restored backup does not serve
(it would reuse the sequence numbers already on receipts in SETTLEMENTS) until the
receipts after the backup are re-entered with `tycoon bank restore-from-log`."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from tycoon.bank.client import BankClient
from tycoon.bank.receipt import verify_receipt
from tycoon.bus.connection import open_bus
from tycoon.bus.keys import Identity, KeyStore
from tycoon.natsserver import NatsServer
from tycoon.streams.config import SETTLEMENTS
from tycoon.streams.reader import read_stream

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[1]


async def tycoon(url: str, home: Path, *argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tycoon.cli.main", "--nats", url, "--home", str(home), *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


async def start_bank(url: str, home: Path, db: Path) -> asyncio.subprocess.Process:
    proc = await tycoon(url, home, "bank", "serve", "--db", str(db), "--operator-key",
                        "operator")
    assert proc.stdout is not None and proc.stderr is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if b"ready" not in line:
        err = await proc.stderr.read()
        await proc.wait()
        raise AssertionError(err.decode())
    return proc


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.terminate()
    await proc.wait()


async def test_a_restored_bank_waits_for_its_log(tmp_path: Path) -> None:
    home, db, backup = tmp_path / "home", tmp_path / "bank.db", tmp_path / "backup.db"
    keys = KeyStore(home)
    bank_key = keys.create("bank").public_key
    operator, alice, bob = keys.create("operator"), Identity.generate(), Identity.generate()
    async with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:
        url = server.url
        buses = [await open_bus(url, i, deadline=5.0) for i in (operator, alice, bob)]
        op, a, b = (BankClient(bus, bank_key, timeout=5.0) for bus in buses)
        proc = await start_bank(url, home, db)
        await a.open()
        await b.open()
        await op.mint(a.account, 100_000_000, "m1")
        for i in range(3):
            await a.transfer(b.account, 1_000_000, transfer_id=f"before-{i}")
        with sqlite3.connect(db) as src, sqlite3.connect(backup) as dst:
            src.backup(dst)  # the nightly backup, taken while the bank runs
        after = [await a.transfer(b.account, 2_000_000, transfer_id=f"after-{i}")
                 for i in range(4)]
        await asyncio.sleep(0.5)  # the settlement log publishes them
        await stop(proc)
        top = max(r.seq for r in after)

        for name in ("bank.db", "bank.db-wal", "bank.db-shm"):  # the restore
            (tmp_path / name).unlink(missing_ok=True)
        backup.rename(db)
        refused = await tycoon(url, home, "bank", "serve", "--db", str(db),
                               "--operator-key", "operator")
        _, err = await asyncio.wait_for(refused.communicate(), 60)
        assert refused.returncode == 1, err
        assert b"maintenance" in err and b"restore-from-log" in err
        assert f"up to seq {top}".encode() in err

        fix = await tycoon(url, home, "bank", "restore-from-log", "--db", str(db),
                           "--operator-key", "operator")
        out, err = await asyncio.wait_for(fix.communicate(), 60)
        assert fix.returncode == 0, out + err
        proc = await start_bank(url, home, db)
        try:
            assert (await b.balance()) == 3_000_000 + 8_000_000  # the re-entered transfers
            new = await a.transfer(b.account, 1, transfer_id="after-restore")
            assert new.seq == top + 1  # never a sequence number twice
        finally:
            await stop(proc)
        js = buses[0].nc.jetstream(timeout=5.0)
        seqs: dict[int, bytes] = {}
        async for msg in read_stream(js, SETTLEMENTS):
            receipt = verify_receipt(msg.data, bank_key)
            assert seqs.setdefault(receipt.seq, receipt.raw) == receipt.raw, receipt.seq
        for bus in buses:
            await bus.close()
