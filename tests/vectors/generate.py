"""Regenerate tests/vectors/envelope.json (run only when the wire format deliberately changes)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tycoon.bus.envelope import HEADER_SIZE, SIGNATURE_SIZE, seal
from tycoon.bus.keys import Identity

SEEDS = [
    "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU",
    "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4",
]

CASES = [
    {"seed": 0, "kind": "demo.echo", "subject": "tycoon.demo.echo", "answers": "",
     "ts_ns": 1_700_000_000_000_000_000, "nonce": "00" * 16, "body": {"text": "hello"}},
    {"seed": 1, "kind": "bank.transfer", "subject": "tycoon.bank.transfer", "answers": "",
     "ts_ns": 1_700_000_000_123_456_789, "nonce": "0102030405060708090a0b0c0d0e0f10",
     "body": {"transfer_id": "t-1", "payee": "UB", "amount": 12_500_000, "memo": ""}},
    {"seed": 0, "kind": "price", "subject": "tycoon.price.abcdefghijklmnop", "answers": "",
     "ts_ns": 1_700_000_001_000_000_000, "nonce": "ff" * 16,
     "body": {"host": "abcdefghijklmnop", "seq": 7, "resources": {"cpu": {"price": 1.5}}}},
]


def build() -> list[dict]:
    vectors = []
    request_digest = ""
    for case in CASES:
        ident = Identity.from_seed(SEEDS[case["seed"]])
        raw = seal(ident, case["kind"], case["body"], subject=case["subject"],
                   answers=bytes.fromhex(case["answers"]), ts_ns=case["ts_ns"],
                   nonce=bytes.fromhex(case["nonce"]))
        request_digest = hashlib.sha256(raw).hexdigest()
        vectors.append(_vector(case, ident, raw))
    # a reply to the last request
    reply_case = {"seed": 1, "kind": "reply", "subject": "", "answers": request_digest,
                  "ts_ns": 1_700_000_001_500_000_000, "nonce": "11" * 16, "body": {"ok": True}}
    ident = Identity.from_seed(SEEDS[1])
    raw = seal(ident, "reply", reply_case["body"], answers=bytes.fromhex(request_digest),
               ts_ns=reply_case["ts_ns"], nonce=bytes.fromhex(reply_case["nonce"]))
    vectors.append(_vector(reply_case, ident, raw))
    return vectors


def _vector(case: dict, ident: Identity, raw: bytes) -> dict:
    return {
        **{k: v for k, v in case.items() if k != "seed"},
        "seed": SEEDS[case["seed"]],
        "public_key": ident.public_key,
        "public_key_raw": ident.raw_public_key.hex(),
        "payload": raw[HEADER_SIZE:-SIGNATURE_SIZE].hex(),
        "signature": raw[-SIGNATURE_SIZE:].hex(),
        "envelope": raw.hex(),
        "digest": hashlib.sha256(raw).hexdigest(),
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("envelope.json")
    out.write_text(json.dumps({"version": 1, "vectors": build()}, indent=2) + "\n")
    print(f"wrote {out}")
