"""Bank receipts: signed, self-contained money-transfer tokens checked offline.

A receipt is one envelope (see :mod:`tycoon.bus.envelope`) of kind ``bank.receipt``
sealed for subject ``tycoon.bank.receipt`` by the bank's key, with the body::

    {"transfer_id": str, "payer": str, "payee": str, "amount": int,
     "memo": str, "seq": int, "settled_ns": int}

Whoever holds the bank's public key can verify it with :func:`verify_receipt`; no
freshness check applies (a receipt is a durable token). :func:`make_receipt` is
deterministic: the envelope timestamp is ``settled_ns`` and the nonce is derived
from the bank key, transfer id and sequence, and Ed25519 signatures are
deterministic, so the same inputs always give the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from tycoon.bus.envelope import NONCE_SIZE, open_envelope, seal
from tycoon.bus.keys import Identity, is_public_key
from tycoon.bus.subjects import BANK_RECEIPT
from tycoon.errors import Rejected
from tycoon.money import MAX_AMOUNT

RECEIPT_KIND = "bank.receipt"
MAX_TRANSFER_ID = 128
MAX_MEMO = 256
MAX_RECEIPT_SIZE = 4096

_is_key = functools.lru_cache(maxsize=1 << 14)(is_public_key)


@dataclass(frozen=True)
class Receipt:
    """A verified bank receipt; ``raw`` is the exact signed bytes (present them to fund)."""

    transfer_id: str
    payer: str
    payee: str
    amount: int
    memo: str
    seq: int
    settled_ns: int
    raw: bytes

    @property
    def key(self) -> str:
        """``<payer>:<transfer id>``: what identifies a transfer at the bank (an id is unique
        per payer only), e.g. to redeem a receipt once."""
        return f"{self.payer}:{self.transfer_id}"

    def to_body(self) -> dict[str, Any]:
        """The receipt's body fields (without ``raw``)."""
        return {
            "transfer_id": self.transfer_id,
            "payer": self.payer,
            "payee": self.payee,
            "amount": self.amount,
            "memo": self.memo,
            "seq": self.seq,
            "settled_ns": self.settled_ns,
        }


def split_key(key: str) -> tuple[str | None, str]:
    """(payer, transfer id) of a :attr:`Receipt.key`; (None, key) for a bare transfer id (as
    stored before transfer ids were scoped to their payer)."""
    if key[56:57] == ":" and _is_key(key[:56]):
        return key[:56], key[57:]
    return None, key


def _nonce(bank_key: str, transfer_id: str, seq: int) -> bytes:
    material = f"{bank_key}\x00{transfer_id}\x00{seq}".encode()
    return hashlib.sha256(b"tycoon.bank.receipt.nonce\x00" + material).digest()[:NONCE_SIZE]


def make_receipt(
    bank_identity: Identity,
    *,
    transfer_id: str,
    payer: str,
    payee: str,
    amount: int,
    memo: str,
    seq: int,
    settled_ns: int,
) -> bytes:
    """Seal a receipt for one settled transfer with the bank's key (pure, deterministic)."""
    body = {
        "transfer_id": transfer_id,
        "payer": payer,
        "payee": payee,
        "amount": amount,
        "memo": memo,
        "seq": seq,
        "settled_ns": settled_ns,
    }
    return seal(
        bank_identity,
        RECEIPT_KIND,
        body,
        subject=BANK_RECEIPT,
        ts_ns=settled_ns,
        nonce=_nonce(bank_identity.public_key, transfer_id, seq),
    )


_FIELDS = (("transfer_id", str), ("payer", str), ("payee", str), ("amount", int),
           ("memo", str), ("seq", int), ("settled_ns", int))


def _fields(body: dict[str, Any]) -> list[Any]:
    """The body's fields in ``_FIELDS`` order, each of exactly its type (no bool for int:
    the decoder yields only exact builtin types)."""
    values = [body.get(name) for name, _ in _FIELDS]
    for value, (name, kind) in zip(values, _FIELDS, strict=True):
        if type(value) is not kind:
            raise Rejected("bad_receipt",
                           f"receipt field {name!r} is missing or not {kind.__name__}")
    return values


def verify_receipt(raw: bytes, bank_key: str) -> Receipt:
    """Verify a receipt offline against the bank's public key, or raise ``bad_receipt``."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise Rejected("bad_receipt", "a receipt is bytes")
    raw = bytes(raw)
    if len(raw) > MAX_RECEIPT_SIZE:
        raise Rejected("bad_receipt", f"receipt larger than {MAX_RECEIPT_SIZE} bytes")
    try:
        msg = open_envelope(raw)
    except Rejected as error:
        raise Rejected("bad_receipt", f"not a valid envelope ({error.code})") from error
    if msg.sender != bank_key:
        raise Rejected("bad_receipt", "not signed by this bank")
    if msg.kind != RECEIPT_KIND or msg.subject != BANK_RECEIPT:
        raise Rejected("bad_receipt", f"a {msg.kind!r} envelope is not a receipt")
    transfer_id, payer, payee, amount, memo, seq, settled_ns = _fields(msg.body)
    if not transfer_id or len(transfer_id) > MAX_TRANSFER_ID:
        raise Rejected("bad_receipt", "bad transfer id")
    if not (_is_key(payer) and _is_key(payee)) or payer == payee:
        raise Rejected("bad_receipt", "payer and payee must be two account keys")
    if not 1 <= amount <= MAX_AMOUNT:
        raise Rejected("bad_receipt", "amount out of range")
    if len(memo) > MAX_MEMO or seq < 1 or settled_ns < 0:
        raise Rejected("bad_receipt", "memo, seq or settled time out of range")
    return Receipt(transfer_id, payer, payee, amount, memo, seq, settled_ns, raw)
