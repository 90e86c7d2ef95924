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
import subprocess
import sys
import time
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
DOC = ROOT / "docs" / "operations.md"


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


def backup_lines() -> dict[str, str]:
    """The Backups section's shell lines, by their first word (sqlite3, cp, systemctl)."""
    text = DOC.read_text()
    section = text[text.index("## Backups of the bank"):text.index("## What to watch")]
    lines = [x.strip() for x in section.splitlines()]
    found = {w: next(x for x in lines if x.startswith(w + " ")) for w in ("sqlite3", "cp")}
    found["stop"] = next(x for x in lines if x.startswith("systemctl stop"))
    found["start"] = next(x for x in lines if x.startswith("systemctl start"))
    return found


def sh(tmp_path: Path, line: str) -> None:
    """Run a line of the doc as written, with /var/lib/tycoon and /backup in ``tmp_path``."""
    for real in ("/var/lib/tycoon/", "/backup/"):
        line = line.replace(real, f"{tmp_path}{real}")
    done = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (line, done.stderr)


def backup(tmp_path: Path, db: Path) -> Path:
    """Step 1, the online backup while the bank runs: the doc's `sqlite3 … ".backup …"` line
    (the newest file it wrote), or its Python equivalent where the sqlite3 CLI is absent."""
    (tmp_path / "backup").mkdir(exist_ok=True)
    assert db == tmp_path / "var/lib/tycoon/bank.db"
    if shutil.which("sqlite3") is None:
        out = tmp_path / "backup" / f"bank-py-{time.monotonic_ns()}.db"
        with sqlite3.connect(db) as src, sqlite3.connect(out) as dst:
            src.backup(dst)
        return out
    sh(tmp_path, backup_lines()["sqlite3"])
    return max((tmp_path / "backup").glob("bank-*.db"), key=lambda p: p.stat().st_mtime_ns)


def restore(tmp_path: Path, saved: Path, db: Path) -> None:
    """Step 3, the bank stopped (`systemctl stop tycoon-bank`): the doc's `cp …; rm -f …`
    line as written (the backup's name for `bank-….db`), then `tycoon bank audit`."""
    sh(tmp_path, backup_lines()["cp"].replace("bank-….db", saved.name))
    assert main(["bank", "audit", "--db", str(db)]) == 0


def test_the_backups_section_has_its_lines() -> None:
    lines = backup_lines()
    assert lines["sqlite3"].startswith("sqlite3 /var/lib/tycoon/bank.db \".backup '/backup/")
    assert "rm -f /var/lib/tycoon/bank.db-wal" in lines["cp"]
    assert lines["stop"].split()[:3] == ["systemctl", "stop", "tycoon-bank"]
    assert lines["start"].split()[:3] == ["systemctl", "start", "tycoon-bank"]


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
    home, db = tmp_path / "home", tmp_path / "var/lib/tycoon/bank.db"
    db.parent.mkdir(parents=True)
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
        saved = backup(tmp_path, db)  # the nightly backup, taken while the bank runs
        after = [await a.transfer(b.account, 2_000_000, transfer_id=f"after-{i}")
                 for i in range(3)]
        await asyncio.sleep(0.5)  # the settlement log publishes them
        await stop(proc)
        restore(tmp_path, saved, db)
        proc = await start_bank(url, home, db)
        top = max(r.seq for r in after)
        assert await b.balance() == 7_000_000  # the re-entered transfers
        new = await a.transfer(b.account, 1, transfer_id="after-restore")
        assert new.seq == top + 1  # never a sequence number twice
        await verify_log(url, home, db)

        # 2. a mint (no receipt) after the backup: maintenance until the operator re-mints
        saved = backup(tmp_path, db)
        await op.mint(b.account, 5_000_000, "m2")
        await b.transfer(a.account, 10_000_000, transfer_id="needs-m2")
        await a.transfer(b.account, 3, transfer_id="after-needs-m2")
        await asyncio.sleep(0.5)
        await stop(proc)
        restore(tmp_path, saved, db)
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
        restore(tmp_path, saved, db)  # cp leaves the backup in place
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


async def test_a_lost_close_is_re_entered_by_the_operator(tmp_path: Path) -> None:
    """A close after the backup has no receipt: the restored bank waits in maintenance; the
    account's owner may not close it then, the operator closing a funded account is refused,
    and `tycoon --as operator bank close --for ACCOUNT` re-enters it: the bank re-enters the
    rest and serves by itself, every seq once."""
    home, db = tmp_path / "home", tmp_path / "var/lib/tycoon/bank.db"
    db.parent.mkdir(parents=True)
    keys = KeyStore(home)
    bank_key = keys.create("bank").public_key
    operator, alice, bob, carol = (keys.create("operator"), Identity.generate(),
                                   Identity.generate(), Identity.generate())
    async with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:
        url = server.url
        buses = [await open_bus(url, i, deadline=5.0) for i in (operator, alice, bob, carol)]
        op, a, b, c = (BankClient(bus, bank_key, timeout=5.0) for bus in buses)
        proc = await start_bank(url, home, db)
        try:
            for client in (a, b, c):
                await client.open()
            await op.mint(a.account, 100, "m1")
            saved = backup(tmp_path, db)
            await c.close()  # lost with the restore: a close has no receipt
            last = await a.transfer(b.account, 7, transfer_id="after-close")
            await asyncio.sleep(0.5)  # the settlement log publishes it
        finally:
            await stop(proc)
        restore(tmp_path, saved, db)
        proc = await start_bank(url, home, db, want=b"in MAINTENANCE")
        try:
            with pytest.raises(Rejected) as refused:  # attack: the owner writes in maintenance
                await c.close()
            assert refused.value.code == "maintenance"
            with pytest.raises(Rejected) as refused:  # attack: "closing" a funded account
                await op.close(a.account)
            assert refused.value.code == "not_empty"
            argv = ["--nats", url, "--home", str(home), "--as", "operator", "bank", "close",
                    "--for", c.account]
            assert await asyncio.to_thread(main, argv) == 0
            assert await b.balance() == 7  # the transfer after the close, re-entered
            new = await a.transfer(b.account, 1, transfer_id="after-maintenance")
            assert new.seq == last.seq + 1
            with pytest.raises(Rejected):
                await c.balance()  # closed, as before the restore
            await verify_log(url, home, db)
        finally:
            await stop(proc)
        assert main(["bank", "audit", "--db", str(db)]) == 0
        seqs = await unique_receipts(buses[0].nc.jetstream(timeout=5.0), bank_key)
        assert sorted(seqs)[-2:] == [last.seq, new.seq]
        for bus in buses:
            await bus.close()
