"""Regenerate docs/vectors/*.json (run only when the wire format deliberately changes).

    .venv/bin/python docs/vectors/generate.py

JSON conventions of the files (docs/protocol.md §8): byte strings are hex; an integer
that JSON readers may not hold exactly (|n| ≥ 2^53) is a decimal string where the field
is always an integer (``ts_ns``, ``now_ns``) and ``{"$int": "<decimal>"}`` inside a body.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgpack

from tycoon.bank.receipt import make_receipt
from tycoon.bus.envelope import HEADER_SIZE, SIGNATURE_SIZE, seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.messages.price import Offer, PriceUpdate

HERE = Path(__file__).parent
SEEDS = [
    "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU",
    "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4",
]
IDS = [Identity.from_seed(s) for s in SEEDS]
NOW = 1_700_000_000_000_000_000
JSON_SAFE = 2**53


def to_json(value: Any) -> Any:
    """A body value in the vectors' JSON (big integers tagged, bytes as {"$bin": hex})."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return value if abs(value) < JSON_SAFE else {"$int": str(value)}
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return [to_json(v) for v in value]


def _vector(name: str, ident: Identity, kind: str, body: dict[str, Any], raw: bytes, *,
            subject: str, answers: bytes, ts_ns: int, nonce: bytes) -> dict[str, Any]:
    return {
        "name": name, "seed": ident.seed, "public_key": ident.public_key,
        "public_key_raw": ident.raw_public_key.hex(), "kind": kind, "subject": subject,
        "answers": answers.hex(), "ts_ns": str(ts_ns), "nonce": nonce.hex(),
        "body": to_json(body), "payload": raw[HEADER_SIZE:-SIGNATURE_SIZE].hex(),
        "signature": raw[-SIGNATURE_SIZE:].hex(), "envelope": raw.hex(),
        "digest": hashlib.sha256(raw).hexdigest(),
    }


def _sealed(name: str, seed: int, kind: str, body: dict[str, Any], *, subject: str = "",
            answers: bytes = b"", ts_ns: int, nonce: bytes) -> dict[str, Any]:
    raw = seal(IDS[seed], kind, body, subject=subject, answers=answers, ts_ns=ts_ns,
               nonce=nonce)
    return _vector(name, IDS[seed], kind, body, raw, subject=subject, answers=answers,
                   ts_ns=ts_ns, nonce=nonce)


def envelopes() -> list[dict[str, Any]]:
    """Valid envelopes: a request, an event of a host speaking for itself, a receipt (a
    durable token with its derived nonce) and a reply to the request before it."""
    host = subject_id(IDS[0].public_key)
    price = PriceUpdate(host, 7, 5.0, "host h0", "simulated",
                        {"cpu": Offer(4000, 1.5, 0.25, 2)}).to_body()
    out = [
        _sealed("echo request", 0, "demo.echo", {"text": "hello"}, subject="tycoon.demo.echo",
                ts_ns=NOW, nonce=bytes(16)),
        _sealed("transfer request", 1, "bank.transfer",
                {"transfer_id": "t-1", "payee": IDS[0].public_key, "amount": 12_500_000,
                 "memo": ""}, subject="tycoon.bank.transfer", ts_ns=NOW + 123_456_789,
                nonce=bytes.fromhex("0102030405060708090a0b0c0d0e0f10")),
        _sealed("price of the signer's own host", 0, "price", price,
                subject=f"tycoon.price.{host}", ts_ns=NOW + 1_000_000_000,
                nonce=b"\xff" * 16),
    ]
    settled_ns, seq = NOW + 2_000_000_000, 42
    receipt = make_receipt(IDS[1], transfer_id="t-1", payer=IDS[1].public_key,
                           payee=IDS[0].public_key, amount=12_500_000, memo="", seq=seq,
                           settled_ns=settled_ns)
    body = msgpack.unpackb(receipt[HEADER_SIZE:-SIGNATURE_SIZE])[5]
    vec = _vector("bank receipt (signed by the bank, seed 1)", IDS[1], "bank.receipt", body,
                  receipt, subject="tycoon.bank.receipt", answers=b"", ts_ns=settled_ns,
                  nonce=msgpack.unpackb(receipt[HEADER_SIZE:-SIGNATURE_SIZE])[4])
    material = f"{IDS[1].public_key}\x00t-1\x00{seq}".encode()
    vec["nonce_input"] = (b"tycoon.bank.receipt.nonce\x00" + material).hex()
    out.append(vec)
    digest = bytes.fromhex(out[1]["digest"])
    out.append(_sealed("reply to the transfer request", 1, "reply", {"ok": True},
                       answers=digest, ts_ns=NOW + 1_500_000_000, nonce=b"\x11" * 16))
    return out


def subject_ids() -> list[dict[str, str]]:
    """subject_id(pk) = lowercase(base32(sha256(raw 32-byte key)[0:10])), step by step."""
    out = []
    for ident in IDS:
        digest = hashlib.sha256(ident.raw_public_key).digest()
        out.append({"public_key": ident.public_key, "public_key_raw": ident.raw_public_key.hex(),
                    "sha256": digest.hex(), "first_10_bytes": digest[:10].hex(),
                    "subject_id": subject_id(ident.public_key)})
    return out


def _raw(payload: bytes, *, ident: Identity = IDS[0], magic: bytes = b"TY",
         version: int = 1) -> bytes:
    signed = magic + bytes([version]) + ident.raw_public_key + payload
    return signed + ident.sign(signed)


