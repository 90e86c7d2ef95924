"""docs/protocol.md against the code: every kind, field, subject and code documented, and
the shipped vectors (docs/vectors/) reproduced and refused by our decoder."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tycoon.bus.envelope import Limits, open_envelope, seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.bus.kinds import KINDS
from tycoon.bus.replay import ReplayGuard
from tycoon.bus.verify import verify_live, verify_reply
from tycoon.errors import CODES, Rejected
from tycoon.messages import MESSAGES, REPLIES, doc_table

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "protocol.md").read_text()
VECTORS = json.loads((ROOT / "docs" / "vectors" / "envelope.json").read_text())
REFUSALS = json.loads((ROOT / "docs" / "vectors" / "refusals.json").read_text())


def from_json(value: Any) -> Any:
    """A body value of the vectors' JSON ({"$int": decimal}, {"$bin": hex})."""
    if isinstance(value, dict):
        if value.keys() == {"$int"}:
            return int(value["$int"])
        if value.keys() == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def test_every_kind_has_a_body_class() -> None:
    assert set(MESSAGES) == KINDS
    assert set(REPLIES) <= KINDS


def test_the_kinds_table_is_the_message_model() -> None:
    """§6's table is generated from tycoon/messages (``python -m tycoon.messages``)."""
    table = doc_table()
    assert table in DOC, "docs/protocol.md §6 is stale: paste `python -m tycoon.messages`"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_and_field_is_documented(kind: str) -> None:
    row = next((line for line in DOC.splitlines() if line.startswith(f"| `{kind}` |")), None)
    assert row is not None, f"{kind} has no row in docs/protocol.md"
    for spec in MESSAGES[kind].specs():
        assert f"`{spec.name}`" in row, f"{kind}.{spec.name} undocumented"
    reply = REPLIES.get(kind)
    for spec in reply.specs() if reply else ():
        assert f"`{spec.name}`" in row, f"reply to {kind}: {spec.name} undocumented"


@pytest.mark.parametrize("subject", [
    "tycoon.price.<host>", "tycoon.alloc.<host>", "tycoon.host.<host>.<op>", "tycoon.bank.<op>",
    "tycoon.bank.settled", "tycoon.bank.receipt", "tycoon.sls.<op>", "tycoon.sls.snapshot",
    "tycoon.agent.<id>.<event>", "tycoon.broker.<broker>.<op>",
    "tycoon.settlement.<payer>.<payee>", "tycoon.demo.echo", "_INBOX.<subject id>",
])
def test_each_subject_family_is_in_section_5(subject: str) -> None:
    assert f"`{subject}" in DOC


def test_every_code_is_listed() -> None:
    listed = set(re.findall(r"`([a-z_]+)`", DOC))
    assert set(CODES) <= listed, set(CODES) - listed


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=[v["name"] for v in VECTORS["vectors"]])
def test_envelope_vectors_both_ways(v: dict[str, Any]) -> None:
    ident = Identity.from_seed(v["seed"])
    assert ident.public_key == v["public_key"]
    body = from_json(v["body"])
    raw = seal(ident, v["kind"], body, subject=v["subject"], answers=bytes.fromhex(v["answers"]),
               ts_ns=int(v["ts_ns"]), nonce=bytes.fromhex(v["nonce"]))
    assert raw.hex() == v["envelope"]
    assert hashlib.sha256(raw).hexdigest() == v["digest"]
    msg = open_envelope(bytes.fromhex(v["envelope"]))
    assert (msg.kind, msg.subject, msg.ts_ns, msg.body) == (v["kind"], v["subject"],
                                                            int(v["ts_ns"]), body)
    MESSAGES[v["kind"]].from_body(msg.body)  # the body is one the model accepts
    if v["kind"] == "price":  # a host speaks for itself
        assert v["subject"] == f"tycoon.price.{subject_id(v['public_key'])}"
        assert body["host"] == subject_id(v["public_key"])
    if "nonce_input" in v:
        assert hashlib.sha256(bytes.fromhex(v["nonce_input"])).hexdigest()[:32] == v["nonce"]


def test_big_integers_are_strings_in_the_vectors() -> None:
    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, int) and not isinstance(value, bool):
            assert abs(value) < 2**53, value
    walk(VECTORS)
    walk(REFUSALS)


@pytest.mark.parametrize("v", VECTORS["subject_ids"], ids=lambda v: v["subject_id"])
def test_subject_id_vectors(v: dict[str, str]) -> None:
    import base64

    digest = hashlib.sha256(bytes.fromhex(v["public_key_raw"])).digest()
    assert digest.hex() == v["sha256"] and digest[:10].hex() == v["first_10_bytes"]
    assert base64.b32encode(digest[:10]).decode().lower() == v["subject_id"]
    assert subject_id(v["public_key"]) == v["subject_id"]


@pytest.mark.parametrize("v", REFUSALS["vectors"], ids=[v["name"] for v in REFUSALS["vectors"]])
def test_refusal_vectors(v: dict[str, Any]) -> None:
    """Our decoder (the bus's one verification path) gives each vector its code."""
    raw = bytes.fromhex(v["envelope"])
    limits = Limits(max_size=v.get("max_size", REFUSALS["default_max_size"]))
    guard = ReplayGuard(window_ns=REFUSALS["window_s"] * 10**9)
    now = int(v["now_ns"])
    code = "ok"
    for _ in range(v.get("deliveries", 1)):
        try:
            if "request_digest" in v:
                verify_reply(raw, bytes.fromhex(v["request_digest"]), guard, limits=limits,
                             now_ns=now)
            else:
                verify_live(raw, v["received_on"], guard, limits=limits, now_ns=now)
        except Rejected as error:
            code = error.code
    assert code == v["code"]


def test_refusal_vectors_cover_every_envelope_code() -> None:
    envelope_codes = {"malformed", "too_large", "too_deep", "bad_version", "bad_signature",
                      "unknown_kind", "wrong_subject", "wrong_reply", "stale", "replayed"}
    assert envelope_codes <= {v["code"] for v in REFUSALS["vectors"]}
