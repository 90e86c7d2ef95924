"""The one verification path: raw envelope bytes in, verified messages or refusals out.

Every receiver goes through here — :class:`~tycoon.bus.connection.Bus` for live traffic
one message at a time, the SLS's ingest for batches of live price updates, the stream
readers for stored messages (durable: no freshness or replay check) — so the checks of
docs/protocol.md §3 are written once:

1. :func:`open_batch` / :func:`open_one`: size, layout, signature (checked before any
   decoding; a batch's signatures in one C call that releases the GIL, which a pool thread
   may make first with :func:`check_signatures`), bounded decode, field types, kind
   (steps 1–5);
2. :func:`check_live`: the subject binding, freshness and replay (step 6) of a live
   message, or :func:`check_stored` for a durable one (binding and kind only);
3. :func:`check_signer`: a reply or token pinned to a key known beforehand;
   :func:`verify_token` for a durable token (a bank receipt): pinned signer, steps 1–5,
   bound to its subject and kind, no freshness.

Functions take and return plain values (no NATS types), so they run in any thread.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from tycoon.bus import batch
from tycoon.bus.envelope import (
    DEFAULT_LIMITS,
    HEADER_SIZE,
    Limits,
    Message,
    open_envelope,
    open_envelopes,
)
from tycoon.bus.keys import decode_public_key
from tycoon.bus.replay import ReplayGuard
from tycoon.errors import Rejected

Raw = tuple[str, bytes]
"""(subject a message was received on or stored under, its envelope bytes)."""


def open_one(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Steps 1–5 of one envelope: the verified message, or raise :class:`Rejected`."""
    return open_envelope(data, limits=limits)


def signatures_in_c() -> bool:
    """Whether :func:`check_signatures` checks batches in C (the helper was built at
    install); else envelopes are checked one by one when opened, with the same outcome."""
    return batch.available()


def check_signatures(datas: Sequence[bytes]) -> bytes | None:
    """Step 3 of a batch, in one C call that releases the GIL (for a pool thread): one
    verdict byte per envelope for :func:`open_batch`; None without the C helper."""
    return batch.verify_batch(datas)


def open_batch(datas: Sequence[bytes], *, limits: Limits = DEFAULT_LIMITS,
               verdicts: bytes | None = None) -> list[Message | Rejected]:
    """Steps 1–5 of each envelope, in order, refusals returned (not raised).

    ``verdicts``: the batch's signature checks when already made (in a pool thread, by
    :func:`check_signatures`); else they are made here."""
    return open_envelopes(list(datas), limits=limits, verdicts=verdicts)


def check_live(signed_for: str, subject: str, sender: str, nonce: bytes, ts_ns: int,
               guard: ReplayGuard | None, now_ns: int | None = None) -> None:
    """Step 6 for a live event or request: signed for the subject it came on
    (``wrong_subject``), fresh and not seen before by this receiver (``stale`` /
    ``replayed``; skipped without a ``guard``, as for a log replayed on purpose)."""
    if signed_for != subject:
        raise Rejected("wrong_subject", f"signed for {signed_for!r}, received on {subject!r}")
    if guard is not None:
        guard.admit(sender, nonce, ts_ns, now_ns)


def verify_live(data: bytes, subject: str, guard: ReplayGuard | None, *,
                limits: Limits = DEFAULT_LIMITS, now_ns: int | None = None,
                opened: Message | None = None) -> Message:
    """Steps 1–6 of one live message received on ``subject`` (``opened``: steps 1–5
    already done, e.g. shared between receivers of the same bytes)."""
    msg = opened if opened is not None else open_envelope(data, limits=limits)
    check_live(msg.subject, subject, msg.sender, msg.nonce, msg.ts_ns, guard, now_ns)
    return msg


def check_stored(msg: Message, subject: str, kind: str | None = None) -> Message:
    """The checks of a durable message read back from a stream: signed for the subject
    it is stored under (``wrong_subject``) and, if given, of ``kind`` (``unknown_kind``).
    No freshness or replay check: a log is replayed by design."""
    if msg.subject != subject:
        raise Rejected("wrong_subject", f"signed for {msg.subject!r}, stored on {subject!r}")
    if kind is not None and msg.kind != kind:
        raise Rejected("unknown_kind", f"expected {kind!r}, got {msg.kind!r}")
    return msg


def verify_stored(data: bytes, subject: str, kind: str | None = None, *,
                  limits: Limits = DEFAULT_LIMITS) -> Message:
    """Steps 1–5 and :func:`check_stored` of one stored message."""
    return check_stored(open_envelope(data, limits=limits), subject, kind)


@functools.lru_cache(maxsize=1024)
def signer_raw(key: str) -> bytes:
    """The raw 32 bytes of a pinned public key (for :func:`check_signer`); ``ValueError``
    if ``key`` is not a user public key."""
    return decode_public_key(key)


def check_signer(data: bytes, pinned_raw: bytes, code: str = "wrong_reply") -> None:
    """Refuse (``code``) an envelope not claiming ``pinned_raw`` as its signer; checked
    before its signature, so a stranger's envelope costs no verification. The signature
    itself is checked when the envelope is opened."""
    if data[3:HEADER_SIZE] != pinned_raw:
        raise Rejected(code, "not signed by the expected key")


def verify_token(data: bytes, signer: str, subject: str, kind: str, *,
                 limits: Limits = DEFAULT_LIMITS) -> Message:
    """A durable token (a bank receipt): signed by ``signer`` (``forbidden``, before any
    signature check), steps 1–5, and :func:`check_stored` (bound to ``subject``, of
    ``kind``). No freshness or replay check: a token is presented again and again."""
    try:
        pinned = signer_raw(signer)
    except ValueError as error:
        raise Rejected("forbidden", f"the expected signer is not a key: {error}") from error
    check_signer(data, pinned, "forbidden")
    return check_stored(open_envelope(data, limits=limits), subject, kind)


def reply_subject(request: Any) -> str:
    """The reply subject of a request received by a ``nats.micro`` endpoint.

    nats-py's micro ``Request`` exposes the subject, headers and data but not the reply
    subject; this is the one place that reads it from the wrapped message."""
    return getattr(request._msg, "reply", "") or ""


def verify_reply(data: bytes, request_digest: bytes, guard: ReplayGuard | None, *,
                 limits: Limits = DEFAULT_LIMITS, now_ns: int | None = None) -> Message:
    """Steps 1–6 of a reply: it answers the request whose sha256 is ``request_digest``
    (``wrong_reply``), fresh and new (``stale`` / ``replayed``)."""
    msg = open_envelope(data, limits=limits)
    if msg.answers != request_digest:
        raise Rejected("wrong_reply", "the reply answers another request")
    if guard is not None:
        guard.admit(msg.sender, msg.nonce, msg.ts_ns, now_ns)
    return msg
