"""The bank's store interface: what the ledger needs from durable storage.

The ledger keeps the accounts in memory and reads the (much larger) event log
through the store. Writes happen only in :meth:`Store.write`, which applies one
whole batch atomically and durably (all or nothing, on disk before it returns).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class AccountRow:
    """One account as stored: id (public key), display name, balance, closed flag."""

    account: str
    name: str
    balance: int
    closed: bool
    opened_seq: int


@dataclass(frozen=True)
class EventRow:
    """One ledger event; ``seq`` is the ledger sequence (1, 2, 3, ... with no gaps).

    - ``open``: ``payee`` = the account, ``memo`` = its display name
    - ``mint``: ``payee`` = the credited account, ``op_id`` = the mint id
    - ``transfer``: ``payer`` -> ``payee``, ``op_id`` = the transfer id (unique per payer),
      ``receipt`` = raw bytes
    - ``close``: ``payer`` = the account
    ``actor`` is the key that signed the request.
    """

    seq: int
    kind: str
    ts_ns: int
    actor: str
    op_id: str | None = None
    payer: str | None = None
    payee: str | None = None
    amount: int = 0
    memo: str = ""
    receipt: bytes | None = None


class Store(Protocol):
    """Durable storage of accounts and the event log (one writer)."""

    def get_meta(self, key: str) -> str | None:
        """A metadata value (e.g. ``bank_key``), or None."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Set a metadata value durably."""
        ...

    def load_accounts(self) -> dict[str, AccountRow]:
        """Every account, by id."""
        ...

    def last_seq(self) -> int:
        """The highest event sequence number (0 for an empty ledger)."""
        ...

    def total_minted(self) -> int:
        """Σ of every mint's amount."""
        ...

    def find_op(self, kind: str, op_id: str, payer: str | None = None) -> EventRow | None:
        """The ``mint`` or ``transfer`` event with this id of ``payer`` (``""`` for a mint),
        if any; with ``payer`` None, the oldest event of that kind and id of any payer.
        A transfer id is unique per payer, a mint id per ledger."""
        ...

    def find_ops(self, kind: str, op_ids: list[str]) -> dict[tuple[str, str], EventRow]:
        """Every ``kind`` event whose id is among ``op_ids``, of any payer, by (id, payer or
        ``""``) (one look-up per batch)."""
        ...

    def history(self, account: str, offset: int, limit: int) -> list[EventRow]:
        """Events touching ``account``, oldest first, paged."""
        ...

    def events(self, after_seq: int = 0) -> Iterator[EventRow]:
        """Every event with ``seq > after_seq``, in order."""
        ...

    def write(self, events: list[EventRow], accounts: list[AccountRow]) -> None:
        """Append ``events`` and upsert ``accounts`` in one durable transaction, or raise."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...
