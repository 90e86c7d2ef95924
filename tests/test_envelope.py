"""The signed envelope: round trip, tampering, binding, bounds, fuzzing (pure, no server)."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tycoon.bus.envelope import (
    HEADER_SIZE,
    MAGIC,
    SIGNATURE_SIZE,
    VERSION,
    Limits,
    RecentlyVerified,
    open_envelope,
    seal,
)
from tycoon.bus.keys import Identity
from tycoon.errors import Rejected

ALICE = Identity.from_seed("SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU")
SUBJECT = "tycoon.demo.echo"


def raw_envelope(identity: Identity, payload: bytes, version: int = VERSION) -> bytes:
    """Sign an arbitrary payload, bypassing seal's checks (to build hostile envelopes)."""
    signed = MAGIC + bytes([version]) + identity.raw_public_key + payload
    return signed + identity.sign(signed)


def payload(kind: object = "demo.echo", subject: object = SUBJECT, answers: object = b"",
            ts: object = 1, nonce: object = b"\0" * 16, body: object = None) -> bytes:
    return msgpack.packb([kind, subject, answers, ts, nonce, {} if body is None else body])


def layout_code(raw: bytes) -> str | None:
    """The code the checks before any crypto give ``raw`` (size, magic, version), if any."""
    if len(raw) < HEADER_SIZE + 1 + SIGNATURE_SIZE or raw[:2] != MAGIC:
        return "malformed"
    return "bad_version" if raw[2] != VERSION else None


DECODING_CODES = {"malformed", "too_deep", "unknown_kind"}
"""What a payload with a good signature can be refused for."""


def test_round_trip() -> None:
    raw = seal(ALICE, "demo.echo", {"text": "hi", "n": 3}, subject=SUBJECT)
    msg = open_envelope(raw)
    assert (msg.kind, msg.subject, msg.sender) == ("demo.echo", SUBJECT, ALICE.public_key)
    assert msg.body == {"text": "hi", "n": 3}
    assert msg.raw == raw and msg.digest == hashlib.sha256(raw).digest()
    assert len(msg.nonce) == 16


def test_reply_binds_request_digest() -> None:
    request = seal(ALICE, "demo.echo", {}, subject=SUBJECT)
    reply = open_envelope(seal(ALICE, "reply", {}, answers=hashlib.sha256(request).digest()))
    assert reply.subject == "" and reply.answers == hashlib.sha256(request).digest()


def test_every_single_byte_flip_is_rejected() -> None:
    raw = seal(ALICE, "demo.echo", {"amount": 5, "to": "x"}, subject=SUBJECT)
    for i in range(len(raw)):
        for bit in (0x01, 0x80):
            mutated = bytearray(raw)
            mutated[i] ^= bit
            with pytest.raises(Rejected) as info:
                open_envelope(bytes(mutated))
            assert info.value.code in {"bad_signature", "malformed", "bad_version"}


def test_wrong_key_is_bad_signature() -> None:
    bob = Identity.generate()
    raw = seal(ALICE, "demo.echo", {}, subject=SUBJECT)
    forged = raw[:3] + bob.raw_public_key + raw[HEADER_SIZE:]  # claim to be Bob
    with pytest.raises(Rejected, match="bad_signature"):
        open_envelope(forged)


def test_oversized_is_rejected_before_anything_else() -> None:
    raw = seal(ALICE, "demo.echo", {"blob": b"x" * 2000}, subject=SUBJECT)
    with pytest.raises(Rejected) as info:
        open_envelope(raw, limits=Limits(max_size=1000))
    assert info.value.code == "too_large"


def test_too_deep_is_rejected() -> None:
    nested = b"\x91" * 40 + b"\xc0"  # forty nested one-element arrays
    body = b"\x81\xa1a" + nested  # {"a": [[[...]]]}
    data = msgpack.packb(["demo.echo", SUBJECT, b"", 1, b"\0" * 16])
    data = b"\x96" + data[1:] + body  # turn the 5-array header into a 6-array
    with pytest.raises(Rejected) as info:
        open_envelope(raw_envelope(ALICE, data))
    assert info.value.code == "too_deep"


