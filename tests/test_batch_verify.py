"""Batch signature checks (C, GIL released once per batch) give exactly the outcomes of
open_envelope, refusal codes included; without the C helper the same API falls back."""

from __future__ import annotations

import pytest

from tycoon.bus import batch
from tycoon.bus.envelope import DEFAULT_LIMITS, Message, open_envelope, open_envelopes, seal
from tycoon.bus.keys import Identity
from tycoon.errors import Rejected


def outcome(raw: object) -> tuple[str, object]:
    try:
        msg = open_envelope(raw)  # type: ignore[arg-type]
    except Rejected as error:
        return ("rejected", error.code)
    return ("ok", (msg.kind, msg.sender, msg.nonce, msg.body))


def as_outcome(item: Message | Rejected) -> tuple[str, object]:
    if isinstance(item, Rejected):
        return ("rejected", item.code)
    return ("ok", (item.kind, item.sender, item.nonce, item.body))


def corpus() -> list[object]:
    alice, bob = Identity.generate(), Identity.generate()
    good = [seal(alice, "price", {"host": "h", "seq": i}, subject="tycoon.price.h")
            for i in range(5)]
    raw = good[0]
    flipped = [raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:] for i in range(0, len(raw), 7)]
    return [
        *good,
        *flipped,
        raw[:3] + bob.raw_public_key + raw[35:],  # someone else's key named
        raw[:-1],  # truncated signature
        b"TY",  # too short
        b"XX" + raw[2:],  # bad magic
        raw[:2] + b"\x09" + raw[3:],  # bad version
        bytearray(raw),  # bytes-like: accepted as open_envelope accepts it
        b"\x00" * (DEFAULT_LIMITS.max_size + 1),  # too large
        good[1],  # a replay is the guard's business, not the decoder's: opens again
    ]


@pytest.mark.parametrize("c_helper", [True, False])
def test_batch_outcomes_equal_one_by_one(c_helper: bool, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    if c_helper and not batch.available():
        pytest.skip("the C helper was not built on this machine (no compiler at install)")
    if not c_helper:
        monkeypatch.setattr(batch, "_impl", None)
    items = corpus()
    expected = [outcome(raw) for raw in items]
    got = [as_outcome(m) for m in open_envelopes(items)]  # type: ignore[arg-type]
    assert got == expected
    assert {o[0] for o in expected} == {"ok", "rejected"}
    codes = {o[1] for o in expected if o[0] == "rejected"}
    assert {"bad_signature", "malformed", "bad_version", "too_large"} <= codes


def test_verdicts_from_another_thread_are_used_as_given() -> None:
    if not batch.available():
        pytest.skip("the C helper was not built on this machine (no compiler at install)")
    items = [raw for raw in corpus() if isinstance(raw, bytes)]
    verdicts = batch.verify_batch(items)
    assert verdicts is not None and len(verdicts) == len(items)
    got = [as_outcome(m) for m in open_envelopes(items, verdicts=verdicts)]
    assert got == [outcome(raw) for raw in items]
    with pytest.raises(ValueError):
        open_envelopes(items, verdicts=verdicts[:-1])


def test_the_c_helper_checks_every_envelope_of_a_batch() -> None:
    if not batch.available():
        pytest.skip("the C helper was not built on this machine (no compiler at install)")
    alice = Identity.generate()
    good = [seal(alice, "price", {"n": i}, subject="s") for i in range(200)]
    bad = [raw[:-5] + bytes([raw[-5] ^ 0x80]) + raw[-4:] for raw in good[::3]]
    verdicts = batch.verify_batch(good + bad + [b"", b"x" * 99, 123])  # type: ignore[list-item]
    assert verdicts == b"\x01" * len(good) + b"\x00" * (len(bad) + 3)
