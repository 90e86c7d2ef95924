"""The SQLite store: WAL, ``synchronous=FULL``, one writer per database (flock).

Each :meth:`SqliteStore.write` is one ``BEGIN IMMEDIATE … COMMIT`` transaction;
with WAL and ``synchronous=FULL`` the commit returns only after the WAL is
fsynced, so a batch is durable when ``write`` returns, and a failed batch is
rolled back entirely.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from tycoon.bank.store import AccountRow, EventRow

SCHEMA_VERSION = "2"
"""2: a transfer id is unique per payer (index ``events_op_payer``); a version 1 file
(ids unique per ledger) is migrated in place when opened for writing."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accounts (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL DEFAULT '',
    balance    INTEGER NOT NULL CHECK (balance >= 0),
    closed     INTEGER NOT NULL DEFAULT 0 CHECK (closed IN (0, 1)),
    opened_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq     INTEGER PRIMARY KEY,
    kind    TEXT NOT NULL CHECK (kind IN ('open', 'mint', 'transfer', 'close')),
    ts_ns   INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    op_id   TEXT,
    payer   TEXT,
    payee   TEXT,
    amount  INTEGER NOT NULL DEFAULT 0 CHECK (amount >= 0),
    memo    TEXT NOT NULL DEFAULT '',
    receipt BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS events_op_payer ON events (kind, op_id, ifnull(payer, ''))
    WHERE op_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_payer ON events (payer) WHERE payer IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_payee ON events (payee) WHERE payee IS NOT NULL;
"""

_COLUMNS = "seq, kind, ts_ns, actor, op_id, payer, payee, amount, memo, receipt"
_INSERT_EVENT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_ACCOUNT = (
    "INSERT INTO accounts (id, name, balance, closed, opened_seq) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET name = excluded.name, balance = excluded.balance, "
    "closed = excluded.closed, opened_seq = excluded.opened_seq"
)
_FIND_OP = f"SELECT {_COLUMNS} FROM events WHERE kind = ? AND op_id = ?"
_FIND_OP_OF = f"{_FIND_OP} AND ifnull(payer, '') = ?"
_FIND_OPS = f"SELECT {_COLUMNS} FROM events WHERE kind = ? AND op_id IN"
_IN_CHUNK = 512  # ids per look-up (SQLite allows 32766 parameters)
_HISTORY = (
    f"SELECT {_COLUMNS} FROM events WHERE seq IN "
    "(SELECT seq FROM events WHERE payer = ? UNION SELECT seq FROM events WHERE payee = ?) "
    "ORDER BY seq LIMIT ? OFFSET ?"
)


class StoreLocked(RuntimeError):
    """Another process already writes this database."""


def _event(row: tuple) -> EventRow:  # type: ignore[type-arg]
    return EventRow(*row[:9], receipt=bytes(row[9]) if row[9] is not None else None)


class SqliteStore:
    """A :class:`~tycoon.bank.store.Store` in one SQLite file.

    ``readonly=True`` opens an existing database for reading (e.g. an audit while
    the bank runs); otherwise the store takes an exclusive lock on ``<path>.lock``
    so that exactly one writer exists.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock_fd: int | None = None
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(f"no bank database at {self.path}")
            uri = f"file:{self.path.resolve()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None,
                                       check_same_thread=False)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise StoreLocked(f"{self.path} is in use by another bank process") from exc
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   cached_statements=64)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=OFF")
        self._db.executescript(_SCHEMA)
        schema = self.get_meta("schema")
        if schema == "1":
            self._migrate_v1()
        elif schema is None:
            self.set_meta("schema", SCHEMA_VERSION)
        elif schema != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: unsupported schema {schema}")

    def _migrate_v1(self) -> None:
        """Version 1 -> 2: drop the index that made a transfer id unique per ledger (the
        per-payer index, created above, holds for any v1 file: it is a weaker rule)."""
        with self._transaction():
            self._db.execute("DROP INDEX IF EXISTS events_op")
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))

    # -- reads -----------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def load_accounts(self) -> dict[str, AccountRow]:
        rows = self._db.execute("SELECT id, name, balance, closed, opened_seq FROM accounts")
        return {r[0]: AccountRow(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows}

    def last_seq(self) -> int:
        return int(self._db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

    def total_minted(self) -> int:
        sql = "SELECT coalesce(sum(amount), 0) FROM events WHERE kind = 'mint'"
        return int(self._db.execute(sql).fetchone()[0])

    def find_op(self, kind: str, op_id: str, payer: str | None = None) -> EventRow | None:
        if payer is None:
            row = self._db.execute(f"{_FIND_OP} ORDER BY seq", (kind, op_id)).fetchone()
        else:
            row = self._db.execute(_FIND_OP_OF, (kind, op_id, payer)).fetchone()
        return None if row is None else _event(row)

    def find_ops(self, kind: str, op_ids: list[str]) -> dict[tuple[str, str], EventRow]:
        found: dict[tuple[str, str], EventRow] = {}
        for start in range(0, len(op_ids), _IN_CHUNK):
            chunk = op_ids[start:start + _IN_CHUNK]
            # pad to a power of two so that few distinct statements reach the cache
            size = 1 << (len(chunk) - 1).bit_length()
            chunk = chunk + [chunk[0]] * (size - len(chunk))
            sql = f"{_FIND_OPS} ({', '.join('?' * size)})"
            for row in self._db.execute(sql, (kind, *chunk)):
                found[(row[4], row[5] or "")] = _event(row)
        return found

    def history(self, account: str, offset: int, limit: int) -> list[EventRow]:
        rows = self._db.execute(_HISTORY, (account, account, limit, offset)).fetchall()
        return [_event(r) for r in rows]

    def events(self, after_seq: int = 0) -> Iterator[EventRow]:
        cursor = self._db.execute(
            f"SELECT {_COLUMNS} FROM events WHERE seq > ? ORDER BY seq", (after_seq,)
        )
        for row in cursor:
            yield _event(row)

    # -- writes ----------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def write(self, events: list[EventRow], accounts: list[AccountRow]) -> None:
        """Append events and upsert accounts in one transaction; durable on return."""
        with self._transaction():
            self._db.executemany(
                _INSERT_EVENT,
                [
                    (e.seq, e.kind, e.ts_ns, e.actor, e.op_id, e.payer, e.payee, e.amount,
                     e.memo, e.receipt)
                    for e in events
                ],
            )
            self._db.executemany(
                _UPSERT_ACCOUNT,
                [(a.account, a.name, a.balance, int(a.closed), a.opened_seq) for a in accounts],
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        if self.readonly:
            raise PermissionError("read-only store")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the database and release the writer lock."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
