"""A bank never serves writes on a ledger behind its own settlement log (a restored backup).

A backup taken at ledger seq *B* restored in place of a ledger at seq *S* > *B*: serving at
once would hand out seqs B+1, B+2, ... again, each already on a receipt in SETTLEMENTS
(and maybe redeemed by a host). ``bank serve`` therefore looks at the stream's tail first;
when it holds a receipt of this bank past the ledger's seq, the bank re-enters the receipts
(as ``tycoon bank restore-from-log``) before serving. If an event with no receipt (an open,
a mint, a close) is missing first, it serves in maintenance (tycoon.bank.maintenance):
reads answer, writes are refused with ``maintenance`` except the operator's opens and mints,
which enter the missing events again; the bank then re-enters the rest and lifts
maintenance by itself. See docs/operations.md, "Backups of the bank".
"""

from __future__ import annotations

from typing import Any

from tycoon.bank.ledger import Ledger
from tycoon.bank.maintenance import reason
from tycoon.bank.receipt import verify_receipt
from tycoon.errors import Rejected
from tycoon.streams.config import JS_ERRORS, SETTLEMENTS
from tycoon.streams.reader import read_stream

TAIL = 256
"""Stream messages read back from the end (a republish may append older receipts)."""


async def log_seq(js: Any, bank_key: str, tail: int = TAIL) -> int | None:
    """The highest ledger seq of a receipt of ``bank_key`` in SETTLEMENTS' last ``tail``
    messages; None if the stream is empty, missing or does not answer."""
    try:
        info = await js.stream_info(SETTLEMENTS)
        last = info.state.last_seq
        if not info.state.messages:
            return None
        best = 0
        async for msg in read_stream(js, SETTLEMENTS, start_seq=max(1, last - tail + 1),
                                     stop_seq=last):
            try:
                best = max(best, verify_receipt(msg.data, bank_key).seq)
            except Rejected:
                continue
        return best or None
    except JS_ERRORS:
        return None


async def reenter_from_log(ledger: Ledger, js: Any) -> tuple[int, str | None]:
    """Re-enter every receipt SETTLEMENTS holds past ``ledger``'s seq, in order; return
    how many, and why it stopped short (None: the ledger caught up with its log). The
    receipts left wait in ``ledger.pending`` (no new event takes their seqs; the bank
    re-enters them itself once the operator entered the lost events: tycoon.bank.maintenance)."""
    from tycoon.cli.verifylog import _receipts_after

    receipts, _ = await _receipts_after(js, ledger.bank.public_key, ledger.seq)
    for entered, receipt in enumerate(receipts):
        try:
            ledger.apply(lambda b, r=receipt: b.reenter(r.raw))
        except Rejected as error:
            ledger.pending = {r.seq: r.raw for r in receipts[entered:]}
            return entered, f"seq {receipt.seq} ({receipt.transfer_id}): {error.message}"
    return len(receipts), None


def behind_message(ledger_seq: int, stream_seq: int, db: str, why: str) -> str:
    """Why a restored bank is in maintenance, and what the operator does about it."""
    return reason(db, ledger_seq, stream_seq, why)
