"""Bundles on a real, permissioned nats-server with JetStream: owners put and get their own
objects through the store's bundle service, a host reads a job's bundle and writes its
results back with the account's signed host.exec as proof, and every attack is refused or
harmless: another account's bucket, forged or misused proofs, any JetStream right for a
user or a host (stream administration, steered server answers), a lying digest, oversized
uploads (docs/security.md, "Bundles")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nats.js.api import StreamConfig

from tycoon.bundles import client, names
from tycoon.bundles.buckets import BucketMaker
from tycoon.bundles.pack import pack
from tycoon.bundles.service import BundleService
from tycoon.bundles.state import StoreState
from tycoon.bus import subjects
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.errors import Rejected
from tycoon.natsconf import Principal, render_principals
from tycoon.natsserver import NatsServer, free_port

pytestmark = pytest.mark.nats
MAX_BYTES = 1 << 20
ROLES = {"operator": "operator", "host": "host", "alice": "user", "mallory": "user",
         "agent": "agent", "bank": "bank", "store": "store"}


@dataclass
class Market:
    server: NatsServer
    bus: dict[str, Bus]
    service: BundleService
    ids: dict[str, Identity] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Bus:
        return self.bus[name]

    def id(self, bus: Bus) -> str:
        return subject_id(bus.identity.public_key)

    async def messages(self, stream: str) -> int:
        return (await self.bus["operator"].nc.jetstream().stream_info(stream)).state.messages

    async def streams(self) -> list[str]:
        return [s.config.name for s in await self.bus["operator"].nc.jetstream().streams_info()]


@pytest.fixture
async def market(tmp_path: Path) -> AsyncIterator[Market]:
    ids = {n: Identity.generate() for n in ROLES}
    principals = [Principal(i.public_key, ROLES[n], n,
                            frozenset({"jetstream"}) if n == "operator" else frozenset())
                  for n, i in ids.items()]
    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(render_principals(principals, port=port, jetstream_dir=str(tmp_path / "js")))
    async with NatsServer(port=port, config=conf) as server:
        buses = {n: await open_bus(server.url, i) for n, i in ids.items()}
        state = StoreState(tmp_path / "store.db")
        m = Market(server, buses, BundleService(buses["store"], state=state), ids)
        try:
            for who in ("alice", "mallory", "agent"):  # as the store makes them (first put)
                await client.ensure_bucket(m.operator, m.id(buses[who]), max_bytes=MAX_BYTES)
            js = m.operator.nc.jetstream()
            for name, subject in (("PRICES", "tycoon.price.>"),
                                  ("SETTLEMENTS", "tycoon.settlement.>")):
                await js.add_stream(StreamConfig(name=name, subjects=[subject]))
            for _ in range(3):
                await m.host.nc.publish(f"tycoon.price.{m.id(m.host)}", b"a price")
            await m.host.nc.flush()
            await m.service.start()
            yield m
        finally:
            await m.service.stop()
            for bus in buses.values():
                with contextlib.suppress(Exception):
                    await bus.close()
            state.close()


async def refused(bus: Bus, subject: str) -> None:
    """The server refused ``bus``'s publish on ``subject`` (a permissions violation)."""
    want = f'publish to "{subject.lower()}"'
    with contextlib.suppress(Exception):
        await bus.nc.flush(timeout=2)
    for _ in range(100):
        if want in str(bus.nc.last_error).lower():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no permission error for {subject}; last: {bus.nc.last_error}")


def exec_by(account: Identity, host: Bus, **body: object) -> bytes:
    """The account's signed host.exec to ``host``: a host's proof at the store."""
    return seal(account, "host.exec", {"argv": ["true"], **body},
                subject=subjects.host_op(subject_id(host.identity.public_key), "exec"))


def tree(root: Path, text: str = "hello") -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text(text)
    (root / "b.bin").write_bytes(os.urandom(300_000))  # three chunks
    return root


async def test_owners_put_and_get_hosts_read_and_write_back(market: Market,
                                                             tmp_path: Path) -> None:
    m = market
    digest = await client.push(m.alice, tree(tmp_path / "src"))
    assert await client.push(m.alice, tmp_path / "src") == digest  # stored once
    assert await m.messages(names.stream(m.id(m.alice))) == 4  # three chunks and the meta
    out = await client.pull(m.alice, digest, tmp_path / "back")
    assert (out / "sub" / "a.txt").read_text() == "hello"
    assert (out / "b.bin").read_bytes() == (tmp_path / "src" / "b.bin").read_bytes()
    alice = m.ids["alice"]
    proof = exec_by(alice, m.host, bundle=digest, collect=["out"])
    data = await client.fetch_bytes(m.host, digest, account=alice.public_key, proof=proof)
    assert data == pack(tmp_path / "src")  # a host reads the job's bundle with the proof
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "out.txt").write_text("42")
    result = await client.push_bytes(m.host, pack(tmp_path / "results"),
                                     account=alice.public_key, proof=proof)
    assert (await client.pull(m.alice, result, tmp_path / "got") / "out.txt").read_text() == "42"
    assert await client.push(m.agent, tmp_path / "src") == digest  # an agent has its own
    empty = await client.push_bytes(m.alice, b"")
    assert await client.fetch_bytes(m.alice, empty) == b""
    with pytest.raises(Rejected, match="unknown_bundle"):
        await client.fetch_bytes(m.alice, "0" * 64)