def test_pathologically_deep_msgpack_is_rejected_not_crashing() -> None:
    data = b"\x96" + msgpack.packb(["demo.echo", SUBJECT, b"", 1, b"\0" * 16])[1:]
    data += b"\x81\xa1a" + b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(Rejected) as info:
        open_envelope(raw_envelope(ALICE, data))
    assert info.value.code in {"too_deep", "malformed"}


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (payload(kind="no.such.kind"), "unknown_kind"),
        (payload(kind=7), "malformed"),
        (payload(subject=""), "malformed"),  # neither subject nor answers
        (payload(answers=b"x" * 32), "malformed"),  # both subject and answers
        (payload(answers=b"short"), "malformed"),
        (payload(ts=-1), "malformed"),
        (payload(ts=True), "malformed"),
        (payload(nonce=b"short"), "malformed"),
        (payload(body=[1, 2]), "malformed"),
        (msgpack.packb([1, 2, 3]), "malformed"),
        (payload() + b"\x00", "malformed"),  # trailing bytes
        (b"\xc1", "malformed"),  # never-used msgpack byte
        (msgpack.packb(["demo.echo", SUBJECT, b"", 1, b"\0" * 16, {1: 2}]), "malformed"),
        (msgpack.packb(["demo.echo", SUBJECT, b"", 1, b"\0" * 16,
                        {"t": msgpack.ExtType(5, b"x")}]), "malformed"),
    ],
)
def test_strict_decoding(data: bytes, code: str) -> None:
    with pytest.raises(Rejected) as info:
        open_envelope(raw_envelope(ALICE, data))
    assert info.value.code == code


def test_unknown_version_and_magic() -> None:
    with pytest.raises(Rejected, match="bad_version"):
        open_envelope(raw_envelope(ALICE, payload(), version=2))
    good = seal(ALICE, "demo.echo", {}, subject=SUBJECT)
    with pytest.raises(Rejected, match="malformed"):
        open_envelope(b"XX" + good[2:])
    with pytest.raises(Rejected, match="malformed"):
        open_envelope(good[:50])


def test_seal_refuses_unknown_kind() -> None:
    with pytest.raises(ValueError):
        seal(ALICE, "nope", {}, subject=SUBJECT)


bodies = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20)
        | st.binary(max_size=20) | st.floats(allow_nan=False),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                    max_size=4),
        max_leaves=12,
    ),
    max_size=6,
)


@given(body=bodies)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_random_bodies_round_trip(body: dict) -> None:
    assert open_envelope(seal(ALICE, "demo.echo", body, subject=SUBJECT)).body == body


@given(data=st.binary(max_size=300), header=st.sampled_from([b"", MAGIC, MAGIC + bytes([VERSION])]))
@settings(max_examples=5000, deadline=None)
def test_random_bytes_only_raise_rejected(data: bytes, header: bytes) -> None:
    """Random bytes (after a good magic and version, or not): refused by the layout checks,
    else by the signature, each with its own code."""
    raw = header + data
    with pytest.raises(Rejected) as info:
        open_envelope(raw)
    assert info.value.code == (layout_code(raw) or "bad_signature")


@given(
    body=bodies,
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.slow
def test_mutated_envelopes_only_raise_rejected(body: dict, edits: list[tuple[int, int]]) -> None:
    """Any changed byte is refused: a bad magic or version by the layout checks, anything
    else (the key, the payload, the signature) by the signature."""
    original = seal(ALICE, "demo.echo", body, subject=SUBJECT)
    raw = bytearray(original)
    for pos, value in edits:
        raw[pos % len(raw)] = value
    if bytes(raw) == original:  # only edits that changed nothing may pass
        assert open_envelope(bytes(raw)).body == body
        return
    with pytest.raises(Rejected) as info:
        open_envelope(bytes(raw))
    assert info.value.code == (layout_code(bytes(raw)) or "bad_signature")


@given(payload_bytes=st.binary(max_size=200))
@settings(max_examples=2000, deadline=None)
def test_validly_signed_garbage_only_raises_rejected(payload_bytes: bytes) -> None:
    """Garbage with a valid signature reaches the decoder itself: it must still only reject,
    for what the payload is (never the signature), and bytes that are not one msgpack value
    are malformed."""
    try:
        msgpack.unpackb(payload_bytes, strict_map_key=False)
        one_value = True
    except Exception:  # any failure of the reference decoder
        one_value = False
    with pytest.raises(Rejected) as info:
        open_envelope(raw_envelope(ALICE, payload_bytes))
    assert info.value.code in DECODING_CODES
    if not one_value:  # (deep nesting may fail either decoder first)
        assert info.value.code in {"malformed", "too_deep"}


def test_nonces_are_fresh() -> None:
    nonces = {open_envelope(seal(ALICE, "demo.echo", {}, subject=SUBJECT)).nonce
              for _ in range(200)}
    assert len(nonces) == 200


def test_recently_verified_checks_each_envelope_once_and_refuses_the_rest() -> None:
    cache = RecentlyVerified(capacity=2)
    raws = [seal(ALICE, "demo.echo", {"n": n}, subject="tycoon.demo") for n in range(3)]
    first = cache.open(raws[0])
    assert cache.open(raws[0]) == first == open_envelope(raws[0])
    forged = raws[0][:-1] + bytes([raws[0][-1] ^ 1])
    with pytest.raises(Rejected) as error:
        cache.open(forged)
    assert error.value.code == "bad_signature"
    with pytest.raises(Rejected):
        cache.open(raws[0][:-70])  # too short: refused before any lookup
    cache.open(raws[1])
    cache.open(raws[2])
    assert raws[0] not in cache._seen and len(cache._seen) == 2  # bounded, oldest out
