"""The message model (tycoon/messages) and the one verification path (tycoon/bus/verify)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.bus.replay import ReplayGuard
from tycoon.bus.verify import (
    check_signer,
    signer_raw,
    verify_live,
    verify_live_batch,
    verify_stored,
)
from tycoon.errors import Rejected
from tycoon.messages import MESSAGES, REPLIES, Body
from tycoon.messages.price import Offer, PriceUpdate, offers_from_body

ROOT = Path(__file__).resolve().parent.parent
SAMPLES: dict[str, Any] = {"str": "x", "int": 7, "float": 1.5, "bool": True, "bin": b"\x01",
                           "map": {"a": 1}, "array": [1], "any": "v", "str or int": "1h",
                           "str or map": "cpu:1"}
ALL = sorted({*MESSAGES.values(), *REPLIES.values()}, key=lambda c: c.__name__)


def sample(cls: type[Body], *, optional: bool) -> dict[str, Any]:
    return {s.name: SAMPLES[s.wire] for s in cls.specs() if optional or not s.optional}


@pytest.mark.parametrize("cls", [c for c in ALL if c is not PriceUpdate], ids=lambda c: c.__name__)
def test_every_body_round_trips(cls: type[Body]) -> None:
    for optional in (False, True):
        body = sample(cls, optional=optional)
        assert cls.from_body(body).to_body() == body
    assert dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", [c for c in ALL if any(not s.optional for s in c.specs())],
                         ids=lambda c: c.__name__)
def test_a_missing_or_mistyped_field_is_malformed(cls: type[Body]) -> None:
    body = sample(cls, optional=False)
    required = next(s for s in cls.specs() if not s.optional)
    with pytest.raises(Rejected) as info:
        cls.from_body({k: v for k, v in body.items() if k != required.name})
    assert info.value.code == "malformed" and required.name in info.value.message
    typed = next((s for s in cls.specs() if s.wire in ("int", "str", "bin", "map", "array")),
                 None)
    if typed is not None:
        wrong = True if typed.wire == "int" else 3  # a bool is not an int; 3 is no str/bin/…
        with pytest.raises(Rejected) as info:
            cls.from_body({**sample(cls, optional=True), typed.name: wrong})
        assert info.value.code == "malformed"


def test_a_body_that_is_not_a_map_is_malformed() -> None:
    for cls in ALL:
        with pytest.raises(Rejected) as info:
            cls.from_body(["not", "a", "map"])
        assert info.value.code == "malformed"


def test_length_bounds_are_checked() -> None:
    with pytest.raises(Rejected):
        MESSAGES["bank.transfer"].from_body({"payee": "U", "amount": 1, "transfer_id": "t" * 129})
    with pytest.raises(Rejected):
        MESSAGES["host.fund"].from_body({"receipt": b"x" * 4097})


offers = st.builds(Offer, st.integers(0, 2**62), st.floats(0, 1e12), st.floats(0, 1),
                   st.integers(0, 10**6))


@given(st.integers(0, 2**62), st.floats(0.01, 86_400),
       st.dictionaries(st.sampled_from(["cpu", "memory", "disk", "net"]), offers))
def test_price_update_producer_and_consumer_agree(seq: int, heartbeat: float,
                                                  resources: dict[str, Offer]) -> None:
    update = PriceUpdate("abcdefghijklmnop", seq, heartbeat, "host h0", "simulated", resources)
    again = PriceUpdate.from_body(update.to_body())
    assert again.to_body() == update.to_body()
    assert offers_from_body(update.to_body()["resources"]) == again.resources


def test_the_auctioneers_price_body_is_a_price_update() -> None:
    """The producer (auctioneer views) writes what every consumer reads."""
    from tycoon.auctioneer import views

    src = Path(views.__file__).read_text()
    assert "PriceUpdate(" in src and '"unit_price"' not in src


def test_no_consumer_reads_a_price_body_by_hand() -> None:
    for rel in ("tycoon/agent/agent.py", "tycoon/cli/top.py", "tycoon/cli/tap.py",
                "tycoon/cli/auctioneer.py", "tycoon/sls/registry.py"):
        src = (ROOT / rel).read_text()
        for pattern in ('body.get("resources"', 'get("resources") or', '["resources"].get(',
                        'body.get("resources", {})'):
            assert pattern not in src, (rel, pattern)


# -- the one verification path ------------------------------------------------------------

RAW_NATS_ALLOWED = {
    "tycoon/cli/status.py": "$SRV discovery: JSON, not envelopes",
    "tycoon/natscluster.py": "a cluster probe of opaque tokens (test support)",
    "tycoon/streams/reader.py": "the JetStream pull consumer: turns stored messages into "
                                "StoredMsg (subject, bytes, headers) for the verify path",
    "tycoon/bundles/client.py": "JetStream answers (JSON) and object-store chunks: bytes "
                                "checked against their SHA-256 name, not envelopes",
}


def _raw_nats_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nats.aio.msg"):
            found.append(f"{node.lineno}: imports nats.aio.msg")
        elif isinstance(node, ast.Attribute) and node.attr == "_msg":
            found.append(f"{node.lineno}: reads ._msg")
        elif isinstance(node, ast.Attribute) and node.attr == "send_request":
            found.append(f"{node.lineno}: send_request returns a raw NATS message")
        elif isinstance(node, ast.Attribute) and node.attr in ("subscribe", "request") \
                and ((isinstance(node.value, ast.Name) and node.value.id == "nc")
                     or (isinstance(node.value, ast.Attribute) and node.value.attr == "nc")):
            found.append(f"{node.lineno}: nc.{node.attr} delivers raw NATS messages")
    return found


def test_no_module_outside_the_bus_touches_a_raw_nats_message() -> None:
    offenders = {}
    for path in sorted((ROOT / "tycoon").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("tycoon/bus/") or rel in RAW_NATS_ALLOWED:
            continue
        uses = _raw_nats_uses(path)
        if uses:
            offenders[rel] = uses
    assert not offenders, offenders


def test_the_rule_catches_what_it_forbids(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from nats.aio.msg import Msg\n"
                   "async def f(bus, r):\n"
                   "    await bus.nc.subscribe('x')\n"
                   "    resp = await bus.send_request('s', b'')\n"
                   "    return r._msg.reply, resp.data[3:35]\n")
    assert len(_raw_nats_uses(bad)) == 4


HOST = Identity.from_seed("SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU")
NOW = 1_700_000_000_000_000_000


def _batch() -> list[tuple[str, bytes]]:
    subject = "tycoon.demo.echo"
    good = seal(HOST, "demo.echo", {"text": "a"}, subject=subject, ts_ns=NOW)
    flipped = bytearray(seal(HOST, "demo.echo", {"text": "b"}, subject=subject, ts_ns=NOW))
    flipped[-1] ^= 1
    other = seal(HOST, "demo.echo", {"text": "c"}, subject="tycoon.demo.x", ts_ns=NOW)
    old = seal(HOST, "demo.echo", {"text": "d"}, subject=subject, ts_ns=NOW - 10**12)
    return [(subject, good), (subject, bytes(flipped)), (subject, other), (subject, old),
            (subject, good), (subject, b"TY")]


def test_batch_and_single_verification_agree() -> None:
    batch = _batch()
    batched = verify_live_batch(batch, ReplayGuard(), now_ns=NOW)
    guard = ReplayGuard()
    single = []
    for subject, data in batch:
        try:
            single.append(verify_live(data, subject, guard, now_ns=NOW).kind)
        except Rejected as error:
            single.append(error.code)
    codes = [m.code if isinstance(m, Rejected) else m.kind for m in batched]
    assert codes == single == ["demo.echo", "bad_signature", "wrong_subject", "stale",
                               "replayed", "malformed"]


def test_stored_messages_skip_freshness_but_not_binding_or_kind() -> None:
    subject, data = _batch()[3]  # far too old to be live
    assert verify_stored(data, subject, "demo.echo").body == {"text": "d"}
    with pytest.raises(Rejected) as info:
        verify_stored(data, "tycoon.demo.x")
    assert info.value.code == "wrong_subject"
    with pytest.raises(Rejected) as info:
        verify_stored(data, subject, "price")
    assert info.value.code == "unknown_kind"


def test_a_pinned_signer_refuses_another_key() -> None:
    data = _batch()[0][1]
    check_signer(data, signer_raw(HOST.public_key))
    with pytest.raises(Rejected) as info:
        check_signer(data, signer_raw(Identity.generate().public_key))
    assert info.value.code == "wrong_reply"
    assert subject_id(HOST.public_key)  # the vectors' key is a valid user key