def _payload(*fields: Any) -> bytes:
    return msgpack.packb(list(fields), use_bin_type=True)


def _nested(levels: int) -> Any:
    """``levels`` containers, one in the other, the innermost holding a scalar."""
    value: Any = [1]
    for _ in range(levels - 1):
        value = [value]
    return value


def refusals() -> list[dict[str, Any]]:
    """Envelopes a receiver must refuse, each with its code (and boundary cases it must
    accept, code "ok"). Received live on ``received_on`` at ``now_ns`` unless noted."""
    subj, nonce = "tycoon.demo.echo", bytes(16)
    good = _payload("demo.echo", subj, b"", NOW, nonce, {"text": "hi"})
    valid = _raw(good)
    flipped = bytearray(valid)
    flipped[-1] ^= 1
    digest = hashlib.sha256(b"some request").digest()
    cases: list[tuple[str, str, bytes, dict[str, Any]]] = [
        ("valid", "ok", valid, {}),
        ("larger than the receiver's limit", "too_large", valid, {"max_size": 100}),
        ("shorter than 35 + 1 + 64 bytes", "malformed", valid[:99], {}),
        ("bad magic", "malformed", _raw(good, magic=b"TX"), {}),
        ("version 2", "bad_version", _raw(good, version=2), {}),
        ("signature does not verify", "bad_signature", bytes(flipped), {}),
        ("signed by another key than the one in the header", "bad_signature",
         valid[:3] + IDS[1].raw_public_key + valid[35:], {}),
        ("payload is not msgpack", "malformed", _raw(b"\xc1"), {}),
        ("trailing bytes after the payload", "malformed", _raw(good + b"\x00"), {}),
        ("payload array of 5", "malformed", _raw(_payload("demo.echo", subj, b"", NOW, nonce)),
         {}),
        ("kind is not a string", "malformed",
         _raw(_payload(7, subj, b"", NOW, nonce, {})), {}),
        ("unknown kind (checked before the other fields)", "unknown_kind",
         _raw(_payload("demo.nope", 5, b"x", -1, b"", [])), {}),
        ("known kind, bad field: malformed", "malformed",
         _raw(_payload("demo.echo", subj, b"", -1, nonce, {})), {}),
        ("both subject and answers", "malformed",
         _raw(_payload("demo.echo", subj, digest, NOW, nonce, {})), {}),
        ("neither subject nor answers", "malformed",
         _raw(_payload("demo.echo", "", b"", NOW, nonce, {})), {}),
        ("answers of 31 bytes", "malformed",
         _raw(_payload("reply", "", digest[:31], NOW, nonce, {})), {}),
        ("subject of 257 characters", "malformed",
         _raw(_payload("demo.echo", "t" * 257, b"", NOW, nonce, {})), {}),
        ("subject as bin, not str", "malformed",
         _raw(_payload("demo.echo", subj.encode(), b"", NOW, nonce, {})), {}),
        ("ts_ns as a float", "malformed",
         _raw(_payload("demo.echo", subj, b"", float(NOW), nonce, {})), {}),
        ("ts_ns ≥ 2^63", "malformed",
         _raw(_payload("demo.echo", subj, b"", 2**63, nonce, {})), {}),
        ("nonce of 15 bytes", "malformed",
         _raw(_payload("demo.echo", subj, b"", NOW, nonce[:15], {})), {}),
        ("body is an array", "malformed", _raw(_payload("demo.echo", subj, b"", NOW, nonce, [])),
         {}),
        ("body has an integer key", "malformed",
         _raw(msgpack.packb(["demo.echo", subj, b"", NOW, nonce, {1: 2}], use_bin_type=True,
                            strict_types=False)), {}),
        ("extension type (msgpack timestamp) in the body", "malformed",
         _raw(_payload("demo.echo", subj, b"", NOW, nonce,
                       {"t": msgpack.Timestamp(1)})), {}),
        ("16 levels of containers (the payload array is level 1), scalars below",
         "ok", _raw(_payload("demo.echo", subj, b"", NOW, nonce, {"d": _nested(14)})), {}),
        ("17 levels of containers", "too_deep",
         _raw(_payload("demo.echo", subj, b"", NOW, nonce, {"d": _nested(15)})), {}),
        ("received on another subject", "wrong_subject", valid,
         {"received_on": "tycoon.demo.other"}),
        ("older than the window (60 s)", "stale", valid, {"now_ns": str(NOW + 61 * 10**9)}),
        ("from the future beyond the window", "stale", valid,
         {"now_ns": str(NOW - 61 * 10**9)}),
        ("delivered twice: the second is refused", "replayed", valid, {"deliveries": 2}),
        ("a reply to another request", "wrong_reply",
         _raw(_payload("reply", "", digest, NOW, nonce, {})),
         {"received_on": "", "request_digest": hashlib.sha256(b"mine").hexdigest()}),
    ]
    return [{"name": name, "code": code, "envelope": raw.hex(), "received_on": subj,
             "now_ns": str(NOW), **extra} for name, code, raw, extra in cases]


def main() -> None:
    files = {
        "envelope.json": {"version": 1, "vectors": envelopes(), "subject_ids": subject_ids()},
        "refusals.json": {"version": 1, "default_max_size": 1024 * 1024,
                          "window_s": 60, "vectors": refusals()},
    }
    for name, content in files.items():
        (HERE / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
