"""Shared pieces of the fault tests: market invariants, a transfer flood, a NATS cluster."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.client import Client
from polling import until

from tycoon.bank.audit import audit
from tycoon.bank.client import BankClient
from tycoon.bank.receipt import Receipt
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bus.connection import Bus, inbox_prefix
from tycoon.bus.keys import Identity, is_public_key
from tycoon.errors import Rejected
from tycoon.supervisor import Child


def check_bank(db: Path) -> dict[str, int]:
    """The bank's audit passes (conservation, replay, every stored receipt verifies);
    transfer ids are unique. Returns {transfer id: amount} of every transfer."""
    with SqliteStore(db, readonly=True) as store:
        report = audit(store)
        assert report.ok, report.problems
        assert report.total_balances == report.total_minted
        ids = [e.op_id for e in store.events() if e.kind == "transfer"]
        assert len(ids) == len(set(ids)), "a transfer id was settled twice"
        return {e.op_id or "": e.amount for e in store.events() if e.kind == "transfer"}


def check_host_store(path: Path, host_key: str, bank_db: Path) -> int:
    """Every receipt a host redeemed is a ledger transfer to that host, of that amount,
    redeemed once; the host's books balance. Returns how much it redeemed."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        redeemed = db.execute("SELECT transfer_id, amount FROM redeemed").fetchall()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        balances = db.execute("SELECT coalesce(sum(balance), 0) FROM accounts").fetchone()[0]
    finally:
        db.close()
    with SqliteStore(bank_db, readonly=True) as store:
        for key, amount in redeemed:
            payer, tid = split_key(key)
            event = store.find_op("transfer", tid, payer)
            assert event is not None, f"{tid} redeemed at the host but unknown to the bank"
            assert (event.payee, event.amount) == (host_key, amount), tid
    funded = int(meta.get("funded", 0))
    assert funded == sum(a for _, a in redeemed)
    assert funded == int(meta.get("earnings", 0)) + balances + int(meta.get("refunded", 0))
    return funded


def split_key(key: str) -> tuple[str | None, str]:
    """(payer, transfer id) of a host's redemption key (:attr:`Receipt.key`); (None, key)
    for a bare transfer id (as stored before transfer ids were scoped to their payer)."""
    if key[56:57] == ":" and is_public_key(key[:56]):
        return key[:56], key[57:]
    return None, key


def pending_moves(journal: Path) -> list[str]:
    """The ids of an agent journal's moves still pending (read-only)."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT id FROM moves WHERE status = 'pending'")]
    finally:
        db.close()


def check_journal(journal: Path, agent_key: str, bank_db: Path, budget: int) -> None:
    """The agent repeated no money move: each of its bank payments is one journalled move
    (same id, same amount), and it paid out no more than its budget."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        moves = {r[0]: (r[1], r[2], r[3]) for r in db.execute(
            "SELECT id, kind, amount, status FROM moves")}
    finally:
        db.close()
    with SqliteStore(bank_db, readonly=True) as store:
        paid = [e for e in store.events() if e.kind == "transfer" and e.payer == agent_key]
        refunds = sum(e.amount for e in store.events()
                      if e.kind == "transfer" and e.payee == agent_key and e.payer != agent_key
                      and e.memo.startswith("refund"))
    for event in paid:
        assert event.op_id in moves, f"bank payment {event.op_id} is in no journal move"
        kind, amount, _ = moves[event.op_id]
        assert kind == "fund" and amount == event.amount, event.op_id
    assert sum(e.amount for e in paid) - refunds <= budget


