"""The agent's durable journal (SQLite): its contract and every money move it makes.

A move is written as ``pending`` before it is attempted, under a transfer id derived
from (agent, plan epoch, host, step). After a crash the agent replays pending moves
with the same ids: the bank returns the same receipt for a repeated transfer id and
an auctioneer refuses a second redemption, so nothing is paid twice. A funding's bank
receipt is recorded the moment it is paid, before it is presented to the host, so a
receipt the host could not take is presented again (never lost, never paid again).
Every refund received is recorded by its host and id, wherever it was learnt (the
host's reply, or the bank's history when the host paid it on its own), so each counts once
(and one host cannot hide another's refund by reusing its id). A bag of tasks keeps each
task's state here too (:mod:`tycoon.agent.tasks`), so a restart reruns no finished task.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tycoon.agent.tasks import DONE, RUNNING, STATES, STOPPING, Task
from tycoon.errors import Rejected

REFUNDS_COLUMNS = """(
    refund_id TEXT NOT NULL,
    host TEXT NOT NULL,
    amount INTEGER NOT NULL,
    move_id TEXT NOT NULL,
    receipt BLOB,
    PRIMARY KEY (host, refund_id)
)"""
"""The refunds table, keyed by host and refund id (the schema and its migration)."""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS moves (
    id TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    host TEXT NOT NULL,
    payee TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('fund', 'refund')),
    amount INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    receipt BLOB,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS moves_status ON moves (status);
CREATE TABLE IF NOT EXISTS refunds {REFUNDS_COLUMNS};
CREATE TABLE IF NOT EXISTS tasks (
    idx INTEGER PRIMARY KEY,
    arg TEXT NOT NULL,
    pin TEXT,
    state TEXT NOT NULL,
    host TEXT,
    job TEXT,
    status INTEGER,
    runs INTEGER NOT NULL DEFAULT 0
);
"""

REFUNDS_BY_ID = f"""
ALTER TABLE refunds RENAME TO refunds_by_id;
CREATE TABLE refunds {REFUNDS_COLUMNS};
INSERT INTO refunds SELECT refund_id, host, amount, move_id, receipt FROM refunds_by_id;
DROP TABLE refunds_by_id;
"""
"""A journal of an older release keyed refunds by their id alone: a host could then hide
another host's refund by reusing its id. Its rows move to the (host, id) key."""


@dataclass(frozen=True)
class Move:
    id: str
    epoch: int
    host: str
    payee: str
    kind: str
    amount: int
    status: str
    receipt: bytes | None


