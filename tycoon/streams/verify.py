"""``tycoon bank verify-log``: the SETTLEMENTS stream against the ledger.

Every stored receipt must verify with the bank key, carry :func:`msg_id` of its bytes as
``Nats-Msg-Id``, sit on ``tycoon.settlement.<payer>.<payee>``, appear once, and be
byte-for-byte the receipt the ledger holds for that transfer; every ledger transfer
must be in the stream. Receipts are matched by their ledger sequence (a transfer id is
unique per payer only). Transfers settled in the last ``grace_s`` seconds may still be
on their way (the bank publishes after the commit) and are counted as in flight, not
missing.

A stream can lose its oldest messages to its limits (``max_bytes``, ``max_age``,
``max_msgs``); then the comparison starts at the oldest receipt it still holds. Anything
else that removes receipts is *tampering*: a first sequence that jumped while the limits
would have kept the missing receipts (a purge), messages deleted from inside the stream,
or a configuration that differs from what Tycoon configures in a way that can drop or
hide receipts (:func:`config_drift`). :func:`compare` and :func:`judge_truncation` are the
pure core.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tycoon.bank.receipt import verify_receipt
from tycoon.bank.store import EventRow, Store
from tycoon.errors import Rejected
from tycoon.streams.config import (
    JS_ERRORS,
    MSG_ID,
    SETTLEMENTS,
    SETTLEMENTS_SPEC,
    StreamSpec,
    js_unavailable,
    settlement_subject,
)
from tycoon.streams.reader import StoredMsg, read_stream
from tycoon.streams.settlements import is_msg_id_of, msg_id

MAX_LISTED = 100
MSG_OVERHEAD = 200
"""Bytes JetStream counts per stored receipt beyond the receipt itself (subject, the
Msg-Id header, its own record), rounded up: used to ask whether ``max_bytes`` was hit."""


@dataclass
class LogReport:
    """What the comparison found; ``ok`` when nothing is missing, extra, doubled, bad or
    tampered with."""

    stream_messages: int = 0
    ledger_transfers: int = 0
    matched: int = 0
    in_flight: int = 0
    truncated_before_seq: int | None = None
    oldest_receipt_seq: int | None = None
    """The ledger sequence of the oldest receipt the stream holds."""
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    tampering: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {
        "missing": 0, "extra": 0, "duplicates": 0, "invalid": 0, "tampering": 0})
    missing_seqs: list[int] = field(default_factory=list, repr=False)
    """The ledger sequence of every missing transfer (``missing`` lists the first ids)."""
    missing_events: list[EventRow] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    @property
    def tampered(self) -> bool:
        return self.counts["tampering"] > 0

    def note(self, what: str, text: str) -> None:
        self.counts[what] += 1
        listed: list[str] = getattr(self, what)
        if len(listed) < MAX_LISTED:
            listed.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "tampered": self.tampered,
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
            "tampering": self.tampering,
            "notes": self.notes,
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
    seen: dict[int, tuple[str, bytes]] = {}  # ledger seq -> (transfer id, receipt bytes)
    for rec in records:
        report.stream_messages += 1
        where = f"stream seq {rec.seq}"
        try:
            receipt = verify_receipt(rec.data, bank_key)
        except Rejected as error:
            report.note("invalid", f"{where}: receipt does not verify ({error.message})")
            continue
        tid = receipt.transfer_id
        if not is_msg_id_of(rec.headers.get(MSG_ID), rec.data):
            report.note("invalid", f"{where}: Nats-Msg-Id {rec.headers.get(MSG_ID)!r} is not "
                                   "the SHA-256 of the receipt")
        if rec.subject != settlement_subject(receipt.payer, receipt.payee):
            report.note("invalid", f"{where}: subject {rec.subject} does not match the receipt")
        if receipt.seq in seen:
            report.note("duplicates", tid)
            continue
        seen[receipt.seq] = (tid, rec.data)
    report.oldest_receipt_seq = min(seen, default=None)
    floor = min(seen, default=0) if truncated else 0
    if truncated:
        report.truncated_before_seq = floor
    for event in ledger:
        if event.kind != "transfer" or event.seq < floor:
            continue
        report.ledger_transfers += 1
        tid = event.op_id or ""
        found = seen.pop(event.seq, None)
        if found is None:
            if in_flight_after_ns is not None and event.ts_ns >= in_flight_after_ns:
                report.in_flight += 1
            else:
                report.note("missing", tid)
                report.missing_seqs.append(event.seq)
                report.missing_events.append(event)
        elif found[1] != event.receipt:
            report.note("invalid", f"transfer {tid!r} (seq {event.seq}): the stored receipt "
                                   "differs from the ledger's")
        else:
            report.matched += 1
    for tid, _ in seen.values():
        report.note("extra", tid)
    return report


def _limited(value: float) -> bool:
    return value is not None and value > 0


def _tighter(ours: float, theirs: float) -> bool:
    """Whether limit ``theirs`` keeps less than ``ours`` (<= 0 or None: no limit)."""
    if not _limited(theirs):
        return False
    return not _limited(ours) or theirs < ours


def config_drift(config: Any, spec: StreamSpec = SETTLEMENTS_SPEC) -> tuple[list[str], list[str]]:
    """(tampering, notes): how a stream's config differs from ``spec`` (pure).

    Tampering: other subjects, retention other than limits, memory storage, roll-ups,
    sealing, mirroring, message or per-subject limits or an age limit the spec does not
    set, purge/delete protection the spec asks for turned off. A ``max_bytes`` below the
    spec's is an operator's choice (``tycoon streams ensure --settlements-max-bytes``): a
    note, and :func:`judge_truncation` still asks whether it explains a jump.
    """
    want = spec.to_config()
    bad: list[str] = []
    notes: list[str] = []

    def value(obj: Any, name: str) -> Any:
        got = getattr(obj, name, None)
        return getattr(got, "value", got)

    if sorted(config.subjects or []) != sorted(want.subjects or []):
        bad.append(f"subjects are {config.subjects}, not {want.subjects}")
    defaults = {"retention": "limits", "storage": "file", "discard": "old"}  # JetStream's
    for name in ("retention", "storage", "discard"):
        theirs, ours = value(config, name), value(want, name) or defaults[name]
        if theirs is not None and theirs != ours:
            bad.append(f"{name} is {theirs}, not {ours}")
    for name in ("allow_rollup_hdrs", "sealed"):
        if value(config, name) and not value(want, name):
            bad.append(f"{name} is on")
    for name in ("deny_delete", "deny_purge"):
        if value(want, name) and not value(config, name):
            bad.append(f"{name} is off")
    for name in ("mirror", "sources"):
        if value(config, name):
            bad.append(f"the stream has a {name}")
    for name in ("max_msgs", "max_msgs_per_subject", "max_age"):
        if _tighter(value(want, name), value(config, name)):
            bad.append(f"{name} is {value(config, name)} (Tycoon sets {value(want, name)})")
    if _tighter(want.max_bytes, config.max_bytes):
        notes.append(f"max_bytes is {config.max_bytes}, below the default {want.max_bytes}")
    return bad, notes


def judge_truncation(config: Any, state: Any, lost: list[EventRow],
                     now_ns: int) -> str | None:
    """Why the stream's limits may have discarded the ``lost`` receipts (the ledger's
    transfers older than the stream's first one), or None when they would have kept them:
    then the jump of the first sequence is a purge (pure)."""
    if not lost:
        return "nothing the ledger holds is missing"
    count = len(lost)
    size = sum(len(e.receipt or b"") + MSG_OVERHEAD for e in lost)
    if _limited(config.max_msgs) and state.messages + count > config.max_msgs:
        return f"max_msgs {config.max_msgs}"
    if _limited(config.max_bytes) and state.bytes + size > config.max_bytes:
        return f"max_bytes {config.max_bytes}"
    if _limited(config.max_age) and min(e.ts_ns for e in lost) < now_ns - config.max_age * 1e9:
        return f"max_age {config.max_age} s"
    if _limited(config.max_msgs_per_subject):
        return f"max_msgs_per_subject {config.max_msgs_per_subject}"
    return None


async def republish(js: Any, events: Iterable[EventRow]) -> int:
    """Publish the ledger's receipts of ``events`` to SETTLEMENTS (only the bank's key
    may), with a republish stamp in the Msg-Id (see :func:`msg_id`: they are missing, so
    the duplicate window must not drop them); returns how many were stored."""
    stored = 0
    stamp = time.time_ns()
    for event in events:
        if event.receipt is None or not event.payer or not event.payee:
            continue
        try:
            ack = await js.publish(settlement_subject(event.payer, event.payee), event.receipt,
                                   stream=SETTLEMENTS,
                                   headers={MSG_ID: msg_id(event.receipt, stamp)})
        except JS_ERRORS as exc:
            raise js_unavailable(exc) from exc
        stored += 0 if ack.duplicate else 1
    return stored


async def verify_log(js: Any, store: Store, bank_key: str, *, grace_s: float = 5.0,
                     stream: str = SETTLEMENTS, spec: StreamSpec = SETTLEMENTS_SPEC,
                     now_ns: int | None = None) -> LogReport:
    """Read the whole stream and compare it with ``store``'s ledger; tell a purge, an
    interior delete or a changed config from a limit."""
    try:
        info = await js.stream_info(stream)
    except JS_ERRORS as exc:
        raise js_unavailable(exc) from exc
    now = time.time_ns() if now_ns is None else now_ns
    state = info.state
    records = [m async for m in read_stream(js, stream, stop_seq=state.last_seq)] \
        if state.messages else []
    in_flight = now - int(grace_s * 1e9)
    report = compare(records, store.events(), bank_key, in_flight_after_ns=in_flight)
    drift, notes = config_drift(info.config, spec)
    report.notes += notes
    for text in drift:
        report.note("tampering", f"stream config changed: {text}")
    jumped = state.first_seq > 1 and state.last_seq > 0
    deleted = state.num_deleted or 0
    if jumped and report.missing_seqs:
        floor = report.oldest_receipt_seq
        lost = [e for e in report.missing_events if floor is None or e.seq < floor]
        why = judge_truncation(info.config, state, lost, now)
        if why is None:
            report.note("tampering", f"the stream's first sequence jumped to {state.first_seq} "
                                     f"while its limits would have kept the {len(lost)} "
                                     "missing receipts before it: a purge")
        else:
            report = compare(records, store.events(), bank_key, truncated=True,
                             in_flight_after_ns=in_flight)
            report.notes += notes
            for text in drift:
                report.note("tampering", f"stream config changed: {text}")
            report.notes.append(f"older receipts were discarded by the stream's limits ({why})")
    if deleted and report.missing_seqs and not _limited(info.config.max_msgs_per_subject):
        report.note("tampering", f"{deleted} messages were deleted from inside the stream "
                                 "(limits only discard the oldest)")
    if (jumped or deleted) and not report.missing_seqs and not report.tampered:
        report.notes.append(f"the stream lost messages (first seq {state.first_seq}, "
                            f"{deleted} deleted inside) but holds every receipt of the ledger")
    return report