async def test_another_accounts_bucket_is_out_of_reach(market: Market, tmp_path: Path) -> None:
    m = market
    alice = m.id(m.alice)
    digest = await client.push(m.alice, tree(tmp_path / "src"))
    before = await m.messages(names.stream(alice))
    with pytest.raises(Rejected, match="unknown_bundle"):  # served from mallory's own bucket
        await client.fetch_bytes(m.mallory, digest)
    for bus in (m.mallory, m.host):
        for subject in (names.msg_get(alice), names.chunks(alice, "x"),
                        names.metas(alice, "eA==")):
            await bus.nc.publish(subject, b"{}")
            await refused(bus, subject)
    assert await m.messages(names.stream(alice)) == before
    assert await client.push(m.mallory, tmp_path / "src") == digest  # mallory's own copy
    assert await client.fetch_bytes(m.alice, digest)


async def test_users_and_hosts_hold_no_jetstream_right(market: Market) -> None:
    m = market
    mine, alice = names.stream(m.id(m.mallory)), names.stream(m.id(m.alice))
    api = "$JS.API"
    for subject, body in (
        (f"{api}.STREAM.CREATE.OBJ_bundles-new", {"name": "OBJ_bundles-new"}),
        (f"{api}.STREAM.UPDATE.{mine}", {"name": mine, "max_bytes": -1}),
        (f"{api}.STREAM.PURGE.{mine}", {}),
        (f"{api}.STREAM.PURGE.PRICES", {}),
        (f"{api}.STREAM.DELETE.{alice}", {}),
        (f"{api}.STREAM.MSG.DELETE.{mine}", {"seq": 1}),
        (f"{api}.STREAM.INFO.{mine}", {}),
        (f"{api}.DIRECT.GET.{mine}", {"seq": 1}),
        (f"{api}.CONSUMER.CREATE.{mine}", {"stream_name": mine}),
        (f"{api}.STREAM.MSG.GET.{mine}", {"seq": 1}),  # not even its own bucket's messages
        (names.chunks(m.id(m.mallory), "x"), {}),
    ):
        for bus in (m.mallory, m.agent, m.host):
            await bus.nc.publish(subject, json.dumps(body).encode(),
                                 reply="tycoon.settlement.a.b")  # a steered answer, if any
            await refused(bus, subject)
    await asyncio.sleep(0.2)
    assert await m.messages("PRICES") == 3 and await m.messages("SETTLEMENTS") == 0
    assert (await m.operator.nc.jetstream().stream_info(mine)).config.max_bytes == MAX_BYTES
    assert "OBJ_bundles-new" not in await m.streams()


async def test_why_users_hold_none_steered_answers(market: Market) -> None:
    """A JetStream answer goes to any reply subject the request names: a message get's
    answer lands in another stream, a direct get's answer is executed as an API request.
    The operator (who holds the rights) shows it; users and hosts can do neither."""
    m = market
    js = m.operator.nc.jetstream()
    await m.store.nc.jetstream().publish(names.chunks(m.id(m.alice), "x"), b"stored")
    await m.operator.nc.publish(names.msg_get(m.id(m.alice)), b'{"seq": 1}',
                                reply="tycoon.settlement.junk.junk")
    alloc = f"tycoon.alloc.{m.id(m.host)}"
    await js.add_stream(StreamConfig(name="SCRATCH", subjects=[alloc], allow_direct=True))
    await m.host.nc.publish(alloc, b"{}")
    await m.host.nc.flush()
    await asyncio.sleep(0.1)
    await m.operator.nc.publish("$JS.API.DIRECT.GET.SCRATCH", b'{"seq": 1}',
                                reply="$JS.API.STREAM.DELETE.SCRATCH")
    await asyncio.sleep(0.3)
    assert await m.messages("SETTLEMENTS") == 1  # junk in the bank's log
    assert "SCRATCH" not in await m.streams()  # deleted by its own answer


async def test_lying_digests_and_oversized_uploads_store_nothing(market: Market,
                                                                 tmp_path: Path) -> None:
    m = market
    mine = names.stream(m.id(m.mallory))
    body = {"upload": "u" * 22, "index": 0, "data": b"real bytes", "digest": "f" * 64}
    with pytest.raises(Rejected, match="bad_digest"):
        await m.mallory.request(names.request("put"), "bundle.put", body)
    with pytest.raises(Rejected, match="unknown_bundle"):
        await client.fetch_bytes(m.mallory, "f" * 64)
    for bad in ({**body, "upload": "../x"}, {**body, "digest": "F" * 64},
                {**body, "index": -1}):
        with pytest.raises(Rejected, match="malformed"):
            await m.mallory.request(names.request("put"), "bundle.put", bad)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(MAX_BYTES + 1000))
    with pytest.raises(Rejected) as caught:
        await client.push(m.mallory, big)
    assert caught.value.code == "bundle_too_large"
    info = await m.operator.nc.jetstream().stream_info(mine)
    assert info.state.bytes < 4096  # what was sent is rolled up into empty messages
    small = tmp_path / "small"
    small.write_text("fits")
    digest = await client.push(m.mallory, small)
    assert (await client.pull(m.mallory, digest, tmp_path / "o") / "small").read_text() == "fits"


