"""The implementation against the published test vectors (docs/protocol.md)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tycoon.bus.envelope import open_envelope, seal
from tycoon.bus.keys import Identity, verify_signature

VECTORS = json.loads((Path(__file__).parent / "vectors" / "envelope.json").read_text())["vectors"]


@pytest.mark.parametrize("v", VECTORS, ids=[v["kind"] for v in VECTORS])
def test_seal_reproduces_the_vector(v: dict) -> None:
    ident = Identity.from_seed(v["seed"])
    assert ident.public_key == v["public_key"]
    raw = seal(ident, v["kind"], v["body"], subject=v["subject"],
               answers=bytes.fromhex(v["answers"]), ts_ns=v["ts_ns"],
               nonce=bytes.fromhex(v["nonce"]))
    assert raw.hex() == v["envelope"]
    assert raw[-64:].hex() == v["signature"]
    assert hashlib.sha256(raw).hexdigest() == v["digest"]


@pytest.mark.parametrize("v", VECTORS, ids=[v["kind"] for v in VECTORS])
def test_open_decodes_the_vector(v: dict) -> None:
    raw = bytes.fromhex(v["envelope"])
    assert verify_signature(v["public_key"], raw[:-64], bytes.fromhex(v["signature"]))
    msg = open_envelope(raw)
    assert (msg.kind, msg.subject, msg.answers.hex()) == (v["kind"], v["subject"], v["answers"])
    assert (msg.sender, msg.ts_ns, msg.nonce.hex()) == (v["public_key"], v["ts_ns"], v["nonce"])
    assert msg.body == v["body"]
    assert raw[3:35].hex() == v["public_key_raw"] and raw[35:-64].hex() == v["payload"]
