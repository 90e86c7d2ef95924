"""The signed envelope: the one shape of every message on every ``tycoon.*`` subject.

Layout (all integers big-endian; see docs/protocol.md for the full specification)::

    0      2   magic  b"TY"
    2      1   version (1)
    3      32  sender's raw Ed25519 public key
    35     N   payload: msgpack array [kind, subject, answers, ts_ns, nonce, body]
    35+N   64  Ed25519 signature over bytes [0, 35+N)

The signature is checked over the exact received bytes before the payload is
decoded; nothing is ever re-encoded to verify.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgpack
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

from tycoon.bus.batch import verify_batch
from tycoon.bus.keys import Identity, public_key_from_raw_cached
from tycoon.bus.kinds import KINDS
from tycoon.errors import Rejected

MAGIC = b"TY"
VERSION = 1
HEADER_SIZE = 35
SIGNATURE_SIZE = 64
NONCE_SIZE = 16
DIGEST_SIZE = 32
MAX_SUBJECT = 256
_PREFIX = MAGIC + bytes([VERSION])
_local = threading.local()  # one reusable msgpack Packer per thread (a Packer is not shared)


class _NonceSource:
    """16-byte nonces: a random 8-byte prefix per process and a 64-bit counter.

    Unique per sender without a system call per message; a forked child draws a new prefix.
    """

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8)
        self.counter = itertools.count()

    def next(self) -> bytes:
        return self.prefix + next(self.counter).to_bytes(8, "big")


_nonces = _NonceSource()


@dataclass(frozen=True)
class Limits:
    """Bounds on what the decoder accepts."""

    max_size: int = 1024 * 1024
    max_depth: int = 16
    max_str: int = 64 * 1024
    max_bin: int = 1024 * 1024
    max_array: int = 100_000
    max_map: int = 100_000


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Message:
    """A verified, decoded envelope."""

    kind: str
    subject: str
    answers: bytes
    sender: str
    ts_ns: int
    nonce: bytes
    body: Any
    raw: bytes

    @property
    def digest(self) -> bytes:
        """sha256 of the exact bytes received: what a reply binds to."""
        return hashlib.sha256(self.raw).digest()


def seal(
    identity: Identity,
    kind: str,
    body: Any,
    *,
    subject: str = "",
    answers: bytes = b"",
    ts_ns: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Encode and sign one envelope; the returned bytes are sent as they are."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if answers and len(answers) != DIGEST_SIZE:
        raise ValueError("answers must be a 32-byte digest")
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    payload = packer.pack([  # a Packer that fails empties its buffer itself
        kind,
        subject,
        answers,
        time.time_ns() if ts_ns is None else ts_ns,
        _nonces.next() if nonce is None else nonce,
        body,
    ])
    signed = b"".join((_PREFIX, identity.raw_public_key, payload))
    return signed + identity.sign(signed)


_BYTES_LIKE = (bytes, bytearray, memoryview)
_is_str = str.__instancecheck__


def _raise_ext(code: int, data: bytes) -> Any:
    raise Rejected("malformed", f"msgpack extension type {code} is not allowed")


def _check_depth(obj: Any, max_depth: int) -> None:
    """Refuse nesting deeper than ``max_depth`` (containers only).

    Leaves need no check: the decoder yields only nil, bool, int, float, str, bin, array
    and map, because every extension type (timestamps included) is refused by
    ``max_ext_len=0``. Recursion is bounded by ``max_depth`` itself.
    """
    if max_depth < 1:
        raise Rejected("too_deep", "nesting deeper than the limit")
    for child in obj.values() if type(obj) is dict else obj:
        kind = type(child)
        if kind is dict or kind is list:
            _check_depth(child, max_depth - 1)


def _checked_layout(raw: Any, limits: Limits) -> bytes:
    """The envelope's bytes if its size and header are right (before any crypto)."""
    if raw.__class__ is not bytes:  # the usual case: bytes from the wire, used as they are
        if not isinstance(raw, _BYTES_LIKE):
            raise Rejected("malformed", "an envelope is bytes")
        raw = bytes(raw)
    if len(raw) > limits.max_size:
        raise Rejected("too_large", f"{len(raw)} bytes > limit {limits.max_size}")
    if len(raw) < HEADER_SIZE + 1 + SIGNATURE_SIZE:
        raise Rejected("malformed", "shorter than the smallest envelope")
    if raw[:2] != MAGIC:
        raise Rejected("malformed", "bad magic")
    if raw[2] != VERSION:
        raise Rejected("bad_version", f"version {raw[2]} (this side speaks {VERSION})")
    return raw


