"""Hostile input against the SLS, over a real nats-server with the per-role config.

Price events are published by a rogue host — an authenticated host that may publish only
on its own price subject — and every bad one is dropped and counted by code; queries get
error replies with their code. The registry's view of the honest hosts never changes and
the SLS still answers normally.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hostile_kit import (
    NS,
    Cast,
    Fuzzer,
    Target,
    assert_no_success_except,
    call,
    code,
    deep_msgpack,
    draw_recipes,
    expect,
    flood,
    forged,
    nested,
    padded,
    secure_server,
    tally,
    wait_for,
)
from structlog.testing import capture_logs
from world_kit import World

from tycoon.bus import subjects
from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.sls.client import SLSClient
from tycoon.sls.launch import launch as launch_sls
from tycoon.sls.service import SLSConfig, SLSService

pytestmark = [pytest.mark.nats, pytest.mark.hostile, pytest.mark.timeout(120)]

MIB = 1024 * 1024
HEARTBEAT_S = 3600.0


def price_body(host: str, seq: int, price: Any = 5.0, **offer: Any) -> dict[str, Any]:
    cpu = {"capacity": 2000, "price": price, "unit_price": 0.0025, "utilization": 0.5,
           "bidders": 2, **offer}
    return {"host": host, "seq": seq, "heartbeat_s": HEARTBEAT_S, "name": "h",
            "driver": "simulated", "resources": {"cpu": cpu}}


@dataclass
class SLSWorld(World):
    sls: SLSService
    honest: dict[str, Any] = field(default_factory=dict)

    @property
    def rogue(self) -> Identity:
        return self.cast.hosts[2]

    @property
    def rogue_subject(self) -> str:
        return subjects.price(subject_id(self.rogue.public_key))

    def outcomes(self) -> int:
        return sum(self.sls.ingest.counters.values())

    def view(self) -> dict[str, Any]:
        """What the registry says of the honest hosts."""
        now = time.time_ns()
        out = {}
        for i in (0, 1):
            host = self.sls.registry.host(self.cast.host_id(i), now)
            out[host["host"]] = (host["public_key"], host["seq"], host["updates"],
                                 host["last_seen_ns"], host["resources"]["cpu"]["price"],
                                 host["resources"]["cpu"]["capacity"])
        return out

    async def publish(self, identity: Identity, subject: str, raw: bytes) -> None:
        """Publish raw bytes as ``identity`` and wait until the SLS has counted them."""
        before = self.outcomes()
        nc = (await self.bus(identity)).nc
        await nc.publish(subject, raw)
        await nc.flush()
        await wait_for(lambda: self.outcomes() > before)

    async def rejected(self, raw: bytes, *codes: str, subject: str | None = None,
                       identity: Identity | None = None) -> None:
        counters = self.sls.ingest.counters
        before = {c: counters[c] for c in codes}
        await self.publish(identity or self.rogue, subject or self.rogue_subject, raw)
        assert any(counters[c] > before[c] for c in codes), (codes, dict(counters))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[SLSWorld]:
    cast = Cast()
    async with secure_server(tmp_path, cast) as server, \
            launch_sls(server.url, cast.sls, SLSConfig(snapshot_s=3600.0)) as running:
        w = SLSWorld(cast, server, running.service)
        try:
            for i in (0, 1):  # two honest hosts, registered by signed price updates
                host = cast.hosts[i]
                await w.publish(host, subjects.price(cast.host_id(i)),
                                seal(host, "price", price_body(cast.host_id(i), 10),
                                     subject=subjects.price(cast.host_id(i))))
            assert w.sls.ingest.counters["accepted"] == 2
            yield w
        finally:
            await w.close_buses()


async def test_forged_replayed_stale_and_malformed_prices_are_dropped(world: SLSWorld) -> None:
    w = world
    h0, rogue_id = w.cast.host_id(0), subject_id(w.rogue.public_key)
    honest = w.cast.hosts[0]
    captured = seal(honest, "price", price_body(h0, 11, 6.0), subject=subjects.price(h0))
    await w.publish(honest, subjects.price(h0), captured)
    before = w.view()
    # the same bytes again on the honest host's subject (a replay on the wire)
    await w.rejected(captured, "replayed", subject=subjects.price(h0), identity=honest)
    # ... and on the rogue's subject: signed for another host
    await w.rejected(captured, "wrong_subject")
    # the rogue names the honest host: in the subject it signed, or in the body
    await w.rejected(seal(w.rogue, "price", price_body(h0, 99), subject=subjects.price(h0)),
                     "wrong_subject")
    await w.rejected(seal(w.rogue, "price", price_body(h0, 99), subject=w.rogue_subject),
                     "forbidden")
    # forged: the honest host's key in the header, the rogue's signature (and a log line)
    with capture_logs() as logs:
        await w.rejected(forged(honest, w.rogue, "price", price_body(rogue_id, 5),
                                w.rogue_subject), "bad_signature")
    assert any(e.get("code") == "bad_signature" and e.get("subject") == w.rogue_subject
               for e in logs), logs
    # signed by a key that is not the rogue's (one that cannot even connect)
    stranger = Identity.generate()
    await w.rejected(seal(stranger, "price", price_body(subject_id(stranger.public_key), 5),
                          subject=w.rogue_subject), "forbidden")
    # stale and future timestamps
    now = time.time_ns()
    for ts in (now - 61 * NS, now + 61 * NS, 0):
        await w.rejected(seal(w.rogue, "price", price_body(rogue_id, 5), subject=w.rogue_subject,
                              ts_ns=ts), "stale")
    # bodies: NaN and infinite prices, negative or huge numbers, unknown resources
    nan, inf = float("nan"), float("inf")
    bad_bodies = [
        price_body(rogue_id, 5, nan), price_body(rogue_id, 5, inf), price_body(rogue_id, 5, -1.0),
        price_body(rogue_id, 5, utilization=1.5), price_body(rogue_id, 5, utilization=nan),
        price_body(rogue_id, 5, capacity=-1), price_body(rogue_id, 5, capacity=2**63),
        price_body(rogue_id, 5, capacity=1.5), price_body(rogue_id, 5, bidders=-1),
        price_body(rogue_id, 5, unit_price=inf), price_body(rogue_id, 5, price="5"),
        {**price_body(rogue_id, 5), "seq": -1}, {**price_body(rogue_id, 5), "seq": 2**64 - 1},
        {**price_body(rogue_id, 5), "heartbeat_s": 0.0},
        {**price_body(rogue_id, 5), "heartbeat_s": nan},
        {**price_body(rogue_id, 5), "heartbeat_s": 1e9},
        {**price_body(rogue_id, 5), "resources": {"gpu": {"capacity": 1}}},
        {**price_body(rogue_id, 5), "resources": ["cpu"]},
        {**price_body(rogue_id, 5), "name": "n" * 1000},
        {**price_body(rogue_id, 5), "host": 5},
    ]
    for body in bad_bodies:
        await w.rejected(seal(w.rogue, "price", body, subject=w.rogue_subject), "malformed")
    # kinds that are not a price, sizes and nesting
    await w.rejected(seal(w.rogue, "alloc", price_body(rogue_id, 5), subject=w.rogue_subject),
                     "unknown_kind")
    await w.rejected(padded(w.rogue, "price", w.rogue_subject, price_body(rogue_id, 5), MIB + 1),
                     "too_large")
    await w.rejected(seal(w.rogue, "price", {**price_body(rogue_id, 5), "x": nested(30)},
                          subject=w.rogue_subject), "too_deep")
    await w.rejected(deep_msgpack(w.rogue, "price", w.rogue_subject, 200_000),
                     "too_deep", "malformed")
    await w.rejected(b"\x00" * 200, "malformed")
    assert w.view() == before
    assert subject_id(w.rogue.public_key) not in w.sls.registry.live_hosts(time.time_ns())
    # at the size limit a well-formed update is accepted (extra fields are ignored)
    await w.publish(w.rogue, w.rogue_subject,
                    padded(w.rogue, "price", w.rogue_subject, price_body(rogue_id, 5), MIB))
    assert rogue_id in w.sls.registry.live_hosts(time.time_ns())
    # an older seq than the one held is ignored
    await w.rejected(seal(w.rogue, "price", price_body(rogue_id, 4), subject=w.rogue_subject),
                     "out_of_order")
    assert w.view() == before


async def test_hostile_queries_get_their_codes(world: SLSWorld) -> None:
    w = world
    user = w.cast.users[0]
    nc = (await w.bus(user)).nc
    key = w.cast.sls.public_key
    query, host = subjects.sls("query"), subjects.sls("host")
    before = w.view()
    nan = float("nan")
    for body in ({"resource": "gpu"}, {"resource": ["cpu"]}, {"resource": {"x": 1}},
                 {"sort": "nope"}, {"sort": ["price"]}, {"statistics": "yes"},
                 {"min_capacity": -1}, {"min_capacity": 2**64 - 1}, {"min_capacity": 1.5},
                 {"max_unit_price": nan}, {"max_price": float("inf")}, {"max_price": "1"},
                 {"offset": -1}, {"offset": 2**63}, {"limit": -1}, {"limit": 10**9},
                 {"limit": True}):
        await expect(nc, query, seal(user, "sls.query", body, subject=query), key, "malformed")
    for body in ({"host": "nohost"}, {"host": "x" * 64}, {"host": w.cast.host_id(2)}):
        await expect(nc, host, seal(user, "sls.host", body, subject=host), key, "unknown_host")
    for body in ({"host": ""}, {"host": "x" * 65}, {"host": 5}, {"host": None}, {}):
        await expect(nc, host, seal(user, "sls.host", body, subject=host), key, "malformed")
    await expect(nc, query, seal(user, "sls.host", {"host": "x"}, subject=query), key,
                 "unknown_kind")
    await expect(nc, query, seal(user, "sls.query", {}, subject=host), key, "wrong_subject")
    await expect(nc, query, seal(user, "sls.query", {}, subject=query,
                                 ts_ns=time.time_ns() - 61 * NS), key, "stale")
    raw = seal(user, "sls.query", {}, subject=query)
    assert code(await call(nc, query, raw, key)) == "ok"
    await expect(nc, query, raw, key, "replayed")
    await expect(nc, query, forged(w.cast.users[1], user, "sls.query", {}, query), key,
                 "bad_signature")
    await expect(nc, query, padded(user, "sls.query", query, {}, MIB + 1), key, "too_large")
    await expect(nc, query, deep_msgpack(user, "sls.query", query, 200_000), key,
                 "too_deep", "malformed")
    assert w.view() == before
    rows = await SLSClient(await w.bus(user)).query("cpu")
    assert {r["host"] for r in rows} == {w.cast.host_id(0), w.cast.host_id(1)}


async def test_ten_thousand_random_price_events_and_queries(world: SLSWorld) -> None:
    w = world
    rogue_id = subject_id(w.rogue.public_key)
    values = (rogue_id, w.cast.host_id(0), 1.0, 0.5, 2000, "cpu", "memory")
    events = Fuzzer(w.rogue, [Target(w.rogue_subject, "price", price_body(rogue_id, 20))],
                    values=values,
                    other_subjects=(subjects.price(w.cast.host_id(0)),
                                    subjects.alloc(rogue_id))).messages(draw_recipes())
    assert len(events) >= 10_000
    before, counted = w.view(), w.outcomes()
    nc = (await w.bus(w.rogue)).nc
    for subject, raw in events:
        await nc.publish(subject, raw)
    await nc.flush()
    await wait_for(lambda: w.outcomes() - counted >= len(events), timeout=60.0)
    assert w.outcomes() - counted == len(events)  # each one accepted or counted by code
    assert w.view() == before
    print("price events by outcome:", dict(w.sls.ingest.counters))

    attacker = w.cast.agents[0]
    bus = await w.bus(attacker)
    targets = [
        Target(subjects.sls("query"), "sls.query",
               {"resource": "cpu", "min_capacity": 0, "max_unit_price": 1.0, "max_price": 10.0,
                "sort": "capacity_per_price", "offset": 0, "limit": 10, "statistics": True}),
        Target(subjects.sls("host"), "sls.host", {"host": w.cast.host_id(0)}),
    ]
    items = Fuzzer(attacker, targets, values=values,
                   other_subjects=(subjects.SLS_SNAPSHOT,)).messages(draw_recipes())
    w.sls.service.set_rate_limit(None)  # limits: test_hostile_flood.py
    replies = await flood(bus.nc, bus.inbox_prefix, items, w.cast.sls.public_key)
    assert_no_success_except(items, replies, {t.subject for t in targets})
    counts = tally(replies)
    print("replies by code:", dict(counts))
    for expected in ("bad_signature", "malformed", "stale", "replayed", "ok"):
        assert counts[expected] > 0, counts
    assert w.view() == before
    assert len(await SLSClient(bus).query("cpu")) >= 2
