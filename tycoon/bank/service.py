"""The bank's NATS adapter: endpoints on ``tycoon.bank.<op>`` over the ledger core.

The envelope's verified sender IS the acting account: ``open`` opens the sender's
own key, ``transfer`` pays from the sender, ``close`` closes the sender; ``mint``
is for the operator key only; ``balance`` and ``history`` for the owner (the bank
and the operator may audit). Every state change goes through the group committer,
so a reply leaves only after its batch is durable; each committed batch of
transfers is published on ``tycoon.bank.settled``.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Protocol

from tycoon.bank.committer import GroupCommitter
from tycoon.bank.ledger import MAX_HISTORY_PAGE, Batch, Ledger
from tycoon.bank.maintenance import write as write_in_maintenance
from tycoon.bus import ratelimit, subjects
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import is_public_key
from tycoon.bus.ratelimit import Bucket, RateLimit, retry_text
from tycoon.bus.service import Endpoint, Service
from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.messages.bank import (
    BankBalance,
    BankBalanceReply,
    BankClose,
    BankHistory,
    BankHistoryReply,
    BankInfoReply,
    BankMint,
    BankOpen,
    BankSettled,
    BankTransfer,
    BankTransferReply,
)
from tycoon.money import format_amount

OPS = ("open", "mint", "transfer", "balance", "history", "close", "info")
OPEN_RATE = 100.0
OPEN_BURST = 2000
"""The default opening budget, for all keys together: a cluster of 1,000 hosts and a few
hundred users opens its accounts at once (benchmarks/scale.py: 1,200); an attacker with
free keys then opens 100 a second at most (20,000 take over 3 minutes),
and with an opening fee pays for each one."""


class ReceiptLog(Protocol):
    """Where committed batches are copied, best effort (``tycoon.streams.settlements``'s
    ``SettlementLog``); named here so the bank does not depend on the streams package."""

    def offer(self, batch: Batch) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class BankService:
    """Serves the bank on a :class:`Bus` signed by the bank's key; an async context manager."""

    def __init__(self, bus: Bus, ledger: Ledger, *, max_batch: int = 2048,
                 concurrency: int = 4096, queue: str = "bank",
                 settlement_log: ReceiptLog | None = None,
                 rate_limit: RateLimit | None = ratelimit.BANK,
                 open_rate: float = OPEN_RATE, open_burst: int = OPEN_BURST,
                 open_fee: int = 0) -> None:
        """``rate_limit``: per signer key (the operator is exempt). ``open_rate`` and
        ``open_burst``: accounts opened per second by all keys together (0: no limit; the
        operator's openings are not counted). ``open_fee``: µcredits an account costs to
        open, paid by a sponsor (see docs/bank.md#opening-accounts)."""
        if bus.identity.public_key != ledger.bank.public_key:
            raise ValueError("the bus must be signed by the bank's own key")
        if not isinstance(open_fee, int) or open_fee < 0:
            raise ValueError("the opening fee is a non-negative integer of µcredits")
        self.open_fee = open_fee
        self.openings = Bucket(open_rate, open_burst) if open_rate > 0 else None
        self.bus = bus
        self.ledger = ledger
        self.settlement_log = settlement_log  # JetStream copy of receipts, best effort
        self.maintenance: str | None = None
        """Why writes are refused (``maintenance``) while reads are served; only the
        operator may open and mint, to re-enter what a restored ledger lost; lifts by itself
        once the ledger's pending receipts are re-entered (tycoon.bank.maintenance)."""
        self.committed: collections.Counter[str] = collections.Counter()
        """Ledger events committed by this process, by kind (open, mint, transfer, close)."""
        self.committer = GroupCommitter(ledger, max_batch=max_batch,
                                        on_commit=self._publish_settled)
        handlers = {
            "open": self._writing(self._open),
            "mint": self._writing(self._mint),
            "transfer": self._writing(self._transfer),
            "balance": self._balance,
            "history": self._history,
            "close": self._writing(self._close),
            "info": self._info,
        }
        endpoints = [Endpoint(subjects.bank(op), f"bank.{op}", handlers[op]) for op in OPS]
        self.service = Service(bus, "tycoon-bank", endpoints, queue=queue,
                               concurrency=concurrency,
                               description="Tycoon bank: accounts, transfers, receipts",
                               rate_limit=rate_limit, exempt=(ledger.operator,))

    async def __aenter__(self) -> BankService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self.committer.start()
        bank = self.ledger.bank.public_key
        row = self.ledger.accounts.get(bank)
        if self.open_fee and (row is None or row.closed):  # where opening fees are paid
            await self.committer.submit(lambda b: b.open(bank, "bank: opening fees"))
        if self.settlement_log is not None:
            await self.settlement_log.start()
        await self.service.start()

    async def stop(self) -> None:
        """Stop taking requests, answer the ones in flight, flush the last batch."""
        await self.service.stop()
        await self.committer.stop()
        if self.settlement_log is not None:
            await self.settlement_log.stop()

    async def _publish_settled(self, batch: Batch) -> None:
        self.committed.update(event.kind for event in batch.events)
        if self.settlement_log is not None:
            self.settlement_log.offer(batch)  # non-blocking; publishes in the background
        if batch.receipts:
            await self.bus.publish(subjects.BANK_SETTLED, "bank.settled",
                                   BankSettled(batch.receipts).to_body())

    def _writing(self, handler: Any) -> Any:
        """``handler``, refused with ``maintenance`` while the bank is in maintenance
        (but the operator's opens and mints, which it re-enters its log after:
        tycoon.bank.maintenance); a refused write changes nothing."""

        async def guarded(msg: Message) -> dict[str, Any]:
            if self.maintenance is not None:
                return dict(await write_in_maintenance(self, msg, handler))
            return dict(await handler(msg))

        return guarded

    # -- handlers ----------------------------------------------------------------

    async def _open(self, msg: Message) -> dict[str, Any]:
        """Open the sender's account, or (``account``) another key's as its sponsor.

        The operator opens any account, free and outside the opening budget. Others open
        their own only while there is no fee; with a fee, a funded sponsor opens an
        account for a key and pays the fee into the bank's account, in one batch."""
        req = BankOpen.from_body(msg.body)
        name = req.name or ""
        sender = msg.sender
        target = req.account or sender
        if not is_public_key(target):
            raise Rejected("malformed", "an account id is a user public key")
        row = self.ledger.accounts.get(target)
        if row is not None and not row.closed:  # before the budget: a retry costs nothing
            raise Rejected("account_exists", "this key already has an open account")
        fee, fee_to = 0, ""
        if sender != self.ledger.operator:
            if self.open_fee and target == sender:
                raise Rejected("forbidden", f"opening an account costs "
                               f"{format_amount(self.open_fee)} credits here: a funded "
                               "account (or the operator) opens it for this key")
            if not self.open_fee and target != sender:
                raise Rejected("forbidden", "only the operator opens another key's account")
            fee, fee_to = self.open_fee, self.ledger.bank.public_key
            if self.openings is not None:
                wait = self.openings.take(time.monotonic_ns())
                if wait:
                    raise Rejected("rate_limited", "the bank opens at most "
                                   f"{self.openings.rate:g} accounts/s for all keys together; "
                                   f"{retry_text(wait)}")
        return await self.committer.submit(
            lambda b: b.open(sender, name, account=target, fee=fee, fee_to=fee_to))

    async def _mint(self, msg: Message) -> dict[str, Any]:
        sender = msg.sender
        if sender != self.ledger.operator:
            raise Rejected("forbidden", "only the operator key may mint")
        req = BankMint.from_body(msg.body)
        account, amount, mint_id, memo = req.account, req.amount, req.mint_id, req.memo or ""
        return await self.committer.submit(
            lambda b: b.mint(sender, account, amount, mint_id, memo), ("mint", mint_id))

    async def _transfer(self, msg: Message) -> dict[str, Any]:
        payer, req = msg.sender, BankTransfer.from_body(msg.body)
        payee, amount, transfer_id, memo = req.payee, req.amount, req.transfer_id, req.memo or ""
        receipt = await self.committer.submit(
            lambda b: b.transfer(payer, payee, amount, transfer_id, memo),
            ("transfer", transfer_id))
        return BankTransferReply(receipt.raw).to_body()

    async def _balance(self, msg: Message) -> dict[str, Any]:
        account = BankBalance.from_body(msg.body).account or msg.sender
        row = self.ledger.balance(msg.sender, account)
        return BankBalanceReply(row.account, row.name, row.balance).to_body()

    async def _history(self, msg: Message) -> dict[str, Any]:
        sender, req = msg.sender, BankHistory.from_body(msg.body)
        account = req.account or sender
        offset = 0 if req.offset is None else req.offset
        limit = 100 if req.limit is None else req.limit
        if not 1 <= limit <= MAX_HISTORY_PAGE or not 0 <= offset < 2**63:  # SQLite int64
            raise Rejected("malformed", f"offset 0..2**63-1 and limit 1..{MAX_HISTORY_PAGE}")
        self.ledger.may_read(sender, account)
        entries = await self.committer.submit(
            lambda _b: self.ledger.history(sender, account, offset, limit))
        return BankHistoryReply(account, offset, entries, len(entries) == limit).to_body()

    async def _close(self, msg: Message) -> dict[str, Any]:
        sender, account = msg.sender, BankClose.from_body(msg.body).account or ""
        closed = await self.committer.submit(lambda b: b.close(sender, account))
        get_logger("bank").info("account closed", account=closed["account"],
                                seq=closed["seq"])  # what a restore needs if it is lost
        return closed

    async def _info(self, msg: Message) -> dict[str, Any]:
        return BankInfoReply(self.ledger.bank.public_key, self.ledger.operator,
                             self.ledger.seq, len(self.ledger.accounts),
                             self.open_fee).to_body()
