"""``tycoon bank verify-log``: the SETTLEMENTS stream against the ledger.

Every stored receipt must verify with the bank key, carry its transfer id as
``Nats-Msg-Id``, sit on ``tycoon.settlement.<payer>.<payee>``, appear once, and be
byte-for-byte the receipt the ledger holds for that transfer; every ledger transfer
must be in the stream. Transfers settled in the last ``grace_s`` seconds may still be
on their way (the bank publishes after the commit) and are counted as in flight, not
missing. When the stream's limits have discarded its oldest messages, the comparison
starts at the oldest receipt it still holds. :func:`compare` is the pure core.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tycoon.bank.receipt import verify_receipt
from tycoon.bank.store import EventRow, Store
from tycoon.errors import Rejected
from tycoon.streams.config import JS_ERRORS, MSG_ID, SETTLEMENTS, js_unavailable, settlement_subject
from tycoon.streams.reader import StoredMsg, read_stream

MAX_LISTED = 100


@dataclass
class LogReport:
    """What the comparison found; ``ok`` when nothing is missing, extra, doubled or bad."""

    stream_messages: int = 0
    ledger_transfers: int = 0
    matched: int = 0
    in_flight: int = 0
    truncated_before_seq: int | None = None
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {
        "missing": 0, "extra": 0, "duplicates": 0, "invalid": 0})
    missing_ids: list[str] = field(default_factory=list, repr=False)
    """Every missing transfer id (``missing`` lists the first ones only)."""

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    def note(self, what: str, text: str) -> None:
        self.counts[what] += 1
        listed: list[str] = getattr(self, what)
        if len(listed) < MAX_LISTED:
            listed.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "stream_messages": self.stream_messages,
            "ledger_transfers": self.ledger_transfers,
            "matched": self.matched,
            "in_flight": self.in_flight,
            "truncated_before_seq": self.truncated_before_seq,
            "counts": dict(self.counts),
            "missing": self.missing,
            "extra": self.extra,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
        }


def compare(
    records: Iterable[StoredMsg],
    ledger: Iterable[EventRow],
    bank_key: str,
    *,
    truncated: bool = False,
    in_flight_after_ns: int | None = None,
) -> LogReport:
    """Compare stored receipts with the ledger's events (pure).

    ``truncated``: the stream no longer holds its first messages, so ledger transfers
    older than its oldest receipt are not expected. Ledger transfers settled at or after
    ``in_flight_after_ns`` and absent from the stream count as in flight.
    """
    report = LogReport()
    seen: dict[str, tuple[int, bytes]] = {}
    for rec in records:
        report.stream_messages += 1
        where = f"stream seq {rec.seq}"
        try:
            receipt = verify_receipt(rec.data, bank_key)
        except Rejected as error:
            report.note("invalid", f"{where}: receipt does not verify ({error.message})")
            continue
        tid = receipt.transfer_id
        if rec.headers.get(MSG_ID) != tid:
            report.note("invalid", f"{where}: Nats-Msg-Id {rec.headers.get(MSG_ID)!r} is not "
                                   f"the transfer id {tid!r}")
        if rec.subject != settlement_subject(receipt.payer, receipt.payee):
            report.note("invalid", f"{where}: subject {rec.subject} does not match the receipt")
        if tid in seen:
            report.note("duplicates", tid)
            continue
        seen[tid] = (receipt.seq, rec.data)
    floor = min((s for s, _ in seen.values()), default=0) if truncated else 0
    if truncated:
        report.truncated_before_seq = floor
    for event in ledger:
        if event.kind != "transfer" or event.seq < floor:
            continue
        report.ledger_transfers += 1
        tid = event.op_id or ""
        found = seen.pop(tid, None)
        if found is None:
            if in_flight_after_ns is not None and event.ts_ns >= in_flight_after_ns:
                report.in_flight += 1
            else:
                report.note("missing", tid)
                report.missing_ids.append(tid)
        elif found[1] != event.receipt:
            report.note("invalid", f"transfer {tid!r}: the stored receipt differs from the "
                                   "ledger's")
        else:
            report.matched += 1
    for tid in seen:
        report.note("extra", tid)
    return report


async def republish(js: Any, store: Store, transfer_ids: Iterable[str]) -> int:
    """Publish the ledger's receipts of ``transfer_ids`` to SETTLEMENTS (``--repair``);
    returns how many were newly stored (a receipt already there is not stored again
    within the duplicate window)."""
    stored = 0
    for tid in transfer_ids:
        event = store.find_op("transfer", tid)
        if event is None or event.receipt is None or not event.payer or not event.payee:
            continue
        try:
            ack = await js.publish(settlement_subject(event.payer, event.payee), event.receipt,
                                   stream=SETTLEMENTS, headers={MSG_ID: tid})
        except JS_ERRORS as exc:
            raise js_unavailable(exc) from exc
        stored += 0 if ack.duplicate else 1
    return stored


async def verify_log(js: Any, store: Store, bank_key: str, *, grace_s: float = 5.0,
                     stream: str = SETTLEMENTS) -> LogReport:
    """Read the whole stream and compare it with ``store``'s ledger."""
    try:
        info = await js.stream_info(stream)
    except JS_ERRORS as exc:
        raise js_unavailable(exc) from exc
    now = time.time_ns()
    records = [m async for m in read_stream(js, stream, stop_seq=info.state.last_seq)] \
        if info.state.messages else []
    truncated = info.state.first_seq > 1 and info.state.last_seq > 0
    return compare(records, store.events(), bank_key, truncated=truncated,
                   in_flight_after_ns=now - int(grace_s * 1e9))
