"""Receipts: made deterministically, verified offline, anything else is ``bad_receipt``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tycoon.bank.receipt import Receipt, make_receipt, verify_receipt
from tycoon.bus import subjects
from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity
from tycoon.errors import Rejected

BANK, PAYER, PAYEE = Identity.generate(), Identity.generate(), Identity.generate()
FIELDS: dict[str, Any] = {
    "transfer_id": "t-1", "payer": PAYER.public_key, "payee": PAYEE.public_key,
    "amount": 1_500_000, "memo": "rent", "seq": 7, "settled_ns": 1_700_000_000_000_000_000,
}
RAW = make_receipt(BANK, **FIELDS)


def test_roundtrip_and_determinism() -> None:
    receipt = verify_receipt(RAW, BANK.public_key)
    assert receipt == Receipt(**FIELDS, raw=RAW)
    assert receipt.to_body() == FIELDS
    assert make_receipt(BANK, **FIELDS) == RAW  # same inputs, same bytes
    assert make_receipt(BANK, **{**FIELDS, "seq": 8}) != RAW


def bad(raw: object, key: str = BANK.public_key) -> str:
    with pytest.raises(Rejected) as info:
        verify_receipt(raw, key)  # type: ignore[arg-type]
    return info.value.code


def test_wrong_key_tampering_and_junk() -> None:
    assert bad(RAW, PAYER.public_key) == "bad_receipt"
    assert bad(RAW[:-1] + bytes([RAW[-1] ^ 1])) == "bad_receipt"
    assert bad(RAW.replace(b"rent", b"rend")) == "bad_receipt"
    assert bad(b"") == "bad_receipt"
    assert bad("text") == "bad_receipt"
    assert bad(RAW + b"\x00" * 5000) == "bad_receipt"


@pytest.mark.parametrize(
    ("kind", "subject", "changes"),
    [
        ("bank.settled", subjects.BANK_RECEIPT, {}),  # another kind, signed by the bank
        ("bank.receipt", subjects.BANK_SETTLED, {}),  # signed for another subject
        ("bank.receipt", subjects.BANK_RECEIPT, {"amount": 0}),
        ("bank.receipt", subjects.BANK_RECEIPT, {"amount": -5}),
        ("bank.receipt", subjects.BANK_RECEIPT, {"amount": 1.5}),
        ("bank.receipt", subjects.BANK_RECEIPT, {"amount": True}),
        ("bank.receipt", subjects.BANK_RECEIPT, {"payee": PAYER.public_key}),
        ("bank.receipt", subjects.BANK_RECEIPT, {"payee": "nobody"}),
        ("bank.receipt", subjects.BANK_RECEIPT, {"transfer_id": ""}),
        ("bank.receipt", subjects.BANK_RECEIPT, {"seq": 0}),
        ("bank.receipt", subjects.BANK_RECEIPT, {"memo": None}),
    ],
)
def test_forged_shapes_signed_by_the_bank_are_refused(
    kind: str, subject: str, changes: dict[str, Any]
) -> None:
    raw = seal(BANK, kind, {**FIELDS, **changes}, subject=subject)
    assert bad(raw) == "bad_receipt"


def test_missing_field() -> None:
    body = {k: v for k, v in FIELDS.items() if k != "settled_ns"}
    assert bad(seal(BANK, "bank.receipt", body, subject=subjects.BANK_RECEIPT)) == "bad_receipt"


@settings(max_examples=200)
@given(st.integers(0, len(RAW) - 1), st.integers(1, 255))
def test_any_flipped_byte_is_refused(index: int, flip: int) -> None:
    raw = bytearray(RAW)
    raw[index] ^= flip
    assert bad(bytes(raw)) == "bad_receipt"


def test_a_strangers_receipt_under_the_banks_key_is_refused() -> None:
    """A receipt made by another key, its header rewritten to name the bank: the pinned
    signer matches, the signature does not."""
    stranger = Identity.generate()
    forged = bytearray(make_receipt(stranger, **FIELDS))
    forged[3:35] = bytes(RAW[3:35])
    assert bad(bytes(forged)) == "bad_receipt"
    assert bad(make_receipt(stranger, **FIELDS)) == "bad_receipt"  # honest header: not the bank


def test_a_receipt_is_durable() -> None:
    """No freshness or replay window: a receipt settled years ago verifies, again and again."""
    old = make_receipt(BANK, **{**FIELDS, "settled_ns": 1_000_000_000_000_000_000})
    assert verify_receipt(old, BANK.public_key).settled_ns == 1_000_000_000_000_000_000
    assert verify_receipt(old, BANK.public_key) == verify_receipt(old, BANK.public_key)


def test_a_malformed_bank_key_refuses_rather_than_crashes() -> None:
    assert bad(RAW, "not-a-key") == "bad_receipt"


def test_a_strangers_receipt_costs_no_signature_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The signer is compared before the signature (a flood of strangers' receipts at a
    host costs a byte comparison each), and a receipt naming the bank is checked."""
    from tycoon.bus import envelope

    checks: list[bytes] = []
    real = envelope.crypto_sign_open

    def counted(signed: bytes, key: bytes) -> bytes:
        checks.append(key)
        return real(signed, key)

    monkeypatch.setattr(envelope, "crypto_sign_open", counted)
    assert bad(make_receipt(Identity.generate(), **FIELDS)) == "bad_receipt"
    assert checks == []
    verify_receipt(RAW, BANK.public_key)
    assert checks == [RAW[3:35]]