def open_envelope(raw: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Verify and decode one envelope, or raise :class:`Rejected` with the reason."""
    return _verify_and_decode(_checked_layout(raw, limits), limits)


def _verify_and_decode(raw: bytes, limits: Limits) -> Message:
    """Check the signature of an envelope whose layout was checked, then decode it."""
    try:  # libsodium takes signature ‖ message; the lengths are fixed by the slicing
        crypto_sign_open(raw[-SIGNATURE_SIZE:] + raw[:-SIGNATURE_SIZE], raw[3:HEADER_SIZE])
    except BadSignatureError:
        raise Rejected("bad_signature", "signature does not verify for the sender's key") from None
    return _decode_verified(raw, limits)


class RecentlyVerified:
    """Envelopes whose signature checked out lately, by their exact bytes (FIFO-bounded).

    A process where many principals share a connection (a broker running many agents, a
    dense simulation) receives each published envelope once per subscriber; with this,
    it is checked and decoded once and every receiver gets the same (frozen) message —
    received bodies are read, never changed. The same bytes always give the same
    verdict, so only that work is shared: subject binding, freshness and replays stay
    per receiver.
    """

    def __init__(self, capacity: int = 4096, largest: int = 16 * 1024) -> None:
        # Envelopes above ``largest`` bytes are not kept: fan-out messages (prices,
        # allocations) are small, and 4,096 bundle chunks of 128 KiB (raw and decoded)
        # held the store's memory at 485 MiB (benchmarks/bundles.py).
        self.capacity, self.largest = capacity, largest
        self._seen: dict[bytes, tuple[Limits, Message]] = {}

    def open(self, raw: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Message:
        """:func:`open_envelope`, once per distinct envelope and decoding limits."""
        raw = _checked_layout(raw, limits)
        seen = self._seen.get(raw)
        if seen is not None:
            if seen[0] is limits:
                return seen[1]
            return _decode_verified(raw, limits)  # the signature is known good
        msg = _verify_and_decode(raw, limits)
        if len(raw) > self.largest:
            return msg
        self._seen[raw] = (limits, msg)
        if len(self._seen) > self.capacity:
            del self._seen[next(iter(self._seen))]
        return msg


def open_envelopes(raws: list[bytes], *, limits: Limits = DEFAULT_LIMITS,
                   verdicts: bytes | None = None) -> list[Message | Rejected]:
    """:func:`open_envelope` of each, returning refusals instead of raising.

    The signatures of a batch are checked in one C call that releases the GIL once
    (:mod:`tycoon.bus.batch`); every outcome, refusal code included, is the one
    :func:`open_envelope` gives. ``verdicts`` is ``verify_batch(raws)`` of these very
    ``raws`` when it was computed elsewhere (another thread), else it is computed here.
    """
    if verdicts is None:
        # the C checker reads exact bytes; other bytes-likes are opened as bytes too
        raws = [raw if raw.__class__ is bytes or not isinstance(raw, _BYTES_LIKE)
                else bytes(raw) for raw in raws]
        verdicts = verify_batch(raws) if len(raws) > 1 else None
        if verdicts is None:  # one envelope, or no C checker: PyNaCl, one at a time
            return [_open_or_refusal(raw, limits) for raw in raws]
    elif len(verdicts) != len(raws):
        raise ValueError("one verdict per envelope")
    return [_open_with_verdict(raw, ok, limits)
            for raw, ok in zip(raws, verdicts, strict=True)]


def _open_or_refusal(raw: bytes, limits: Limits) -> Message | Rejected:
    try:
        return open_envelope(raw, limits=limits)
    except Rejected as error:
        return error


def _open_with_verdict(raw: bytes, ok: int, limits: Limits) -> Message | Rejected:
    try:
        raw = _checked_layout(raw, limits)
        if not ok:
            raise Rejected("bad_signature", "signature does not verify for the sender's key")
        return _decode_verified(raw, limits)
    except Rejected as error:
        return error


def _decode_verified(raw: bytes, limits: Limits) -> Message:
    """Decode an envelope whose signature has been checked (never call it otherwise)."""
    try:
        payload = msgpack.unpackb(
            memoryview(raw)[HEADER_SIZE:-SIGNATURE_SIZE],
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_raise_ext,
            max_str_len=limits.max_str,
            max_bin_len=limits.max_bin,
            max_array_len=limits.max_array,
            max_map_len=limits.max_map,
            max_ext_len=0,
        )
    except msgpack.StackError as exc:
        raise Rejected("too_deep", "msgpack nesting too deep") from exc
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise Rejected("malformed", f"payload is not valid msgpack: {exc}") from exc
    return _message_from(payload, raw[3:HEADER_SIZE], raw, limits)


def _message_from(payload: Any, sender_raw: bytes, raw: bytes, limits: Limits) -> Message:
    if not isinstance(payload, list) or len(payload) != 6:
        raise Rejected("malformed", "payload must be an array of 6 fields")
    kind, subject, answers, ts_ns, nonce, body = payload
    if not isinstance(kind, str):
        raise Rejected("malformed", "kind must be a string")
    if kind not in KINDS:
        raise Rejected("unknown_kind", f"unknown kind {kind[:64]!r}")
    if not isinstance(subject, str) or len(subject) > MAX_SUBJECT:
        raise Rejected("malformed", "subject must be a string of at most 256 characters")
    if not isinstance(answers, bytes) or len(answers) not in (0, DIGEST_SIZE):
        raise Rejected("malformed", "answers must be empty or a 32-byte digest")
    if bool(answers) == bool(subject):
        raise Rejected("malformed", "exactly one of subject and answers must be set")
    if not isinstance(ts_ns, int) or isinstance(ts_ns, bool) or not 0 <= ts_ns < 2**63:
        raise Rejected("malformed", "timestamp must be a non-negative int64 of nanoseconds")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise Rejected("malformed", f"nonce must be {NONCE_SIZE} bytes")
    if not isinstance(body, dict) or not all(map(_is_str, body)):
        raise Rejected("malformed", "body must be a map with string keys")
    _check_depth(body, limits.max_depth - 1)
    # positional: this runs for every message received (fields in declaration order)
    return Message(kind, subject, answers, public_key_from_raw_cached(sender_raw), ts_ns,
                   nonce, body, raw)


def is_finite_number(value: object) -> bool:
    """True for an int or a finite float (not bool)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)
