"""The verified ingest path without a network: raw envelopes in, outcomes counted."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tycoon.bus import batch as batch_verify
from tycoon.bus import subjects
from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.bus.replay import ReplayGuard
from tycoon.sls.ingest import CHUNK, PriceIngest, Raw
from tycoon.sls.query import Query
from tycoon.sls.registry import Registry
from tycoon.units import NS


def update(host: Identity, seq: int, price: float = 1.0, **over: object) -> dict:
    hid = subject_id(host.public_key)
    body = {
        "host": hid,
        "seq": seq,
        "heartbeat_s": 5.0,
        "name": "n",
        "driver": "sim",
        "resources": {
            "cpu": {"capacity": 100, "price": price, "unit_price": price / 100,
                    "utilization": 0.0, "bidders": 0}
        },
    }
    body.update(over)
    return body


def sealed(host: Identity, body: dict, *, signer: Identity | None = None,
           subject: str | None = None, kind: str = "price", ts_ns: int | None = None) -> Raw:
    subject = subject or subjects.price(subject_id(host.public_key))
    return subject, seal(signer or host, kind, body, subject=subject, ts_ns=ts_ns)


@pytest.fixture
def rejected() -> list[str]:
    return []


@pytest.fixture(params=["c-batch", "per-message"])
def ingest(request: pytest.FixtureRequest, rejected: list[str],
           monkeypatch: pytest.MonkeyPatch) -> Iterator[PriceIngest]:
    """Both verification paths: the C batch checker (pool verifies, caller decodes) and
    PyNaCl per message (pool opens whole chunks), as when the helper was not built."""
    if request.param == "per-message":
        monkeypatch.setattr(batch_verify, "_impl", None)
    elif not batch_verify.available():
        pytest.skip("the C helper was not built on this machine (no compiler at install)")
    pi = PriceIngest(Registry(), guard=ReplayGuard(), workers=2,
                     on_reject=lambda error, subject: rejected.append(error.code))
    yield pi
    pi.close()


def test_every_refusal_is_counted(ingest: PriceIngest, rejected: list[str]) -> None:
    host, thief = Identity.generate(), Identity.generate()
    victim_subject = subjects.price(subject_id(host.public_key))
    good = sealed(host, update(host, 10))
    subject, raw = sealed(host, update(host, 11))
    tampered = (subject, raw[:-1] + bytes([raw[-1] ^ 1]))
    batch = [
        good,
        good,  # replayed
        sealed(thief, update(host, 12), subject=victim_subject),  # another key, victim's subject
        sealed(thief, update(host, 13)),  # thief's own subject, victim's host id
        tampered,  # bad signature
        (subjects.price("othersubject"), good[1]),  # signed for another subject
        sealed(host, update(host, 14), ts_ns=time.time_ns() - 3600 * NS),  # stale
        sealed(host, update(host, 15), kind="alloc"),  # wrong kind
        sealed(host, update(host, 16, heartbeat_s="x")),  # malformed
        sealed(host, update(host, 9)),  # older than 10
        sealed(host, update(host, 17, price=2.0)),
    ]
    outcomes = ingest.ingest(batch)
    assert outcomes == {
        "accepted": 2, "replayed": 1, "forbidden": 2, "bad_signature": 1, "wrong_subject": 1,
        "stale": 1, "unknown_kind": 1, "malformed": 1, "out_of_order": 1,
    }
    assert sorted(rejected) == sorted(
        ["replayed", "forbidden", "forbidden", "bad_signature", "wrong_subject", "stale",
         "unknown_kind", "malformed"]
    )
    rows = ingest.registry.query(Query(), time.time_ns())["rows"]
    assert [(r["seq"], r["price"]) for r in rows] == [(17, 2.0)]
    registry_counts = ingest.registry.snapshot(time.time_ns())["counters"]
    assert registry_counts["malformed"] == 1 and registry_counts["out_of_order"] == 1


def test_refusals_in_parallel_chunks(ingest: PriceIngest) -> None:
    """Past one chunk the pool works: forged and tampered envelopes among good ones are
    refused with their codes, wherever they sit in the batch."""
    host, thief = Identity.generate(), Identity.generate()
    batch = [sealed(host, update(host, seq)) for seq in range(1, 3 * CHUNK)]
    for i in range(5, len(batch), 17):
        subject, raw = batch[i]
        batch[i] = (subject, raw[:40] + bytes([raw[40] ^ 0x10]) + raw[41:])
    batch[70] = sealed(thief, update(host, 70), subject=batch[70][0])
    outcomes = ingest.ingest(batch)
    tampered = len(range(5, len(batch), 17))
    assert outcomes["bad_signature"] == tampered - (70 in range(5, len(batch), 17))
    assert outcomes["forbidden"] == 1
    assert outcomes["accepted"] == len(batch) - sum(
        n for code, n in outcomes.items() if code != "accepted")


def test_parallel_chunks_are_applied_in_order(ingest: PriceIngest) -> None:
    host = Identity.generate()
    batch = [sealed(host, update(host, seq, price=float(seq))) for seq in range(1, 3 * CHUNK)]
    outcomes = ingest.ingest(batch)
    assert outcomes == {"accepted": len(batch)}  # any reordering would show as out_of_order
    full = ingest.registry.host(subject_id(host.public_key), time.time_ns())
    assert full["seq"] == len(batch) and full["updates"] == len(batch)
    assert full["resources"]["cpu"]["statistics"]["windows"]["minute"]["count"] == len(batch)
