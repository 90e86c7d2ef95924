"""What the bank's history of an agent's account says about its money moves.

The bank is the record of where money went. The agent reads it when its own books cannot
tell: whether a funding it journalled was ever paid (after its deadline an agent only
settles, so it looks the payment up instead of making it), and which refunds a host
paid on its own (a host pays a pending refund when the bank is back, after the agent
stopped asking). The history is read incrementally (each entry once per process); the
reply is signed by the bank, so its entries are the bank's word.
"""

from __future__ import annotations

from typing import Any, Protocol

PAGE = 1000
"""Entries per history request (the bank's largest page)."""


class HistorySource(Protocol):
    """What this needs of the bank (``BankClient`` fits)."""

    async def history(self, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]: ...


class BankHistory:
    """Our transfers by id (paid out) and the transfers each payer made to us."""

    def __init__(self, bank: HistorySource) -> None:
        self.bank = bank
        self.offset = 0
        self.paid: dict[str, bytes | None] = {}
        """Our payments: transfer id -> receipt."""
        self.received: dict[str, dict[str, tuple[int, bytes | None]]] = {}
        """Payments to us: payer -> {transfer id: (amount, receipt)}."""

    async def refresh(self) -> None:
        """Read the entries added since the last read (raises ``Rejected`` if the bank
        does not answer)."""
        while True:
            page = await self.bank.history(self.offset, PAGE)
            for entry in page:
                self._take(entry)
            self.offset += len(page)
            if len(page) < PAGE:
                return

    def _take(self, entry: dict[str, Any]) -> None:
        if entry.get("kind") != "transfer":
            return
        amount, other, tid = entry.get("amount"), entry.get("counterparty"), entry.get("id")
        if not isinstance(amount, int) or not isinstance(other, str) or not isinstance(tid, str):
            return
        receipt = entry.get("receipt")
        raw = bytes(receipt) if isinstance(receipt, bytes | bytearray) else None
        if amount < 0:
            self.paid[tid] = raw
        elif amount > 0:
            self.received.setdefault(other, {})[tid] = (amount, raw)

    async def payment(self, transfer_id: str) -> bytes | None:
        """The receipt of our payment ``transfer_id`` (b"" if paid without a stored
        receipt), or None if the bank settled no such payment."""
        if transfer_id not in self.paid:
            await self.refresh()
        if transfer_id not in self.paid:
            return None
        return self.paid[transfer_id] or b""

    async def refunds_from(self, payer: str) -> list[tuple[str, int, bytes | None]]:
        """Every payment ``payer`` (a host's key) made to us: ``(id, amount, receipt)``."""
        await self.refresh()
        return [(tid, amount, raw) for tid, (amount, raw) in self.received.get(payer, {}).items()]
