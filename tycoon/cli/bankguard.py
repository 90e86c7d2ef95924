"""The bank refuses to serve a ledger behind its own settlement log (a restored backup).

A backup taken at ledger seq *B* restored in place of a ledger at seq *S* > *B*: serving at
once would hand out seqs B+1, B+2, ... again, each already on a receipt in SETTLEMENTS
(and maybe redeemed by a host). ``bank serve`` therefore looks at the stream's tail first
and, while it holds a receipt of this bank past the ledger's seq, does not start: the
receipts must be re-entered (``tycoon bank restore-from-log``). See docs/operations.md.
"""

from __future__ import annotations

from typing import Any

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


def behind_message(ledger_seq: int, stream_seq: int, db: str) -> str:
    """What the operator reads when the ledger is behind its log."""
    return (f"maintenance: the ledger {db} is at seq {ledger_seq} but SETTLEMENTS holds this "
            f"bank's receipts up to seq {stream_seq} (a restored backup?). Serving now would "
            f"reuse their sequence numbers. Re-enter them first: tycoon bank restore-from-log "
            f"--db {db} (then start the bank again)")