class Journal:
    """One agent's contract (budget, deadline) and money moves, durable across restarts."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        keys = [r[1] for r in self.db.execute("PRAGMA table_info(refunds)") if r[5]]
        if keys == ["refund_id"]:
            self.db.executescript(f"BEGIN; {REFUNDS_BY_ID} COMMIT;")

    def close(self) -> None:
        self.db.close()

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str | int) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, str(value)))

    def setdefault(self, key: str, value: str | int) -> str:
        """The stored value of ``key``, storing ``value`` first if there is none."""
        self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))
        stored = self.get(key)
        assert stored is not None
        return stored

    def next_epoch(self) -> int:
        """Advance and return the plan epoch.

        Epochs name money moves, so one must never be reused after a crash; the counter
        is written without an fsync (most plans move no money) and a restarted agent
        starts past every epoch its fsynced moves carry as well.
        """
        row = self.db.execute("SELECT COALESCE(MAX(epoch), 0) FROM moves").fetchone()
        epoch = max(int(self.get("epoch") or 0), int(row[0])) + 1
        with self._unsynced():
            self.set("epoch", epoch)
        return epoch

    @contextlib.contextmanager
    def _unsynced(self) -> Iterator[None]:
        """Writes in this block are not fsynced (the next synced write covers them)."""
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self.db.execute("PRAGMA synchronous=FULL")

    def begin(self, move_id: str, epoch: int, host: str, payee: str, kind: str,
              amount: int) -> Move:
        """Record a move as pending (idempotent: an existing id is returned unchanged)."""
        self.db.execute(
            "INSERT OR IGNORE INTO moves (id, epoch, host, payee, kind, amount, status) "
            "VALUES (?, ?, ?, ?, ?, ?, 'pending')", (move_id, epoch, host, payee, kind, amount))
        move = self.move(move_id)
        assert move is not None
        return move

    def finish(self, move_id: str, *, amount: int | None = None, receipt: bytes | None = None,
               status: str = "done", detail: str = "") -> None:
        """Mark a move done (or failed), with the amount that really moved and its receipt.

        Not fsynced: were it lost to a power cut, the move would be pending again and
        replayed with its id, which repeats nothing (the next ``begin`` syncs it anyway).
        """
        with self._unsynced():
            self.db.execute(
                "UPDATE moves SET status = ?, amount = COALESCE(?, amount), "
                "receipt = COALESCE(?, receipt), detail = ? WHERE id = ?",
                (status, amount, receipt, detail, move_id))

    def paid(self, move_id: str, receipt: bytes) -> None:
        """Record the bank receipt of a pending funding before it is presented (fsynced)."""
        self.db.execute("UPDATE moves SET receipt = ? WHERE id = ? AND status = 'pending'",
                        (receipt, move_id))

    def record_refunds(self, host: str, move_id: str,
                       refunds: list[tuple[str, int, bytes | None]]) -> int:
        """Record refunds ``(refund id, amount, receipt)`` from ``host``; return the sum of
        those not recorded before (a refund learnt twice counts once)."""
        new = 0
        for refund_id, amount, receipt in refunds:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO refunds (refund_id, host, amount, move_id, receipt) "
                "VALUES (?, ?, ?, ?, ?)", (refund_id, host, amount, move_id, receipt))
            new += amount if cur.rowcount else 0
        return new

    # -- a bag of tasks ------------------------------------------------------------------

    def save_task(self, task: Task) -> None:
        """Record one task's state (fsynced: a start is recorded before it is asked)."""
        self.db.execute(
            "INSERT INTO tasks (idx, arg, pin, state, host, job, status, runs) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idx) DO UPDATE SET "
            "state = excluded.state, host = excluded.host, job = excluded.job, "
            "status = excluded.status, runs = excluded.runs",
            (task.index, task.arg, task.pin, task.state, task.host, task.job, task.status,
             task.runs))

    def tasks(self) -> list[Task]:
        """Every task recorded, checked: a row no agent writes (an unknown state, a job or
        host id that is not one, a done task without a status) is refused as tampered."""
        out = []
        for row in self.db.execute("SELECT idx, arg, pin, state, host, job, status, runs "
                                   "FROM tasks ORDER BY idx"):
            idx, arg, pin, state, host, job, status, runs = row
            ok = (type(idx) is int and idx > 0 and isinstance(arg, str)
                  and state in STATES and type(runs) is int and runs >= 0
                  and all(v is None or (isinstance(v, str) and TASK_ID.fullmatch(v))
                          for v in (pin, host, job))
                  and (status is None or type(status) is int)
                  and (state != DONE or status is not None)
                  and (state not in (RUNNING, STOPPING, DONE) or host is not None))
            if not ok:
                raise Rejected("malformed", f"journal {self.path}: task row {str(idx)[:20]} "
                               "is not one an agent writes (tampered?)")
            out.append(Task(idx, arg, pin, state, host, job, status, runs))
        return out

    def totals(self) -> dict[str, tuple[int, int]]:
        """``{host: (funded, refunded)}`` over the whole job (finished moves only)."""
        out: dict[str, tuple[int, int]] = {}
        for host, kind, amount in self.db.execute(
                "SELECT host, kind, COALESCE(SUM(amount), 0) FROM moves WHERE status = 'done' "
                "GROUP BY host, kind"):
            funded, refunded = out.get(str(host), (0, 0))
            out[str(host)] = (funded + int(amount), refunded) if kind == "fund" \
                else (funded, refunded + int(amount))
        return out

    def payees(self) -> dict[str, str]:
        """The bank account (public key) of every host we moved money with."""
        return {str(h): str(k) for h, k in self.db.execute(
            "SELECT DISTINCT host, payee FROM moves WHERE payee != ''")}

    def move(self, move_id: str) -> Move | None:
        row = self.db.execute("SELECT id, epoch, host, payee, kind, amount, status, receipt "
                              "FROM moves WHERE id = ?", (move_id,)).fetchone()
        return None if row is None else Move(*row)

    def pending(self) -> list[Move]:
        rows = self.db.execute("SELECT id, epoch, host, payee, kind, amount, status, receipt "
                               "FROM moves WHERE status = 'pending' ORDER BY rowid").fetchall()
        return [Move(*r) for r in rows]

    def net_paid_out(self) -> int:
        """Micro-credits sent to hosts minus refunds received back, over the whole job."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(CASE kind WHEN 'fund' THEN amount ELSE -amount END), 0) "
            "FROM moves WHERE status = 'done'").fetchone()
        return int(row[0])

    def committed_out(self) -> int:
        """:meth:`net_paid_out` plus the fundings begun and not yet finished: what the
        budget must cover, counting money in flight."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(CASE kind WHEN 'fund' THEN amount ELSE -amount END), 0) "
            "FROM moves WHERE status = 'done' OR (status = 'pending' AND kind = 'fund')"
        ).fetchone()
        return int(row[0])

    def hosts_funded(self, *, pending: bool = False) -> set[str]:
        """Hosts we funded (with ``pending``: or began to fund)."""
        rows = self.db.execute("SELECT DISTINCT host FROM moves WHERE kind = 'fund' "
                               "AND (status = 'done' OR (? AND status = 'pending'))",
                               (pending,)).fetchall()
        return {str(r[0]) for r in rows}


TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A host's subject id or a job id as a task row may hold them."""

JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
"""A job name: it goes into every transfer id of the job (letters, digits, '_', '-')."""


def fresh_job(now: float) -> str:
    """A new job name, e.g. ``job-20261206-110502-3fa9`` (one per ``agent run``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"job-{stamp}-{secrets.token_hex(2)}"


def job_journal(state: Path, agent_id: str, job: str) -> Path:
    """Where job ``job`` of agent ``agent_id`` keeps its journal."""
    if not JOB_NAME.fullmatch(job):
        raise ValueError(f"bad job name {job!r}: up to 40 letters, digits, '_' or '-'")
    return state / agent_id / f"{job}.db"


@dataclass(frozen=True)
class JobChoice:
    """Which journal an ``agent run`` uses: ``prefix`` starts every transfer id."""

    job: str
    path: Path
    prefix: str
    resumed: bool


def choose_job(state: Path, agent_id: str, job: str | None, now: float) -> JobChoice:
    """The job ``job`` (resumed if its journal exists), or with no name: the key's latest
    unfinished job (resumed), else a fresh one. Transfer ids are ``<agent id>.<job>...``;
    a journal of an older release (``<state>/<agent id>.db``) keeps its ids."""
    legacy = state / f"{agent_id}.db"
    if job is None and legacy.exists() and finished_job(legacy) is None:
        return JobChoice("(unnamed)", legacy, agent_id, True)
    if job is None:
        open_jobs = sorted((p for p in (state / agent_id).glob("*.db")
                            if finished_job(p) is None), key=lambda p: p.stat().st_mtime)
        if open_jobs:
            job = open_jobs[-1].stem
    if job is None:
        job = fresh_job(now)
    path = job_journal(state, agent_id, job)
    return JobChoice(job, path, f"{agent_id}.{job}", path.exists())


def finished_job(path: Path) -> dict[str, Any] | None:
    """The summary a finished job left in its journal (None: none, or not finished)."""
    if not path.exists():
        return None
    journal = Journal(path)
    try:
        text = journal.get("finished")
    finally:
        journal.close()
    return None if text is None else dict(json.loads(text))


def mark_finished(path: Path, summary: dict[str, Any]) -> bool:
    """Record that the job of ``path`` is over, unless a move is still pending (a rerun
    must then settle it); True if marked. A finished job is reported, never rerun."""
    journal = Journal(path)
    try:
        if journal.pending():
            return False
        journal.set("finished", json.dumps(summary, sort_keys=True))
        return True
    finally:
        journal.close()
