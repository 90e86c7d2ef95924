"""The store's own small SQLite file (no NATS here): what must survive a restart.

* **Proof budgets.** A host stores a job's results in the account's bucket with the
  account's signed ``host.exec`` as proof; one proof stores at most one bundle's worth
  (re-used, it would fill the bucket, where nothing expires). The bytes stored per proof
  (by its SHA-256) and its last chunk are kept here, so a restart of the store does not
  hand a hostile host a fresh budget. The oldest of more than ``kept`` proofs are forgotten.
* **Buckets made.** The store makes an account's bucket on its first put; it counts them
  against ``--max-buckets`` across restarts.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

from tycoon.errors import Rejected

PROOFS_KEPT = 100_000
"""Proofs whose stored bytes are remembered (oldest forgotten first): about 10 MB."""

Chunk = tuple[str, int]
"""(upload id, chunk index) of a put."""


def charge(spent: int, last: Chunk, chunk: Chunk, size: int, limit: int) -> tuple[int, Chunk]:
    """The proof's new (bytes stored, last chunk) after storing ``size`` bytes as ``chunk``;
    a resent chunk (the same as the last) counts once; ``bundle_too_large`` past ``limit``
    (pure)."""
    total = spent + (size if chunk != last else 0)
    if total > limit:
        raise Rejected("bundle_too_large", "this job's results are stored already: one "
                       f"host.exec stores at most {limit} bytes")
    return total, chunk


class StoreState:
    """The store's SQLite file (``:memory:`` for tests that restart nothing)."""

    def __init__(self, path: str | Path, *, kept: int = PROOFS_KEPT) -> None:
        self.path, self.kept = str(path), kept
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS proofs (proof TEXT PRIMARY KEY, "
                        "spent INTEGER NOT NULL, upload TEXT NOT NULL, idx INTEGER NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS buckets (account TEXT PRIMARY KEY, "
                        "made_ns INTEGER NOT NULL)")

    def spend(self, proof: bytes, chunk: Chunk, size: int, limit: int) -> None:
        """Count a host's chunk against its proof, durably (see :func:`charge`)."""
        key = hashlib.sha256(proof).hexdigest()
        row = self.db.execute("SELECT spent, upload, idx FROM proofs WHERE proof = ?",
                              (key,)).fetchone()
        spent, last = (row[0], (row[1], row[2])) if row else (0, ("", -1))
        total, chunk = charge(spent, last, chunk, size, limit)
        self.db.execute("INSERT OR REPLACE INTO proofs (proof, spent, upload, idx) "
                        "VALUES (?, ?, ?, ?)", (key, total, chunk[0], chunk[1]))
        if row is None:
            self.db.execute("DELETE FROM proofs WHERE rowid <= (SELECT max(rowid) FROM proofs)"
                            " - ?", (self.kept,))

    def spent(self, proof: bytes) -> int:
        """Bytes stored with ``proof`` so far."""
        row = self.db.execute("SELECT spent FROM proofs WHERE proof = ?",
                              (hashlib.sha256(proof).hexdigest(),)).fetchone()
        return int(row[0]) if row else 0

    def has_bucket(self, account: str) -> bool:
        return self.db.execute("SELECT 1 FROM buckets WHERE account = ?",
                               (account,)).fetchone() is not None

    def buckets(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM buckets").fetchone()[0])

    def made_bucket(self, account: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO buckets (account, made_ns) VALUES (?, ?)",
                        (account, time.time_ns()))

    def close(self) -> None:
        self.db.close()
