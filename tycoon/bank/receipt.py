"""Bank receipts: signed, self-contained money-transfer tokens checked offline.

A receipt is one envelope (see :mod:`tycoon.bus.envelope`) of kind ``bank.receipt``
sealed for subject ``tycoon.bank.receipt`` by the bank's key, with the body::

    {"transfer_id": str, "payer": str, "payee": str, "amount": int,
     "memo": str, "seq": int, "settled_ns": int}

Whoever holds the bank's public key can verify it with :func:`verify_receipt`, through
the bus's one verification path (:func:`tycoon.bus.verify.verify_token`); no freshness
check applies (a receipt is a durable token). The body is the message model's
:class:`~tycoon.messages.bank.BankReceipt`. :func:`make_receipt` is
deterministic: the envelope timestamp is ``settled_ns`` and the nonce is derived
from the bank key, transfer id and sequence, and Ed25519 signatures are
deterministic, so the same inputs always give the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from tycoon.bus.envelope import NONCE_SIZE, Limits, seal
from tycoon.bus.keys import Identity, is_public_key
from tycoon.bus.subjects import BANK_RECEIPT
from tycoon.bus.verify import verify_token
from tycoon.errors import Rejected
from tycoon.messages.bank import BankReceipt
from tycoon.money import MAX_AMOUNT

RECEIPT_KIND = "bank.receipt"
MAX_TRANSFER_ID = 128
MAX_MEMO = 256
MAX_RECEIPT_SIZE = 4096
_LIMITS = Limits(max_size=MAX_RECEIPT_SIZE)
_BODY_FIELDS = tuple(spec.attr for spec in BankReceipt.specs())

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
        return {name: getattr(self, name) for name in _BODY_FIELDS}


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
    body = BankReceipt(transfer_id, payer, payee, amount, memo, seq, settled_ns).to_body()
    return seal(
        bank_identity,
        RECEIPT_KIND,
        body,
        subject=BANK_RECEIPT,
        ts_ns=settled_ns,
        nonce=_nonce(bank_identity.public_key, transfer_id, seq),
    )


_WHY = {"forbidden": "not signed by this bank", "wrong_subject": "not a receipt",
        "unknown_kind": "not a receipt"}


def verify_receipt(raw: bytes, bank_key: str) -> Receipt:
    """Verify a receipt offline against the bank's public key, or raise ``bad_receipt``."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise Rejected("bad_receipt", "a receipt is bytes")
    raw = bytes(raw)
    try:
        msg = verify_token(raw, bank_key, BANK_RECEIPT, RECEIPT_KIND, limits=_LIMITS)
        body = BankReceipt.from_body(msg.body)
    except Rejected as error:
        why = _WHY.get(error.code) or f"not a valid receipt ({error.code}: {error.message})"
        raise Rejected("bad_receipt", why) from error
    if not body.transfer_id:
        raise Rejected("bad_receipt", "bad transfer id")
    if not (_is_key(body.payer) and _is_key(body.payee)) or body.payer == body.payee:
        raise Rejected("bad_receipt", "payer and payee must be two account keys")
    if not 1 <= body.amount <= MAX_AMOUNT:
        raise Rejected("bad_receipt", "amount out of range")
    if body.seq < 1 or body.settled_ns < 0:
        raise Rejected("bad_receipt", "seq or settled time out of range")
    return Receipt(*(getattr(body, name) for name in _BODY_FIELDS), raw)
