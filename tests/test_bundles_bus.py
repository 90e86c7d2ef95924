"""Bundles on a real, permissioned nats-server with JetStream: owners put and get their own
objects, hosts read them and write results back, and every attack the permissions must stop
(another account's bucket, stream administration, steered server answers, oversized uploads)
is refused or harmless (docs/security.md, "Bundles")."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nats.js.api import StreamConfig

from tycoon.bank.client import BankClient
from tycoon.bank.ledger import Ledger
from tycoon.bank.service import BankService
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bundles import client, names
from tycoon.bundles.buckets import BucketKeeper
from tycoon.bundles.pack import pack
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import Identity, subject_id
from tycoon.errors import Rejected
from tycoon.natsconf import Principal, render_principals
from tycoon.natsserver import NatsServer, free_port

pytestmark = pytest.mark.nats
MAX_BYTES = 1 << 20


@dataclass
class Market:
    server: NatsServer
    operator: Bus
    host: Bus
    alice: Bus
    mallory: Bus
    agent: Bus
    buses: list[Bus] = field(default_factory=list)

    def id(self, bus: Bus) -> str:
        return subject_id(bus.identity.public_key)

    async def messages(self, stream: str) -> int:
        return (await self.operator.nc.jetstream().stream_info(stream)).state.messages


@pytest.fixture
async def market(tmp_path: Path) -> AsyncIterator[Market]:
    ids = {n: Identity.generate() for n in ("operator", "host", "alice", "mallory", "agent")}
    roles = {"operator": "operator", "host": "host", "alice": "user", "mallory": "user",
             "agent": "agent"}
    principals = [Principal(i.public_key, roles[n], n,
                            frozenset({"jetstream"}) if n == "operator" else frozenset())
                  for n, i in ids.items()]
    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(render_principals(principals, port=port, jetstream_dir=str(tmp_path / "js")))
    async with NatsServer(port=port, config=conf) as server:
        buses = {n: await open_bus(server.url, i) for n, i in ids.items()}
        m = Market(server, buses["operator"], buses["host"], buses["alice"], buses["mallory"],
                   buses["agent"], list(buses.values()))
        try:
            for who in (m.alice, m.mallory, m.agent):  # the privileged key makes the buckets
                await client.ensure_bucket(m.operator, m.id(who), max_bytes=MAX_BYTES)
            js = m.operator.nc.jetstream()
            await js.add_stream(StreamConfig(name="PRICES", subjects=["tycoon.price.>"]))
            for _ in range(3):
                await m.host.nc.publish(f"tycoon.price.{m.id(m.host)}", b"a price")
            await m.host.nc.flush()
            yield m
        finally:
            for bus in m.buses:
                with contextlib.suppress(Exception):
                    await bus.close()


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
    out = await client.pull(m.alice, digest, tmp_path / "back")
    assert (out / "sub" / "a.txt").read_text() == "hello"
    assert (out / "b.bin").read_bytes() == (tmp_path / "src" / "b.bin").read_bytes()
    alice = m.id(m.alice)
    data = await client.get_bytes(m.host, digest, account=alice)  # a host reads any bucket
    assert data == pack(tmp_path / "src")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "out.txt").write_text("42")
    result = await client.put_bytes(m.host, pack(tmp_path / "results"), account=alice)
    assert (await client.pull(m.alice, result, tmp_path / "got") / "out.txt").read_text() == "42"
    assert await client.push(m.agent, tmp_path / "src") == digest  # an agent has its own
    with pytest.raises(Rejected, match="unknown_bundle"):
        await client.get_bytes(m.alice, "0" * 64)


async def test_another_accounts_bucket_is_out_of_reach(market: Market, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    m = market
    alice, mallory = m.id(m.alice), m.id(m.mallory)
    digest = await client.push(m.alice, tree(tmp_path / "src"))
    before = await m.messages(names.stream(alice))
    monkeypatch.setattr(client, "TIMEOUT", 0.5)
    with pytest.raises(Rejected):  # the request never reaches JetStream
        await client.get_bytes(m.mallory, digest, account=alice)
    await refused(m.mallory, names.msg_get(alice))
    for subject in (names.chunks(alice, "x"), names.metas(alice, "eA==")):
        await m.mallory.nc.publish(subject, b"overwrite")
        await refused(m.mallory, subject)
    assert await m.messages(names.stream(alice)) == before
    # mallory's own bucket works, alice's data is still hers
    assert await client.push(m.mallory, tmp_path / "src") == digest
    assert (await client.get_bytes(m.alice, digest))[:1]
    assert await m.messages(names.stream(mallory)) > 0


async def test_users_cannot_administer_any_stream(market: Market) -> None:
    m = market
    mine, alice = names.stream(m.id(m.mallory)), names.stream(m.id(m.alice))
    api = "$JS.API"
    for subject, body in (
        (f"{api}.STREAM.CREATE.OBJ_bundles-new", {"name": "OBJ_bundles-new"}),
        (f"{api}.STREAM.CREATE.{names.stream('abcdefghijklmnop')}", {}),
        (f"{api}.STREAM.UPDATE.{mine}", {"name": mine, "max_bytes": -1}),
        (f"{api}.STREAM.PURGE.{mine}", {}),
        (f"{api}.STREAM.PURGE.{alice}", {}),
        (f"{api}.STREAM.PURGE.PRICES", {}),
        (f"{api}.STREAM.DELETE.{mine}", {}),
        (f"{api}.STREAM.DELETE.PRICES", {}),
        (f"{api}.STREAM.MSG.DELETE.{mine}", {"seq": 1}),
        (f"{api}.STREAM.INFO.{mine}", {}),
        (f"{api}.DIRECT.GET.{mine}", {"seq": 1}),
        (f"{api}.CONSUMER.CREATE.{mine}", {"stream_name": mine}),
        (f"{api}.STREAM.MSG.GET.PRICES", {"seq": 1}),
        (f"{api}.INFO", {}),
    ):
        for bus in (m.mallory, m.host):
            if bus is m.host and "MSG.GET" in subject:
                continue  # a host reads any stream's messages: bundles of every account
            await bus.nc.publish(subject, json.dumps(body).encode(), reply=bus.nc.new_inbox())
            await refused(bus, subject)
    js = m.operator.nc.jetstream()
    assert await m.messages("PRICES") == 3
    assert await m.messages(mine) == 0 and await m.messages(alice) == 0
    assert (await js.stream_info(mine)).config.max_bytes == MAX_BYTES
    assert "OBJ_bundles-new" not in [s.config.name for s in await js.streams_info()]


async def test_steered_server_answers_do_no_harm(market: Market, tmp_path: Path) -> None:
    """JetStream answers go to whatever reply subject a request names. A user's steered
    MSG.GET answers and publish acks reach no API; junk steered onto another account's meta
    subject makes that object unknown until it is pushed again, never wrong."""
    m = market
    alice, mine = m.id(m.alice), names.stream(m.id(m.mallory))
    digest = await client.push(m.alice, tree(tmp_path / "src"))
    await client.push(m.mallory, tmp_path / "src")
    meta = names.metas(alice, base64.urlsafe_b64encode(digest.encode()).decode())
    steered = ("$JS.API.STREAM.PURGE.PRICES", "$JS.API.STREAM.DELETE.PRICES",
               f"$JS.API.STREAM.PURGE.{names.stream(alice)}",
               f"$JS.API.STREAM.DELETE.{names.stream(alice)}",
               "$JS.API.STREAM.CREATE.OBJ_bundles-new", meta)
    for reply in steered:
        await m.mallory.nc.publish(names.msg_get(m.id(m.mallory)),
                                   json.dumps({"seq": 1}).encode(), reply=reply)
        await m.mallory.nc.publish(names.chunks(m.id(m.mallory), "junk"), b"x", reply=reply)
    await m.mallory.nc.flush()
    await asyncio.sleep(0.3)
    js = m.operator.nc.jetstream()
    assert await m.messages("PRICES") == 3
    assert "OBJ_bundles-new" not in [s.config.name for s in await js.streams_info()]
    assert await m.messages(mine) > 0
    with pytest.raises(Rejected) as caught:  # alice's meta is now the server's junk
        await client.get_bytes(m.host, digest, account=alice)
    assert caught.value.code == "unknown_bundle"
    assert await client.push(m.alice, tmp_path / "src") == digest  # pushing again heals it
    assert (await client.pull(m.alice, digest, tmp_path / "back") / "sub" / "a.txt").exists()
    # why no one holds a direct get: its answer, steered, is executed as an API request
    scratch = "SCRATCH"
    alloc = f"tycoon.alloc.{m.id(m.host)}"
    await js.add_stream(StreamConfig(name=scratch, subjects=[alloc], allow_direct=True))
    await m.host.nc.publish(alloc, b"{}")
    await m.host.nc.flush()
    await asyncio.sleep(0.1)
    await m.operator.nc.publish(f"$JS.API.DIRECT.GET.{scratch}", b'{"seq": 1}',
                                reply=f"$JS.API.STREAM.DELETE.{scratch}")
    await asyncio.sleep(0.3)
    assert scratch not in [s.config.name for s in await js.streams_info()]


async def test_oversized_uploads_are_refused_and_leave_little(market: Market,
                                                              tmp_path: Path) -> None:
    m = market
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(MAX_BYTES + 1000))
    with pytest.raises(Rejected) as caught:
        await client.push(m.mallory, big, limits=client.LIMITS)
    assert caught.value.code == "bundle_too_large"
    info = await m.operator.nc.jetstream().stream_info(names.stream(m.id(m.mallory)))
    assert info.state.bytes < 4096  # the chunks sent were rolled up into one empty message
    small = tmp_path / "small"
    small.write_text("fits")
    digest = await client.push(m.mallory, small)
    assert (await client.pull(m.mallory, digest, tmp_path / "o") / "small").read_text() == "fits"


async def test_the_bank_makes_the_bucket_when_it_opens_the_account(tmp_path: Path) -> None:
    ids = {n: Identity.generate() for n in ("bank", "operator", "carol")}
    principals = [Principal(ids["bank"].public_key, "bank", "bank"),
                  Principal(ids["operator"].public_key, "operator", "operator",
                            frozenset({"jetstream"})),
                  Principal(ids["carol"].public_key, "user", "carol")]
    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(render_principals(principals, port=port, jetstream_dir=str(tmp_path / "js")))
    async with NatsServer(port=port, config=conf) as server:
        buses = [await open_bus(server.url, ids[n]) for n in ("bank", "operator", "carol")]
        bank_bus, operator, carol = buses
        ledger = Ledger(SqliteStore(tmp_path / "bank.db"), ids["bank"],
                        operator=ids["operator"].public_key)
        service = BankService(bank_bus, ledger,
                              buckets=BucketKeeper(bank_bus.nc, max_bytes=MAX_BYTES))
        await service.start()
        try:
            with pytest.raises(Rejected, match="unknown_bundle"):  # no account, no bucket
                await client.get_bytes(carol, "0" * 64)
            await BankClient(carol, ids["bank"].public_key).open()
            info = await operator.nc.jetstream().stream_info(
                names.stream(subject_id(ids["carol"].public_key)))
            assert info.config.max_bytes == MAX_BYTES and not info.config.allow_direct
            (tmp_path / "f").write_text("x")
            digest = await client.push(carol, tmp_path / "f")
            assert (await client.get_bytes(carol, digest))
            await BankClient(carol, ids["bank"].public_key).open(exist_ok=True)  # harmless
        finally:
            await service.stop()
            for bus in buses:
                await bus.close()
            ledger.store.close()