@dataclass
class Flood:
    """Users paying each other with fresh transfer ids, riding out outages."""

    users: list[BankClient]
    attempted: dict[str, tuple[BankClient, str, int]] = field(default_factory=dict)
    told: dict[str, Receipt] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, per_user: int = 2, pause: float = 0.02) -> None:
        counter = iter(range(10**9))
        rng = random.Random(3)

        async def run(me: BankClient) -> None:
            while not self.stop.is_set():
                payee = rng.choice([u for u in self.users if u is not me]).account
                tid, amount = f"flood-{next(counter)}", rng.randint(1, 1000)
                self.attempted[tid] = (me, payee, amount)
                try:
                    self.told[tid] = await me.transfer(payee, amount, transfer_id=tid)
                except Rejected as error:
                    assert error.code in ("timeout", "unavailable", "internal"), error
                await asyncio.sleep(pause)

        self.tasks = [asyncio.create_task(run(u)) for u in self.users for _ in range(per_user)]

    async def finish(self) -> None:
        """Stop, then settle every attempted id again: the same receipt for those told."""
        self.stop.set()
        await asyncio.gather(*self.tasks)
        for tid, (me, payee, amount) in self.attempted.items():
            again = await me.transfer(payee, amount, transfer_id=tid)
            if tid in self.told:
                assert again.raw == self.told[tid].raw, tid

    def settled_since(self, mark: int) -> int:
        return len(self.told) - mark


async def eventually(check, timeout: float = 20.0, every: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    """Wait until ``await check()`` is true (an exception counts as not yet)."""
    await until(check, timeout=timeout, every=every, ignore=(Exception,))


# -- a cluster on loopback -------------------------------------------------------------


async def cluster_bus(urls: list[str], identity: Identity, home: int) -> Bus:
    """A Bus that connects to node ``home`` first and knows every node (for failover).

    Like :func:`tycoon.bus.connection.open_bus`, but with the server list kept in order
    (no shuffle) so a test decides which node each service starts on.
    """
    nc = Client()
    await nc.connect(
        servers=[urls[home], *(u for i, u in enumerate(urls) if i != home)],
        dont_randomize=True, allow_reconnect=True, max_reconnect_attempts=-1,
        reconnect_time_wait=0.2, connect_timeout=2.0, ping_interval=2,
        max_outstanding_pings=2, nkeys_seed_str=identity.seed,
        inbox_prefix=inbox_prefix(identity), name=f"fault-{home}",
    )  # fmt: skip
    return Bus(nc, identity)


# -- real processes, killed and restarted ----------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


class Proc:
    """One ``tycoon`` command as a child process (a :class:`tycoon.supervisor.Child`, as
    ``tycoon up`` runs them), everything it prints and logs in one file; killed with SIGKILL
    and restarted with the same command (and so the same state)."""

    def __init__(self, name: str, url: str, home: Path, *args: str) -> None:
        self.name, self.home = name, home
        # TYCOON_LOG_FILE empty: the structured log goes to stderr, into the same file
        self.child = Child(name, ["--nats", url, "--home", str(home), *args], home / "logs",
                           {"PYTHONPATH": str(ROOT), "TYCOON_LOG": "info",
                            "TYCOON_LOG_FILE": ""})
        self.log = self.child.out_path
        self.offset = 0
        """Where this run's output starts in the log."""

    @property
    def proc(self) -> asyncio.subprocess.Process | None:
        return self.child.process

    @property
    def alive(self) -> bool:
        return self.child.running

    async def start(self, *, ready: bool = True, timeout: float = 60.0) -> None:
        """Start; with ``ready`` (a ``serve`` command) wait until it writes ``READY=1`` to
        its ``--ready-fd`` pipe. What it prints never counts."""
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        await self.child.start(notify=ready)
        if ready and not await self.child.ready(timeout):
            code = self.proc.returncode if self.proc is not None else None
            raise AssertionError(f"{self.name} not ready (exit code {code}):\n"
                                 f"{self.text(self.offset)}")

    def text(self, offset: int = 0) -> str:
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    async def kill(self) -> None:
        """SIGKILL this process (it must be running) and reap it."""
        assert self.proc is not None and self.proc.returncode is None, self.name
        self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None if never started)."""
        return await self.child.stop(timeout)
