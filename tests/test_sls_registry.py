"""The SLS registry core (sans-IO): updates, ordering, expiry, availability, queries."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tycoon.bus.keys import Identity, subject_id
from tycoon.errors import Rejected
from tycoon.sls.query import Query, host_request
from tycoon.sls.registry import Registry
from tycoon.sls.update import PriceUpdate, parse_update
from tycoon.units import NS

T0 = 1_800_000_000 * NS


def offer(capacity: int, price: float, util: float = 0.5, bidders: int = 1) -> dict[str, Any]:
    return {
        "capacity": capacity,
        "price": price,
        "unit_price": price / capacity if capacity else 0.0,
        "utilization": util,
        "bidders": bidders,
    }


def body(ident: Identity, seq: int, *, hb: float = 1.0, name: str = "h", **res: Any) -> dict:
    return {
        "host": subject_id(ident.public_key),
        "seq": seq,
        "heartbeat_s": hb,
        "name": name,
        "driver": "sim",
        "resources": res or {"cpu": offer(1000, 1.0)},
    }


def feed(reg: Registry, ident: Identity, seq: int, t_s: float, **kw: Any) -> bool:
    t = T0 + int(t_s * NS)
    return reg.ingest(parse_update(body(ident, seq, **kw)), sender=ident.public_key, ts_ns=t,
                      now_ns=t)


def at(t_s: float) -> int:
    return T0 + int(t_s * NS)


def test_latest_update_wins_and_older_is_ignored() -> None:
    reg = Registry()
    host = Identity.generate()
    assert feed(reg, host, 5, 0, cpu=offer(1000, 2.0))
    assert not feed(reg, host, 4, 0.5, cpu=offer(1000, 99.0))  # out of order
    assert not feed(reg, host, 5, 0.6, cpu=offer(1000, 99.0))  # repeated seq
    assert reg.counters["out_of_order"] == 2
    row = reg.query(Query(), at(1))["rows"][0]
    assert row["price"] == 2.0 and row["seq"] == 5
    assert feed(reg, host, 6, 1, cpu=offer(2000, 3.0))
    row = reg.query(Query(), at(1))["rows"][0]
    assert (row["capacity"], row["price"], row["unit_price"]) == (2000, 3.0, 3.0 / 2000)
    assert row["statistics"]["windows"]["minute"]["count"] == 2  # the ignored ones are not samples


def test_only_the_hosts_key_speaks_for_it() -> None:
    reg = Registry()
    host, thief = Identity.generate(), Identity.generate()
    forged = body(host, 1)
    with pytest.raises(Rejected) as info:
        reg.ingest(parse_update(forged), sender=thief.public_key, ts_ns=T0, now_ns=T0)
    assert info.value.code == "forbidden"
    assert reg.counters["forbidden"] == 1
    assert reg.query(Query(), T0)["total"] == 0


def test_expiry_after_missed_heartbeats() -> None:
    reg = Registry(missed_heartbeats=3)
    host = Identity.generate()
    feed(reg, host, 1, 0, hb=2.0)
    hid = subject_id(host.public_key)
    assert reg.live_hosts(at(5.9)) == [hid]
    assert reg.query(Query(), at(5.9))["total"] == 1
    assert reg.live_hosts(at(6.0)) == []  # 3 heartbeats of 2 s missed
    assert reg.query(Query(), at(6.0))["total"] == 0
    with pytest.raises(Rejected) as info:
        reg.host(hid, at(6.0))
    assert info.value.code == "unknown_host"
    assert reg.expire(at(6.0)) == ([hid], [])
    assert reg.expire(at(7.0)) == ([], [])  # reported once
    # it comes back: live again, first seen kept, the gap counts against availability
    feed(reg, host, 2, 16, hb=2.0)
    full = reg.host(hid, at(16))
    assert full["first_seen_ns"] == T0
    assert full["registered_s"] == pytest.approx(6.0)
    assert full["availability"] == pytest.approx(6.0 / 16.0)


def test_availability_counts_time_between_heartbeats() -> None:
    reg = Registry(missed_heartbeats=3)
    host = Identity.generate()
    hid = subject_id(host.public_key)
    assert feed(reg, host, 1, 0, hb=1.0)
    assert reg.host(hid, at(0))["availability"] == 1.0  # one update: fully available
    for seq, t in enumerate([1, 2, 4.5, 5], start=2):  # a 2.5 s gap is within 3 heartbeats
        feed(reg, host, seq, t, hb=1.0)
    assert reg.host(hid, at(5))["availability"] == 1.0
    feed(reg, host, 6, 15, hb=1.0)  # 10 s gap: registered for 3 s of it
    assert reg.host(hid, at(15))["availability"] == pytest.approx(8.0 / 15.0)


def test_forget_long_gone_hosts_frees_their_slot() -> None:
    reg = Registry(forget_after_s=60, slots=2)
    hosts = [Identity.generate() for _ in range(3)]
    for h in hosts:
        feed(reg, h, 1, 0, hb=1.0)
    assert len(reg) == 3
    expired, forgotten = reg.expire(at(100))
    assert len(expired) == 3 and len(forgotten) == 3 and len(reg) == 0
    feed(reg, hosts[0], 1, 101, hb=1.0)  # a fresh start after being forgotten
    assert reg.host(subject_id(hosts[0].public_key), at(101))["first_seen_ns"] == at(101)


def make_market(n: int = 40, seed: int = 0) -> tuple[Registry, list[Identity]]:
    rng = np.random.default_rng(seed)
    reg = Registry()
    hosts = [Identity.generate() for _ in range(n)]
    for i, h in enumerate(hosts):
        cap = int(rng.choice([1000, 2000, 4000]))
        price = float(rng.choice([0.0, 1.0, 2.0, 5.0]))
        feed(reg, h, 1, 0, name=f"h{i}", cpu=offer(cap, price), memory=offer(2**30, price * 2))
    return reg, hosts


def test_query_filters_sort_and_page() -> None:
    reg, _ = make_market()
    now = at(1)
    everything = reg.query(Query(limit=1000, statistics=False), now)
    rows = everything["rows"]
    assert everything["total"] == len(rows) == 40
    keys = [(r["unit_price"], -r["capacity"], r["host"]) for r in rows]
    assert keys == sorted(keys)  # capacity per price, best first; ties by capacity, host id
    assert "statistics" not in rows[0]
    cheap = reg.query(Query(max_unit_price=1.0 / 1000, min_capacity=2000, limit=500), now)
    assert cheap["total"] == len(cheap["rows"])
    assert all(r["unit_price"] <= 0.001 and r["capacity"] >= 2000 for r in cheap["rows"])
    expected = [r for r in rows if r["unit_price"] <= 0.001 and r["capacity"] >= 2000]
    assert [r["host"] for r in cheap["rows"]] == [r["host"] for r in expected]
    by_price = reg.query(Query(sort="price", limit=1000, statistics=False), now)["rows"]
    assert [r["price"] for r in by_price] == sorted(r["price"] for r in rows)
    by_cap = reg.query(Query(sort="capacity", limit=1000, statistics=False), now)["rows"]
    assert [r["capacity"] for r in by_cap] == sorted((r["capacity"] for r in rows), reverse=True)
    pages = [reg.query(Query(offset=o, limit=7, statistics=False), now) for o in range(0, 42, 7)]
    assert [r["host"] for p in pages for r in p["rows"]] == [r["host"] for r in rows]
    assert all(p["total"] == 40 for p in pages)
    mem = reg.query(Query(resource="memory", limit=1), now)["rows"][0]
    assert mem["resource"] == "memory" and mem["capacity"] == 2**30
    assert reg.query(Query(resource="disk"), now)["total"] == 0  # nobody sells disk


def test_top_k_with_ties_matches_full_sort() -> None:
    reg, _ = make_market(200, seed=4)  # prices from a few values: many ties
    now = at(1)
    full = reg.query(Query(limit=1000, statistics=False), now)["rows"]
    for k in (1, 5, 37, 100):
        top = reg.query(Query(limit=k, statistics=False), now)["rows"]
        assert [r["host"] for r in top] == [r["host"] for r in full[:k]]


def test_random_ties_keep_the_order_and_spread_equal_hosts() -> None:
    reg, _ = make_market(200, seed=4)  # prices from a few values: many ties
    now = at(1)
    full = reg.query(Query(limit=1000, statistics=False), now)["rows"]

    def key(r: dict[str, Any]) -> tuple[float, int]:
        return r["unit_price"], -r["capacity"]

    firsts = set()
    for _ in range(20):
        top = reg.query(Query(limit=37, statistics=False, ties="random"), now)["rows"]
        # The same sort keys as the host-ordered page; which of the equal hosts fill
        # them varies from query to query.
        assert [key(r) for r in top] == [key(r) for r in full[:37]]
        tied = {r["host"] for r in full if key(r) == key(top[-1])}
        assert {r["host"] for r in top if key(r) == key(top[-1])} <= tied
        firsts.add(tuple(r["host"] for r in top))
    assert len(firsts) > 1
    with pytest.raises(Rejected, match="ties"):
        Query.from_body({"ties": "alphabetical"})


def test_rows_carry_statistics_and_host_view() -> None:
    reg = Registry()
    host = Identity.generate()
    prices = [1.0, 2.0, 4.0, 3.0]
    for seq, p in enumerate(prices, start=1):
        feed(reg, host, seq, seq, cpu=offer(1000, p), net=offer(10**9, p))
    row = reg.query(Query(), at(5))["rows"][0]
    minute = row["statistics"]["windows"]["minute"]
    assert minute["count"] == 4 and minute["mean"] == pytest.approx(np.mean(prices))
    assert sum(row["statistics"]["histogram"]["counts"]) == 4
    assert row["public_key"] == host.public_key and row["name"] == "h"
    full = reg.host(subject_id(host.public_key), at(5))
    assert set(full["resources"]) == {"cpu", "net"}
    assert full["resources"]["net"]["statistics"]["windows"]["day"]["var"] == pytest.approx(
        np.var(prices)
    )
    assert full["updates"] == 4


def test_snapshot_summarises_the_market() -> None:
    reg, _ = make_market(10, seed=1)
    snap = reg.snapshot(at(1))
    assert snap["hosts"] == 10
    cpu = snap["resources"]["cpu"]
    rows = reg.query(Query(limit=100, statistics=False), at(1))["rows"]
    assert cpu["hosts"] == 10
    assert cpu["capacity"] == sum(r["capacity"] for r in rows)
    assert cpu["price"] == pytest.approx(sum(r["price"] for r in rows))
    assert cpu["mean_unit_price"] == pytest.approx(np.mean([r["unit_price"] for r in rows]))
    assert snap["resources"]["disk"]["hosts"] == 0
    assert reg.snapshot(at(100))["hosts"] == 0


def test_replicas_with_different_batching_agree() -> None:
    a, b = Registry(flush_at=1), Registry(flush_at=10_000)
    rng = np.random.default_rng(9)
    hosts = [Identity.generate() for _ in range(20)]
    for step in range(30):
        for h in hosts:
            t = at(step * 10)
            bd = body(h, step + 1, cpu=offer(1000, float(rng.gamma(2.0, 2.0))))
            for reg in (a, b):
                reg.ingest(parse_update(bd), sender=h.public_key, ts_ns=t, now_ns=t)
        if step % 7 == 0:
            a.query(Query(), at(step * 10))  # reads force flushes at other points
    assert a.query(Query(limit=20), at(300)) == b.query(Query(limit=20), at(300))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", -1),
        ("seq", 1.0),
        ("heartbeat_s", 0.0),
        ("heartbeat_s", float("nan")),
        ("name", 5),
        ("resources", {"gpu": offer(1, 1.0)}),
        ("resources", {"cpu": {"capacity": 1}}),
        ("resources", {"cpu": offer(-1, 1.0)}),
        ("resources", {"cpu": {**offer(10, 1.0), "price": float("inf")}}),
        ("resources", {"cpu": {**offer(10, 1.0), "price": -1.0}}),
        ("resources", {"cpu": {**offer(10, 1.0), "price": 1e300}}),  # beyond any money
        ("resources", {"cpu": {**offer(10, 1.0), "utilization": 1.5}}),
        ("resources", {"cpu": {**offer(10, 1.0), "bidders": True}}),
        ("resources", []),
    ],
)
def test_malformed_updates_are_refused(field: str, value: Any) -> None:
    """Refused before the registry, which takes parsed updates only (the ingest path counts
    them: test_sls_ingest.test_every_refusal_is_counted)."""
    host = Identity.generate()
    bad = body(host, 1)
    bad[field] = value
    with pytest.raises(Rejected) as info:
        parse_update(bad)
    assert info.value.code == "malformed"


def test_price_update_round_trip() -> None:
    host = Identity.generate()
    raw = body(host, 3, cpu=offer(1000, 2.0), disk=offer(10**12, 0.0))
    update = PriceUpdate.from_body(raw)
    assert update.resources["cpu"].unit_price == 0.002
    assert update.to_body() == raw


def test_query_body_validation() -> None:
    assert Query.from_body({}) == Query()
    q = Query.from_body({"resource": "net", "max_unit_price": 1, "sort": "price", "limit": 5})
    assert (q.resource, q.max_unit_price, q.sort, q.limit) == ("net", 1.0, "price", 5)
    assert Query.from_body(q.to_body()) == q
    assert Query.from_body({"limit": 1000, "statistics": False}).limit == 1000
    for bad in (
        {"resource": "gpu"},
        {"sort": "random"},
        {"limit": 100_000},
        {"offset": -1},
        {"min_capacity": "big"},
        {"max_unit_price": float("nan")},
        {"statistics": 1},
        {"limit": 501},
    ):
        with pytest.raises(Rejected):
            Query.from_body(bad)
    with pytest.raises(Rejected):
        Query(limit=-1)
    with pytest.raises(Rejected):
        host_request({"host": 7})
