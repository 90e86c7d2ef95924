"""The ledger core (sans-IO): accounts, mints, transfers and receipts over a Store.

Requests are applied to a :class:`Batch`; each operation either raises
:class:`~tycoon.errors.Rejected` and changes nothing, or records its events in the
batch. :meth:`Ledger.commit` writes the whole batch in one durable store
transaction and only then makes it visible; a batch never committed (or whose commit
failed) is simply dropped, leaving the ledger exactly as before. The service adapter
group-commits: many concurrent requests share one batch and one fsync, and each
reply is sent only after its batch is durable.

The accounts live in memory (loaded at start); the event log is read through the
store for idempotency look-ups and history.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from tycoon.bank.receipt import MAX_MEMO, MAX_TRANSFER_ID, Receipt, make_receipt, verify_receipt
from tycoon.bank.store import AccountRow, EventRow, Store
from tycoon.bus.keys import Identity, is_public_key
from tycoon.bus.schema import check_id, check_name
from tycoon.errors import Rejected
from tycoon.messages.bank import BankCloseReply, BankEntry, BankMintReply, BankOpenReply
from tycoon.money import MAX_AMOUNT, check_amount, format_amount

MAX_NAME = 64
MAX_HISTORY_PAGE = 1000


def _check_id(value: str, what: str) -> str:
    return check_id(value, what, max_len=MAX_TRANSFER_ID)


def _check_text(value: str, what: str, max_len: int) -> str:
    if not isinstance(value, str) or len(value) > max_len or not value.isprintable():
        raise Rejected("malformed", f"{what} must be printable text of at most {max_len}")
    return value


def _with_balance(row: AccountRow, balance: int) -> AccountRow:
    return AccountRow(row.account, row.name, balance, row.closed, row.opened_seq)


def _receipt_of(event: EventRow) -> Receipt:
    assert event.receipt is not None and event.op_id is not None
    assert event.payer is not None and event.payee is not None
    return Receipt(event.op_id, event.payer, event.payee, event.amount, event.memo,
                   event.seq, event.ts_ns, event.receipt)


class Batch:
    """Operations applied together and committed (or dropped) as one unit."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.seq = ledger.seq
        self.minted = ledger.minted
        self.events: list[EventRow] = []
        self.dirty: dict[str, AccountRow] = {}
        # (kind, payer or "", op id) -> event: an id is unique per payer (mints: per ledger)
        self.ops: dict[tuple[str, str, str], EventRow] = {}
        self.receipts: list[bytes] = []
        # committed events looked up ahead for the whole batch, and which ids were asked
        self._known: dict[tuple[str, str, str], EventRow] = {}
        self._asked: set[tuple[str, str]] = set()

    def prefetch(self, kind: str, op_ids: list[str]) -> None:
        """Look up the committed ``kind`` events of all ``op_ids`` (of every payer) in one
        store query, so that :meth:`transfer` / :meth:`mint` need no query of their own."""
        ids = [i for i in dict.fromkeys(op_ids) if isinstance(i, str)]
        if not ids:
            return
        for (op_id, payer), event in self._ledger.store.find_ops(kind, ids).items():
            self._known[(kind, payer, op_id)] = event
        self._asked.update((kind, op_id) for op_id in ids)

    def _account(self, account: str) -> AccountRow | None:
        row = self.dirty.get(account)
        return row if row is not None else self._ledger.accounts.get(account)

    def _live(self, account: str, role: str) -> AccountRow:
        # only valid public keys ever get an account, so the lookup validates the key
        row = self._account(account) if isinstance(account, str) else None
        if row is None or row.closed:
            raise Rejected("unknown_account", f"{role} {account[:60]!r} has no open account")
        return row

    def _find(self, kind: str, op_id: str, payer: str = "") -> EventRow | None:
        key = (kind, payer, op_id)
        found = self.ops.get(key)
        if found is not None:
            return found
        if (kind, op_id) in self._asked:
            return self._known.get(key)
        return self._ledger.store.find_op(kind, op_id, payer)

    def _record(self, event: EventRow) -> None:
        self.events.append(event)
        if event.op_id is not None:
            self.ops[(event.kind, event.payer or "", event.op_id)] = event

    def _next(self) -> tuple[int, int]:
        if self.seq + 1 in self._ledger.pending:  # a restored ledger: never a seq twice
            raise Rejected("maintenance", f"seq {self.seq + 1} is on a receipt in SETTLEMENTS "
                                          "that is not re-entered yet")
        self.seq += 1
        return self.seq, self._ledger.clock()

    def open(self, sender: str, name: str = "", *, account: str = "", fee: int = 0,
             fee_to: str = "") -> dict[str, Any]:
        """Open the account of key ``account`` (default: the sender's own; re-opening a
        closed one starts it at zero). A ``fee`` > 0 is paid by the sender to ``fee_to`` in
        the same batch, as an ordinary transfer with a receipt (id ``open-<seq>``), so
        money is conserved; without the money nothing is opened (``overdraft``)."""
        check_name(name, "name", max_len=MAX_NAME)  # ASCII, one form (docs/protocol.md)
        target = account or sender
        if not is_public_key(target):
            raise Rejected("malformed", "an account id is a user public key")
        existing = self._account(target)
        if existing is not None and not existing.closed:
            raise Rejected("account_exists", "this key already has an open account")
        receipt = None
        if fee:
            check_amount(fee)
            payer = self._live(sender, "sponsor")  # every check of transfer(), up front
            self._live(fee_to, "fee account")
            if fee_to in (sender, target):
                raise Rejected("self_transfer", "the fee account cannot pay or get the fee")
            if payer.balance < fee:
                raise Rejected("overdraft", f"opening costs {format_amount(fee)}; the sponsor "
                                            f"holds {format_amount(payer.balance)}")
            receipt = self.transfer(sender, fee_to, fee, f"open-{self.seq + 1}",
                                    f"account opening fee for {target}")
        seq, ts = self._next()
        self._record(EventRow(seq, "open", ts, sender, payee=target, memo=name))
        self.dirty[target] = AccountRow(target, name, 0, False, seq)
        return BankOpenReply(target, name, seq, fee if receipt is not None else None,
                             receipt.raw if receipt is not None else None).to_body()

    def mint(self, sender: str, account: str, amount: int, mint_id: str,
             memo: str = "") -> dict[str, Any]:
        """Credit ``account`` with new money; only the operator may; idempotent by ``mint_id``."""
        if sender != self._ledger.operator:
            raise Rejected("forbidden", "only the operator key may mint")
        check_amount(amount)
        _check_id(mint_id, "mint id")
        _check_text(memo, "memo", MAX_MEMO)
        previous = self._find("mint", mint_id)
        if previous is not None:
            if (previous.payee, previous.amount, previous.memo) != (account, amount, memo):
                raise Rejected("conflict", f"mint id {mint_id!r} was used with other fields")
            return BankMintReply(mint_id, account, amount, previous.seq).to_body()
        row = self._live(account, "account")
        if amount > MAX_AMOUNT - self.minted:
            raise Rejected("bad_amount", "minting this would exceed the ledger's range")
        seq, ts = self._next()
        self._record(EventRow(seq, "mint", ts, sender, op_id=mint_id, payee=account,
                              amount=amount, memo=memo))
        self.dirty[account] = _with_balance(row, row.balance + amount)
        self.minted += amount
        return BankMintReply(mint_id, account, amount, seq).to_body()

    def transfer(self, payer: str, payee: str, amount: int, transfer_id: str,
                 memo: str = "") -> Receipt:
        """Move ``amount`` from ``payer`` to ``payee``; idempotent by (``payer``,
        ``transfer_id``): another payer's use of the same id is another transfer."""
        check_amount(amount)
        _check_id(transfer_id, "transfer id")
        _check_text(memo, "memo", MAX_MEMO)
        if payer == payee:
            raise Rejected("self_transfer", "payer and payee are the same account")
        previous = self._find("transfer", transfer_id, payer)
        if previous is not None:
            if (previous.payee, previous.amount, previous.memo) != (payee, amount, memo):
                raise Rejected("conflict",
                               f"transfer id {transfer_id!r} was used with other fields")
            return _receipt_of(previous)
        source = self._live(payer, "payer")
        target = self._live(payee, "payee")
        if source.balance < amount:
            raise Rejected("overdraft", f"balance {format_amount(source.balance)} < amount "
                                        f"{format_amount(amount)}")
        seq, ts = self._next()
        raw = make_receipt(self._ledger.bank, transfer_id=transfer_id, payer=payer,
                           payee=payee, amount=amount, memo=memo, seq=seq, settled_ns=ts)
        self._record(EventRow(seq, "transfer", ts, payer, op_id=transfer_id, payer=payer,
                              payee=payee, amount=amount, memo=memo, receipt=raw))
        self.dirty[payer] = _with_balance(source, source.balance - amount)
        self.dirty[payee] = _with_balance(target, target.balance + amount)
        self.receipts.append(raw)
        return Receipt(transfer_id, payer, payee, amount, memo, seq, ts, raw)

    def reenter(self, raw: bytes) -> Receipt:
        """Re-enter a transfer this ledger lost (it was restored from a backup) from its
        bank-signed receipt, exactly as settled: same sequence, time and receipt bytes.

        Only the next sequence fits: a receipt further on means events between were lost
        that no log holds (an open, a mint, a close: SETTLEMENTS has transfers only), and
        is ``conflict`` until they are entered again. The payer must afford it as then."""
        receipt = verify_receipt(raw, self._ledger.bank.public_key)
        if receipt.seq != self.seq + 1:
            raise Rejected("conflict", f"receipt seq {receipt.seq} does not follow the ledger's "
                                       f"seq {self.seq}")
        if self._find("transfer", receipt.transfer_id, receipt.payer) is not None:
            raise Rejected("conflict", f"transfer {receipt.transfer_id!r} of this payer exists")
        source = self._live(receipt.payer, "payer")
        target = self._live(receipt.payee, "payee")
        if source.balance < receipt.amount:
            raise Rejected("overdraft", f"the payer holds {format_amount(source.balance)} < "
                                        f"{format_amount(receipt.amount)}")
        self.seq += 1
        self._record(EventRow(receipt.seq, "transfer", receipt.settled_ns, receipt.payer,
                              op_id=receipt.transfer_id, payer=receipt.payer,
                              payee=receipt.payee, amount=receipt.amount, memo=receipt.memo,
                              receipt=receipt.raw))
        self.dirty[receipt.payer] = _with_balance(source, source.balance - receipt.amount)
        self.dirty[receipt.payee] = _with_balance(target, target.balance + receipt.amount)
        return receipt

    def close(self, sender: str, account: str = "") -> dict[str, Any]:
        """Close the sender's own account; only with a zero balance. The operator closes
        ``account`` (another key's) only to re-enter a close a restored ledger lost: while
        receipts wait in ``pending`` (maintenance), at the seq before them."""
        target = account or sender
        if target != sender and (sender != self._ledger.operator or not self._ledger.pending):
            raise Rejected("forbidden", "only the account's own key closes it (the operator "
                                        "re-enters a lost close only in maintenance)")
        row = self._live(target, "account")
        if row.balance != 0:
            raise Rejected("not_empty", f"the account still holds {format_amount(row.balance)}")
        seq, ts = self._next()
        self._record(EventRow(seq, "close", ts, sender, payer=target))
        self.dirty[target] = dataclasses.replace(row, closed=True)
        return BankCloseReply(target, seq).to_body()


