"""Bank restore, scripted on a real server with JetStream: a restored backup never serves a
write at a sequence number already on a receipt in SETTLEMENTS. It re-enters the receipts
after the backup at start; when an event with no receipt (a mint) is missing first it
serves in maintenance (reads only, transfers refused with code `maintenance`) until the
operator enters it again, then re-enters the rest and lifts maintenance by itself."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

from tycoon.bank.client import BankClient
from tycoon.bank.receipt import verify_receipt
from tycoon.bus.connection import open_bus
from tycoon.bus.keys import Identity, KeyStore
from tycoon.cli.main import main
from tycoon.errors import Rejected
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


async def start_bank(url: str, home: Path, db: Path,
                     want: bytes = b"ready") -> asyncio.subprocess.Process:
    """``bank serve`` until its ready (or maintenance) line."""
    proc = await tycoon(url, home, "bank", "serve", "--db", str(db), "--operator-key",
                        "operator")
    assert proc.stdout is not None and proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            err = await proc.stderr.read()
            await proc.wait()
            raise AssertionError(err.decode())
        if b"bank U" in line:
            assert want in line, line
            return proc


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.terminate()
    await proc.wait()


def restore(tmp_path: Path, backup: Path, db: Path) -> None:
    """docs/operations.md's restore: the backup in place, its WAL gone, then audited."""
    for name in ("bank.db", "bank.db-wal", "bank.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    backup.rename(db)
    assert main(["bank", "audit", "--db", str(db)]) == 0


async def verify_log(url: str, home: Path, db: Path) -> None:
    """`tycoon --as operator bank verify-log --db …`: exit 0, the ledger is whole again."""
    argv = ["--nats", url, "--home", str(home), "--as", "operator", "bank", "verify-log",
            "--db", str(db)]
    for _ in range(20):  # the settlement log publishes the newest receipt in the background
        if await asyncio.to_thread(main, argv) == 0:
            return
        await asyncio.sleep(0.25)
    raise AssertionError("verify-log never exited 0")


async def unique_receipts(js: object, bank_key: str) -> dict[int, bytes]:
    seqs: dict[int, bytes] = {}
    async for msg in read_stream(js, SETTLEMENTS):
        receipt = verify_receipt(msg.data, bank_key)
        assert seqs.setdefault(receipt.seq, receipt.raw) == receipt.raw, receipt.seq
    return seqs


async def test_a_restored_bank_re_enters_its_log_or_waits_in_maintenance(
        tmp_path: Path) -> None:
    home, db, backup = tmp_path / "home", tmp_path / "bank.db", tmp_path / "backup.db"
    keys = KeyStore(home)
    bank_key = keys.create("bank").public_key
    operator, alice, bob = keys.create("operator"), Identity.generate(), Identity.generate()
    async with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:
        url = server.url
        buses = [await open_bus(url, i, deadline=5.0) for i in (operator, alice, bob)]
        op, a, b = (BankClient(bus, bank_key, timeout=5.0) for bus in buses)
        js = buses[0].nc.jetstream(timeout=5.0)

        # 1. transfers only after the backup: the bank re-enters them and serves
        proc = await start_bank(url, home, db)
        await a.open()
        await b.open()
        await op.mint(a.account, 100_000_000, "m1")
        await a.transfer(b.account, 1_000_000, transfer_id="before")
        with sqlite3.connect(db) as src, sqlite3.connect(backup) as dst:
            src.backup(dst)  # the nightly backup, taken while the bank runs
        after = [await a.transfer(b.account, 2_000_000, transfer_id=f"after-{i}")
                 for i in range(3)]
        await asyncio.sleep(0.5)  # the settlement log publishes them
        await stop(proc)
        restore(tmp_path, backup, db)
        proc = await start_bank(url, home, db)
        top = max(r.seq for r in after)
        assert await b.balance() == 7_000_000  # the re-entered transfers
        new = await a.transfer(b.account, 1, transfer_id="after-restore")
        assert new.seq == top + 1  # never a sequence number twice
        await verify_log(url, home, db)

        # 2. a mint (no receipt) after the backup: maintenance until the operator re-mints
        with sqlite3.connect(db) as src, sqlite3.connect(backup) as dst:
            src.backup(dst)
        shutil.copy(backup, tmp_path / "backup-2.db")
        await op.mint(b.account, 5_000_000, "m2")
        await b.transfer(a.account, 10_000_000, transfer_id="needs-m2")
        await a.transfer(b.account, 3, transfer_id="after-needs-m2")
        await asyncio.sleep(0.5)
        await stop(proc)
        restore(tmp_path, backup, db)
        proc = await start_bank(url, home, db, want=b"in MAINTENANCE")
        # attack: transfers during maintenance, a user's and the operator's
        for client, payee in ((a, b.account), (op, a.account)):
            with pytest.raises(Rejected) as refused:
                await client.transfer(payee, 1, transfer_id="during-maintenance")
            assert refused.value.code == "maintenance"
            assert "operator enters it again" in refused.value.message
        assert await b.balance() == 7_000_001  # reads work
        # attack: the operator enters another event in the lost mint's place; the receipt
        # after it no longer fits (overdraft), and the next seq is that receipt's: nothing
        # may take it, not even the right mint now
        await op.mint(b.account, 1, "wrong")
        with pytest.raises(Rejected) as refused:
            await op.mint(b.account, 5_000_000, "m2")
        assert refused.value.code == "maintenance" and "nothing may take it" in \
            refused.value.message
        await stop(proc)
        # the procedure: the backup again, the operator re-mints m2 (same id, same seq); the
        # bank re-enters the rest and serves again by itself, without a restart
        restore(tmp_path, tmp_path / "backup-2.db", db)
        proc = await start_bank(url, home, db, want=b"in MAINTENANCE")
        try:
            await op.mint(b.account, 5_000_000, "m2")
            last = await a.transfer(b.account, 1, transfer_id="after-maintenance")
            assert await b.balance() == 2_000_005
            await verify_log(url, home, db)
        finally:
            await stop(proc)
        seqs = await unique_receipts(js, bank_key)
        assert last.seq == max(seqs) and len(seqs) == len(set(seqs))
        assert sorted(seqs)[-3:] == [last.seq - 2, last.seq - 1, last.seq]
        for bus in buses:
            await bus.close()
