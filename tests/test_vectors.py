"""The byte layout of the published envelope vectors (docs/vectors/envelope.json, the one
source): magic, version, key, payload and signature where docs/protocol.md §2 puts them,
and what opening gives back. Sealing each vector from its inputs, the subject ids and the
refusal vectors (docs/vectors/refusals.json) are tested in tests/test_protocol_doc.py."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest
from nacl.signing import VerifyKey

from tycoon.bus.envelope import open_envelope
from tycoon.bus.keys import Identity, decode_public_key

VECTORS = json.loads((Path(__file__).resolve().parent.parent / "docs" / "vectors"
                      / "envelope.json").read_text())["vectors"]


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_envelope_layout(v: dict) -> None:
    raw = bytes.fromhex(v["envelope"])
    assert raw[:3] == b"TY\x01"
    assert raw[3:35].hex() == v["public_key_raw"]
    assert raw[35:-64].hex() == v["payload"] and raw[-64:].hex() == v["signature"]
    assert Identity.from_seed(v["seed"]).public_key == v["public_key"]
    VerifyKey(decode_public_key(v["public_key"])).verify(raw[:-64], bytes.fromhex(v["signature"]))
    kind, subject, answers, ts_ns, nonce, _ = msgpack.unpackb(bytes.fromhex(v["payload"]))
    assert (kind, subject, answers.hex(), str(ts_ns), nonce.hex()) == (
        v["kind"], v["subject"], v["answers"], v["ts_ns"], v["nonce"])


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_opening_gives_the_signer_nonce_and_answers(v: dict) -> None:
    msg = open_envelope(bytes.fromhex(v["envelope"]))
    assert (msg.sender, msg.nonce.hex(), msg.answers.hex()) == (
        v["public_key"], v["nonce"], v["answers"])


def test_one_source_of_vectors() -> None:
    """The old tests/vectors copy is gone; every kind it had is among the published ones."""
    assert not (Path(__file__).parent / "vectors").exists()
    assert {"demo.echo", "bank.transfer", "price", "reply"} <= {v["kind"] for v in VECTORS}