class Ledger:
    """The bank's state machine over a :class:`~tycoon.bank.store.Store`."""

    def __init__(
        self,
        store: Store,
        bank: Identity,
        *,
        operator: str,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if not is_public_key(operator):
            raise ValueError("the operator must be a user public key (U…)")
        known = store.get_meta("bank_key")
        if known is None:
            store.set_meta("bank_key", bank.public_key)
        elif known != bank.public_key:
            raise ValueError(f"this ledger belongs to bank key {known}, not {bank.public_key}")
        self.store = store
        self.bank = bank
        self.operator = operator
        self.clock = clock
        self.accounts: dict[str, AccountRow] = store.load_accounts()
        self.seq = store.last_seq()
        self.minted = store.total_minted()
        self.pending: dict[int, bytes] = {}
        """Receipts (by seq) a restored ledger found in SETTLEMENTS past its seq and has
        not re-entered yet: no new event may take their seqs (tycoon.bank.maintenance)."""

    def batch(self) -> Batch:
        """Start a batch on the committed state."""
        return Batch(self)

    def commit(self, batch: Batch) -> None:
        """Write ``batch`` durably, then make it visible; on failure nothing changes."""
        self.persist(batch)
        self.apply_in_memory(batch)

    def persist(self, batch: Batch) -> None:
        """Write ``batch`` to the store in one durable transaction (may run in a thread:
        it touches only the store, not the in-memory state)."""
        if batch.seq != self.seq + len(batch.events):
            raise RuntimeError("batch does not follow the committed ledger")
        if batch.events:
            self.store.write(batch.events, list(batch.dirty.values()))

    def apply_in_memory(self, batch: Batch) -> None:
        """Make a persisted ``batch`` visible in memory."""
        self.accounts.update(batch.dirty)
        self.seq = batch.seq
        self.minted = batch.minted

    def apply(self, op: Callable[[Batch], Any]) -> Any:
        """Run one operation in its own batch and commit it (for tools and tests)."""
        batch = self.batch()
        result = op(batch)
        self.commit(batch)
        return result

    def may_read(self, sender: str, account: str) -> None:
        """Only the owner, the bank and the operator may read an account."""
        if sender != account and sender not in (self.operator, self.bank.public_key):
            raise Rejected("forbidden", "only the account's own key may read it")

    def balance(self, sender: str, account: str) -> AccountRow:
        """The committed state of ``account`` as seen by ``sender``."""
        self.may_read(sender, account)
        row = self.accounts.get(account)
        if row is None or row.closed:
            raise Rejected("unknown_account", "no open account for this key")
        return row

    def history(self, sender: str, account: str, offset: int = 0,
                limit: int = 100) -> list[dict[str, Any]]:
        """Committed events touching ``account``, oldest first, as wire entries."""
        self.may_read(sender, account)
        if not isinstance(offset, int) or offset < 0:
            raise Rejected("malformed", "offset must be a non-negative integer")
        if not isinstance(limit, int) or not 1 <= limit <= MAX_HISTORY_PAGE:
            raise Rejected("malformed", f"limit must be 1..{MAX_HISTORY_PAGE}")
        if account not in self.accounts:
            raise Rejected("unknown_account", "no account for this key")
        return [history_entry(e, account) for e in self.store.history(account, offset, limit)]

    def total_balances(self) -> int:
        """Σ of every committed balance (equals :attr:`minted`)."""
        return sum(row.balance for row in self.accounts.values())


def history_entry(event: EventRow, account: str) -> dict[str, Any]:
    """One event as seen from ``account``: a signed ``amount`` delta and the counterparty."""
    delta, other = 0, ""
    if event.kind == "mint":
        delta, other = event.amount, event.actor
    elif event.kind == "transfer":
        if event.payer == account:
            delta, other = -event.amount, event.payee or ""
        else:
            delta, other = event.amount, event.payer or ""
    return BankEntry(event.seq, event.kind, event.ts_ns, delta, other, event.op_id or "",
                     event.memo, event.receipt).to_body()
