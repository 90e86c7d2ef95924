"""A restored bank in maintenance: it lifts by itself once its log is re-entered.

A ledger restored from a backup is behind SETTLEMENTS, which holds the receipts of every
transfer settled since; ``bank serve`` re-enters them before serving (tycoon.cli.bankguard).
When an event with no receipt (an open, a mint, a close) was lost before one of them,
re-entering stops there: the receipts left wait in the ledger's ``pending`` and the bank
serves in maintenance (``BankService.maintenance`` holds why):

* reads (balance, history, info) are answered;
* every transfer is refused with ``maintenance``, and every other write too, except the
  operator's open, mint and close, which enter the lost events again (a re-mint with the
  same mint id takes the same sequence number; a lost close is entered by the operator
  closing that account, which must hold nothing: the bank logs each close, account and
  seq, for this);
* no new event takes the sequence number of a pending receipt (the ledger refuses it), so
  a sequence number is never on two receipts;
* after each operator write the bank re-enters the pending receipts that now fit, in order,
  through the group committer; when none is left, maintenance lifts by itself.

See docs/operations.md, "Backups of the bank".
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from tycoon.bank.receipt import verify_receipt
from tycoon.bus.envelope import Message
from tycoon.errors import Rejected
from tycoon.log import get_logger

Handler = Callable[[Message], Awaitable[Any]]
OPERATOR_WRITES = ("bank.open", "bank.mint", "bank.close")
"""What the operator may do in maintenance: enter again the lost events with no receipt
(a lost close: the operator closes that account, ``bank close --for``; the ledger lets the
operator close another key's account only then, and only at zero balance)."""
_locks: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()


def reason(db: str, ledger_seq: int, log_seq: int, stopped: str) -> str:
    """Why a restored bank is in maintenance, and what the operator does about it."""
    return (f"maintenance: the ledger {db} is at seq {ledger_seq} but SETTLEMENTS holds this "
            f"bank's receipts up to seq {log_seq}; re-entering stopped at {stopped}. An event "
            "with no receipt (open, mint, close) came first: the operator enters it again "
            "(same mint id; a close: bank close --for ACCOUNT); the bank then re-enters "
            "the rest and serves by itself. Until "
            "then writes are refused")


async def write(service: Any, msg: Message, handler: Handler) -> Any:
    """``handler`` for a write while ``service`` (a BankService) is in maintenance: the
    operator's open or mint, one at a time, each followed by :func:`catch_up`; anything
    else is refused with ``maintenance`` and changes nothing."""
    ledger = service.ledger
    if msg.sender != ledger.operator or msg.kind not in OPERATOR_WRITES:
        raise Rejected("maintenance", service.maintenance)
    lock = _locks.setdefault(service, asyncio.Lock())
    async with lock:  # one write at a time: the seq it takes is known
        if service.maintenance is None:  # lifted while this one waited
            return await handler(msg)
        if ledger.seq + 1 in ledger.pending:
            raise Rejected("maintenance", f"{service.maintenance} (the next seq, "
                                          f"{ledger.seq + 1}, is on a receipt: nothing may "
                                          "take it; audit the ledger)")
        reply = await handler(msg)
        await catch_up(service)
        return reply


async def catch_up(service: Any) -> bool:
    """Re-enter the ledger's pending receipts that now follow it, in order; lift
    maintenance when none is left. True if lifted."""
    ledger = service.ledger
    while ledger.pending:
        seq = min(ledger.pending)
        raw = ledger.pending[seq]
        try:
            await service.committer.submit(lambda b, r=raw: b.reenter(r))
        except Rejected as error:
            top = max(ledger.pending)
            receipt = verify_receipt(raw, ledger.bank.public_key)
            service.maintenance = reason(str(getattr(ledger.store, "path", "the ledger")),
                                         ledger.seq, top, f"seq {seq} "
                                         f"({receipt.transfer_id}): {error.message}")
            return False
        del ledger.pending[seq]
    service.maintenance = None
    get_logger("bank").warning("maintenance lifted: the ledger caught up with its log; "
                               "bank ready", seq=ledger.seq)
    return True
