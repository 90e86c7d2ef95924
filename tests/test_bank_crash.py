"""Crash: SIGKILL the bank (a subprocess) mid-flood; nothing a client was told is lost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tycoon.bank.audit import audit
from tycoon.bank.client import BankClient
from tycoon.bank.receipt import Receipt
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import Identity, KeyStore
from tycoon.errors import Rejected

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[1]


async def start_bank(url: str, home: Path, db: Path) -> asyncio.subprocess.Process:
    """Run ``tycoon bank serve`` as a subprocess and wait for its ready line."""
    log = open(home / "bank.log", "ab")  # noqa: SIM115 - handed to the child
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tycoon.cli.main", "--nats", url, "--home", str(home),
        "bank", "serve", "--db", str(db), "--operator-key", "operator",
        stdout=asyncio.subprocess.PIPE, stderr=log, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    log.close()
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert b"ready" in line, (line, (home / "bank.log").read_text())
    return proc


async def test_sigkill_mid_flood_loses_no_receipt(
    nats_url: str, tmp_path: Path, identity_factory: Callable[[], Identity]
) -> None:
    home, db = tmp_path / "home", tmp_path / "bank.db"
    store = KeyStore(home)
    bank_key = store.create("bank").public_key
    operator = store.create("operator")
    proc = await start_bank(nats_url, home, db)
    buses: list[Bus] = []
    try:
        async def client(identity: Identity, timeout: float = 2.0) -> BankClient:
            bus = await open_bus(nats_url, identity)
            buses.append(bus)
            return BankClient(bus, bank_key, timeout=timeout, retries=0)

        users = [await client(identity_factory(), timeout=1.0) for _ in range(8)]
        op = await client(operator)
        for user in users:
            await user.open()
            await op.mint(user.account, 10_000_000, f"seed-{user.account}")

        attempted: dict[str, tuple[BankClient, str, int]] = {}
        received: list[Receipt] = []
        stop = asyncio.Event()
        rng = random.Random(7)

        counter = iter(range(10**9))

        async def flood(me: BankClient) -> None:
            while not stop.is_set():
                payee = rng.choice([u for u in users if u is not me]).account
                tid, amount = f"flood-{next(counter)}", rng.randint(1, 1000)
                attempted[tid] = (me, payee, amount)
                try:
                    received.append(await me.transfer(payee, amount, transfer_id=tid))
                except Rejected as error:
                    assert error.code in ("timeout", "unavailable"), error
                    await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(flood(u)) for u in users for _ in range(4)]
        while len(received) < 300:
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await asyncio.sleep(0.3)  # requests keep failing while the bank is down
        stop.set()
        await asyncio.gather(*tasks)
        told = {r.transfer_id: r for r in received}

        proc = await start_bank(nats_url, home, db)
        with SqliteStore(db, readonly=True) as ro:
            report = audit(ro)
            assert report.ok, report.problems
            for tid, receipt in told.items():
                event = ro.find_op("transfer", tid)
                assert event is not None and event.receipt == receipt.raw, tid
            before_retry = report.transfers
        assert before_retry >= len(told)

        # Retrying every transfer id settles each exactly once; told ones return the same bytes.
        for tid, (me, payee, amount) in attempted.items():
            again = await me.transfer(payee, amount, transfer_id=tid)
            if tid in told:
                assert again.raw == told[tid].raw
        with SqliteStore(db, readonly=True) as ro:
            report = audit(ro)
            assert report.ok, report.problems
            assert report.transfers == len(attempted)
            assert report.total_balances == report.total_minted == 8 * 10_000_000
    finally:
        for bus in buses:
            await bus.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode in (0, -signal.SIGKILL)