async def test_the_store_makes_the_bucket_at_the_first_push(market: Market,
                                                              tmp_path: Path) -> None:
    """No bucket yet: the first push makes it (capped in size, no direct gets); the store
    counts the buckets it made and refuses past ``max_buckets``; the bank holds no
    object-store right any more."""
    m = market
    carol = m.agent
    account = m.id(carol)
    await m.operator.nc.jetstream().delete_stream(names.stream(account))
    m.service.make_bucket = BucketMaker(m.store.nc, m.service.state, max_bytes=MAX_BYTES,
                                        max_buckets=1)
    (tmp_path / "f").write_text("x")
    digest = await client.push(carol, tmp_path / "f")
    info = await m.operator.nc.jetstream().stream_info(names.stream(account))
    assert info.config.max_bytes == MAX_BYTES and not info.config.allow_direct
    assert await client.fetch_bytes(carol, digest)
    assert m.service.state.has_bucket(account) and m.service.state.buckets() == 1
    await m.operator.nc.jetstream().delete_stream(names.stream(m.id(m.mallory)))
    with pytest.raises(Rejected) as caught:  # a second bucket: over this store's maximum
        await client.push(m.mallory, tmp_path / "f")
    assert caught.value.code == "forbidden" and "maximum" in caught.value.message
    await m.bank.nc.publish(names.chunks(account, "x"), b"junk")
    await refused(m.bank, names.chunks(account, "x"))


async def test_fresh_keys_pushing_at_once_make_buckets_no_faster_than_the_rate(
        market: Market, tmp_path: Path) -> None:
    """Attack: many keys (a broker signs for job keys it makes) each push a first bundle at
    once to have the store make bucket after bucket. Past the burst the store refuses with
    rate_limited and makes nothing; an account whose bucket it made before is not held up."""
    m = market
    js = m.operator.nc.jetstream()
    for who in ("alice", "mallory", "agent"):
        await js.delete_stream(names.stream(m.id(m.bus[who])))
    m.service.make_bucket = BucketMaker(m.store.nc, m.service.state, max_bytes=MAX_BYTES,
                                        rate=0.001, burst=1)
    (tmp_path / "f").write_text("x")
    await client.push(m.alice, tmp_path / "f")  # the burst: one bucket
    for attacker in (m.mallory, m.agent):
        with pytest.raises(Rejected) as caught:
            await client.push(attacker, tmp_path / "f")
        assert caught.value.code == "rate_limited", caught.value
    assert m.service.state.buckets() == 1
    made = await m.streams()
    assert names.stream(m.id(m.alice)) in made
    assert not {names.stream(m.id(b)) for b in (m.mallory, m.agent)} & set(made)
    await js.delete_stream(names.stream(m.id(m.alice)))  # the operator deleted it
    (tmp_path / "g").write_text("y")
    assert await client.push(m.alice, tmp_path / "g")  # made again, outside the budget


async def test_a_host_needs_the_accounts_own_exec_to_it(market: Market, tmp_path: Path) -> None:
    """A host reaches an account's bucket only with that account's signed host.exec to that
    very host, naming the bundle (a get) or asking for outputs (a put)."""
    m = market
    alice, mallory = m.ids["alice"], m.ids["mallory"]
    digest = await client.push(m.alice, tree(tmp_path / "src"))
    results = pack(tree(tmp_path / "out", "results"))
    for proof, why in (
        (None, "no proof"),
        (exec_by(mallory, m.host, bundle=digest, collect=["o"]), "another account's exec"),
        (exec_by(alice, m.mallory, bundle=digest, collect=["o"]), "an exec to another host"),
        (exec_by(alice, m.host, bundle="0" * 64), "an exec naming another bundle"),
        (b"junk", "not an envelope"),
        (seal(alice, "host.jobs", {}, subject=subjects.host_op(m.id(m.host), "exec")),
         "another kind"),
    ):
        with pytest.raises(Rejected) as caught:
            await client.fetch_bytes(m.host, digest, account=alice.public_key, proof=proof)
        assert caught.value.code in ("forbidden", "malformed"), why
    for proof, why in ((None, "no proof"), (exec_by(alice, m.host, bundle=digest), "no collect"),
                       (exec_by(mallory, m.host, collect=["o"]), "another account's exec")):
        with pytest.raises(Rejected) as caught:
            await client.push_bytes(m.host, results, account=alice.public_key, proof=proof)
        assert caught.value.code in ("forbidden", "malformed"), why
    with pytest.raises(Rejected, match="unknown_bundle"):  # mallory's own exec: her bucket
        await client.fetch_bytes(m.host, digest, account=mallory.public_key,
                                 proof=exec_by(mallory, m.host, bundle=digest))
