"""Bus and log integrity (issue 18): no one steers a service's reply or owns JetStream.

Every attacker here is an authenticated principal holding exactly the permissions the
generated config (``tycoon.natsconf``) gives its role, on a real nats-server with
JetStream, against the real bank, SLS and an auctioneer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tycoon.auctioneer.launch import RunningAuctioneer, start_auctioneer
from tycoon.bank.client import BankClient
from tycoon.bank.launch import start_bank
from tycoon.bank.service import BankService
from tycoon.bus import subjects
from tycoon.bus.connection import Bus, inbox_prefix, open_bus, reply_allowed
from tycoon.bus.envelope import Message, open_envelope, seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.bus.service import Endpoint, Service
from tycoon.deploy import Deployment
from tycoon.errors import Rejected
from tycoon.log import LogLimiter, configure_logging
from tycoon.money import MICRO
from tycoon.natsconf import Principal, render_config, render_principals, write_config
from tycoon.natsserver import NatsServer, free_port
from tycoon.sls.launch import start_sls
from tycoon.sls.service import SLSConfig, SLSService
from tycoon.streams.config import PRICES, PRICES_SPEC, SETTLEMENTS, ensure_stream
from tycoon.streams.history import history_page, price_history_via_sls
from tycoon.streams.reader import format_stamp, parse_stamp, read_stream
from tycoon.streams.settlements import SettlementLog
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.hostile, pytest.mark.nats, pytest.mark.timeout(90)]

DANGEROUS_REPLIES = (
    "$JS.API.STREAM.PURGE.SETTLEMENTS",
    "$JS.API.STREAM.PURGE.PRICES",
    "$JS.API.STREAM.DELETE.PRICES",
    "$KV.x.y",
    "$SYS.REQ.SERVER.PING",
)


@dataclass
class World:
    """A secured market: server, bank (with its SETTLEMENTS log), SLS, one host."""

    deployment: Deployment
    server: NatsServer
    tmp: Path
    users: list[Identity]
    bank: BankService
    sls: SLSService
    host: RunningAuctioneer
    buses: list[Bus] = field(default_factory=list)

    def ident(self, name: str) -> Identity:
        return self.deployment.store.load(name)

    @property
    def host_id(self) -> str:
        return subject_id(self.deployment.public_key(self.deployment.hosts[0].key))

    async def bus(self, identity: Identity) -> Bus:
        bus = await open_bus(self.server.url, identity)
        self.buses.append(bus)
        return bus

    async def counts(self) -> tuple[int, int]:
        """(SETTLEMENTS, PRICES) message counts, read by the deployment's operator."""
        js = (await self.bus(self.ident(self.deployment.operator_key))).nc.jetstream()
        return ((await js.stream_info(SETTLEMENTS)).state.messages,
                (await js.stream_info(PRICES)).state.messages)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    d = Deployment.default(tmp_path / "home", hosts=1, agents=1)
    d.ensure_keys()
    users = [Identity.generate(), Identity.generate()]
    port = free_port()
    config = write_config(tmp_path / "nats.conf", render_config(
        d, port=port, jetstream_dir=str(tmp_path / "js"),
        extra_users=[Principal(u.public_key, "user", f"user-{i}") for i, u in enumerate(users)]))
    async with NatsServer(port=port, config=config) as server:
        bank_ident = d.store.load(d.bank_key)
        bank = await start_bank(
            server.url, bank_ident, db=tmp_path / "bank.db",
            operator=d.public_key(d.operator_key),
            settlement_log=lambda bus: SettlementLog(bus.nc, bank_ident.public_key, None))
        sls_bus = await open_bus(server.url, d.store.load(d.sls_key))
        await ensure_stream(sls_bus.nc.jetstream(), PRICES_SPEC)
        sls = await start_sls(sls_bus, config=SLSConfig(snapshot_s=0.5))
        host = await start_auctioneer(
            server.url, d.store.load(d.hosts[0].key), bank_key=bank_ident.public_key,
            driver=SimulatedDriver(preset="small", seed=1), store_path=tmp_path / "h.db",
            name=d.hosts[0].key, tick_s=0.2, heartbeat_s=0.2)
        w = World(d, server, tmp_path, users, bank.service, sls.service, host, [sls_bus])
        try:
            await _fill(w)
            yield w
        finally:
            await host.stop()
            await sls.stop()
            await bank.stop()
            for bus in w.buses:
                with contextlib.suppress(Exception):
                    await bus.close()


async def _fill(w: World) -> None:
    """A few receipts in SETTLEMENTS and price updates in PRICES."""
    bank_key = w.bank.bus.identity.public_key
    operator = BankClient(await w.bus(w.ident(w.deployment.operator_key)), bank_key)
    alice = BankClient(await w.bus(w.users[0]), bank_key)
    await alice.open(exist_ok=True)
    await BankClient(await w.bus(w.users[1]), bank_key).open(exist_ok=True)
    await operator.mint(w.users[0].public_key, 10 * MICRO, "fill-mint")
    for i in range(3):
        await alice.transfer(w.users[1].public_key, MICRO, transfer_id=f"fill-{i}")
    for _ in range(200):
        settled, prices = await w.counts()
        if settled >= 3 and prices >= 3:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"streams not filled: {settled} receipts, {prices} prices")


class Tap:
    """Every raw message on some subjects (seen by a principal allowed to watch them)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []

    async def cb(self, msg: Any) -> None:
        self.seen.append((msg.subject, bytes(msg.data)))

    def answering(self, raws: list[bytes]) -> list[str]:
        """Subjects of every seen message that is a signed answer to one of ``raws``."""
        digests = {hashlib.sha256(r).digest() for r in raws}
        out = []
        for subject, data in self.seen:
            with contextlib.suppress(Exception):
                if open_envelope(data).answers in digests:
                    out.append(subject)
        return out


def _rejections(w: World) -> int:
    return sum(s.stats.rejections["bad_reply_to"]
               for s in (w.bank.service, w.sls.service, w.host.service.service))


# ------------------------------------------------------------------ 1. reply injection


def test_reply_allowed_only_under_the_signers_inbox() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    mine = inbox_prefix(alice)
    for ok in (f"{mine}.x", f"{mine}.AbC123.7", f"{mine}.flood.12"):
        assert reply_allowed(ok, alice.public_key) and reply_allowed(ok, None)
    assert not reply_allowed(f"{mine}.x", bob.public_key)  # somebody else's inbox
    bobs = subject_id(bob.public_key)  # bob speaking over alice's connection (a broker's job)
    assert reply_allowed(f"{mine}.{bobs}.n.1", bob.public_key)
    assert not reply_allowed(f"{mine}.{bobs}", bob.public_key)
    assert not reply_allowed(f"{mine}.x.{bobs}.1", bob.public_key)
    assert reply_allowed(f"{mine}.x", None)  # unverified: any inbox, error replies only
    for bad in (*DANGEROUS_REPLIES, mine, f"{mine}.", f"{mine}..x", f"{mine}.*", f"{mine}.>",
                f"{mine}x.y", f"{mine}.a b", "tycoon.bank.info", "_INBOX.x.y", "_INBOX.>",
                f"{mine}.{'x' * 300}", f"{mine.upper()}.x", f"{mine}.x\r\nPUB x 1"):
        assert not reply_allowed(bad, alice.public_key), bad
        assert not reply_allowed(bad, None), bad


def test_log_limiter_bounds_lines_and_keeps_counts() -> None:
    lim = LogLimiter(10.0, max_lines=3)
    assert lim.admit("k", "malformed", 0.0) == 1
    assert [lim.admit("k", "malformed", t / 100) for t in range(1, 500)] == [0] * 499
    assert lim.admit("k", "malformed", 10.0) == 500  # the line carries the count
    assert lim.admit("k", "stale", 10.0) == 1 and lim.admit("j", "stale", 10.0) == 1
    assert lim.admit("i", "stale", 10.5) == 0 and lim.suppressed == 1  # budget spent
    assert lim.take_suppressed() == 1 and lim.take_suppressed() == 0
    assert lim.admit("i", "stale", 20.0) == 1  # a new interval, a new budget
    many = LogLimiter(10.0, max_lines=10**9, max_keys=100)
    assert sum(many.admit(f"key{i}", "x", 0.0) for i in range(10_000)) == 10_000
    assert len(many._last) <= 100  # memory stays bounded whatever the keys


async def test_reply_subject_injection_reaches_nothing(world: World) -> None:
    """A valid request whose reply subject is a JetStream API, a market feed or somebody
    else's inbox gets no answer there: the streams keep every message."""
    w = world
    before = await w.counts()
    mallory, victim = w.users
    bus = await w.bus(mallory)
    operator = await w.bus(w.ident(w.deployment.operator_key))
    tap = Tap()
    await operator.nc.subscribe(">", cb=tap.cb)  # the operator watches tycoon.> only
    victim_bus = await w.bus(victim)
    victim_tap = Tap()
    await victim_bus.nc.subscribe(f"{victim_bus.inbox_prefix}.>", cb=victim_tap.cb)
    await operator.flush()
    await victim_bus.flush()
    requests = [
        (subjects.sls("query"), "sls.query", {"resource": "cpu"}),
        (subjects.bank("info"), "bank.info", {}),
        (subjects.bank("balance"), "bank.balance", {"account": mallory.public_key}),
        (subjects.host_op(w.host_id, "status"), "host.status", {}),
    ]
    targets = (*DANGEROUS_REPLIES, subjects.price(w.host_id), subjects.alloc(w.host_id),
               subjects.SLS_SNAPSHOT, subjects.BANK_SETTLED, subjects.bank("transfer"),
               f"{inbox_prefix(victim)}.stolen", f"{inbox_prefix(mallory)}",
               f"_INBOX.{subject_id(mallory.public_key)}x.1", "_INBOX")
    raws: list[bytes] = []
    for subject, kind, body in requests:
        for target in targets:
            raw = seal(mallory, kind, body, subject=subject)
            raws.append(raw)
            await bus.nc.publish(subject, raw, reply=target)
            for _ in range(200):  # one at a time: within every service's rate limit
                if _rejections(w) >= len(raws):
                    break
                await asyncio.sleep(0.005)
    assert _rejections(w) == len(raws)  # each seen, dropped unexecuted and counted
    await asyncio.sleep(0.2)
    assert await w.counts() >= before  # nothing purged (the host may publish more prices)
    assert (await w.counts())[0] == before[0]
    assert tap.answering(raws) == []
    assert victim_tap.seen == []
    # the same requests with the sender's own inbox are answered as always
    assert await BankClient(bus, w.bank.bus.identity.public_key).balance() == 7 * MICRO


async def test_services_cannot_publish_to_any_reply_subject(world: World) -> None:
    """Second layer: a service's NATS permissions hold no ``allow_responses``; whatever
    its code did, the server refuses its publish to a JetStream API or a feed."""
    w = world
    before = await w.counts()
    for name in (w.deployment.bank_key, w.deployment.sls_key, w.deployment.hosts[0].key):
        bus = await w.bus(w.ident(name))
        for target in DANGEROUS_REPLIES:
            await bus.nc.publish(target, b"")
            await _refused(bus, target)
    await asyncio.sleep(0.1)
    assert (await w.counts())[0] == before[0] and (await w.counts())[1] >= before[1]


# ------------------------------------------------------------------ 2. JetStream admin


async def test_users_cannot_touch_jetstream(world: World) -> None:
    """No durable or push consumer, no purge/delete/update, no server-side reflection
    (a JetStream reply steered onto the purge API), no write into SETTLEMENTS."""
    w = world
    before = await w.counts()
    for ident in (w.users[0], w.ident(w.deployment.agents[0].key)):
        bus = await w.bus(ident)
        push = {"stream_name": PRICES, "config": {
            "durable_name": "evil", "deliver_subject": subjects.bank("info"),
            "deliver_group": "bank", "ack_policy": "none", "deliver_policy": "all"}}
        attempts = [
            ("$JS.API.CONSUMER.DURABLE.CREATE.PRICES.evil", push),
            ("$JS.API.CONSUMER.CREATE.PRICES.evil", push),
            ("$JS.API.CONSUMER.CREATE.PRICES", push),
            ("$JS.API.CONSUMER.CREATE.PRICES.evil.tycoon.price.x",
             {"stream_name": PRICES, "config": {"name": "evil", "ack_policy": "none"}}),
            ("$JS.API.CONSUMER.DELETE.PRICES.evil", None),
            ("$JS.API.STREAM.PURGE.PRICES", None),
            ("$JS.API.STREAM.DELETE.SETTLEMENTS", None),
            ("$JS.API.STREAM.UPDATE.PRICES", {"name": PRICES, "subjects": ["x"]}),
            ("$JS.API.STREAM.MSG.DELETE.SETTLEMENTS", {"seq": 1}),
            ("$JS.API.STREAM.INFO.PRICES", None),
            ("$JS.API.DIRECT.GET.PRICES", {"seq": 1}),
            ("$JS.API.STREAM.MSG.GET.SETTLEMENTS", {"seq": 1}),
            (subjects.settlement("a" * 16, "b" * 16), None),
        ]
        for subject, body in attempts:
            data = b"" if body is None else json.dumps(body).encode()
            # the reply subject is the purge API: a reflected JetStream answer would purge
            await bus.nc.publish(subject, data, reply="$JS.API.STREAM.PURGE.PRICES")
            await _refused(bus, subject)
    for name in (w.deployment.sls_key, w.deployment.hosts[0].key):  # the bank alone writes
        bus = await w.bus(w.ident(name))
        await bus.nc.publish(subjects.settlement("a" * 16, "b" * 16), b"forged")
        await _refused(bus, subjects.settlement("a" * 16, "b" * 16))
    sls = await w.bus(w.ident(w.deployment.sls_key))  # owners do not purge either
    for subject in ("$JS.API.STREAM.PURGE.PRICES", "$JS.API.STREAM.DELETE.PRICES",
                    "$JS.API.STREAM.UPDATE.PRICES", "$JS.API.CONSUMER.CREATE.PRICES"):
        await sls.nc.publish(subject, b"")
        await _refused(sls, subject)
    await asyncio.sleep(0.2)
    settled, prices = await w.counts()
    assert settled == before[0] and prices >= before[1]
    js = (await w.bus(w.ident(w.deployment.operator_key))).nc.jetstream()
    assert [c async for c in _consumers(js, PRICES)] == []


async def test_history_readers_still_work(world: World) -> None:
    """The SLS reads PRICES and the bank SETTLEMENTS (direct gets, no consumer); users
    read a host's prices through the SLS."""
    w = world
    settled, prices = await w.counts()
    sls = (await w.bus(w.ident(w.deployment.sls_key))).nc.jetstream()
    got = [m async for m in read_stream(sls, PRICES, subject=subjects.PRICES_ALL, batch=2)]
    assert len(got) >= prices and [m.seq for m in got] == sorted(m.seq for m in got)
    assert all(m.stored_ns > 0 and m.subject == subjects.price(w.host_id) for m in got)
    bank = (await w.bus(w.ident(w.deployment.bank_key))).nc.jetstream()
    receipts = [m async for m in read_stream(bank, SETTLEMENTS, start_seq=2, stop_seq=3)]
    assert [m.seq for m in receipts] == [2, 3]
    assert all("Nats-Msg-Id" in m.headers for m in receipts)
    assert len([m async for m in read_stream(bank, SETTLEMENTS, limit=2)]) == 2
    assert [m.seq async for m in read_stream(bank, SETTLEMENTS, newest=1)] == [settled]
    # a user reads a host's price history through the SLS (sls.history), verifying each
    user = await w.bus(w.users[0])
    points, refused = await price_history_via_sls(user, w.host_id, "cpu", since_ns=0)
    assert len(points) >= prices and not refused
    assert [p.seq for p in points] == sorted(p.seq for p in points)
    last, _ = await price_history_via_sls(user, w.host_id, "cpu", since_ns=0, limit=2)
    assert len(last) == 2
    page = await history_page(sls, {"host": w.host_id, "since_ns": 0, "limit": 2})
    assert len(page["messages"]) == 2 and page["more"] is True
    for bad in ({"host": "../x", "since_ns": 0}, {"host": w.host_id, "since_ns": -1},
                {"host": w.host_id, "since_ns": 0, "limit": 10**9},
                {"host": w.host_id, "since_ns": True}, {"host": w.host_id.upper(), "since_ns": 0}):
        with pytest.raises(Rejected) as refusal:
            await user.request(subjects.sls("history"), "sls.history", bad)
        assert refusal.value.code == "malformed", bad


# ------------------------------------------------------------------ 5. logs under abuse


async def test_refusal_floods_leave_bounded_logs(tmp_path: Path) -> None:
    """20,000 refused requests make a handful of service log lines (one per interval per
    key and code, with the count), and 20,000 permission violations leave nats-server's
    own log within its size limit (it rotates, keeping a bounded number of files)."""
    bank, mallory = Identity.generate(), Identity.generate()
    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(render_principals(
        [Principal(bank.public_key, "bank", "bank"), Principal(mallory.public_key, "user")],
        port=port, log_size_limit="64KB", log_max_files=3))
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    configure_logging("info", file=str(log_dir / "bank.log"), max_bytes=1 << 20, backups=2)

    async def refuse(msg: Message) -> dict[str, Any]:
        raise Rejected("forbidden", "no")

    async with NatsServer(port=port, config=conf, log_file=log_dir / "nats.log") as server:
        service_bus = await open_bus(server.url, bank)
        service = Service(service_bus, "tycoon-bank", [
            Endpoint(subjects.bank("info"), "bank.info", refuse)], rate_limit=None)
        await service.start()
        bus = await open_bus(server.url, mallory)
        try:
            subject, own = subjects.bank("info"), f"{bus.inbox_prefix}.flood"
            for i in range(20_000):
                if i % 4 == 0:  # refused by the handler, answered
                    raw, reply = seal(mallory, "bank.info", {}, subject=subject), own
                elif i % 4 == 1:  # a steered reply: dropped unanswered
                    raw = seal(mallory, "bank.info", {}, subject=subject)
                    reply = "$JS.API.STREAM.PURGE.SETTLEMENTS"
                elif i % 4 == 2:  # not an envelope, no inbox: dropped
                    raw, reply = b"garbage %d" % i, "tycoon.price.x"
                else:  # not an envelope, answered with an error
                    raw, reply = b"garbage %d" % i, own
                await bus.nc.publish(subject, raw, reply=reply)
                await bus.nc.publish(subjects.price("x" * 16), b"forged")  # permission error
                if i % 500 == 499:  # paced: a slow consumer would lose some, not test logs
                    await bus.flush(timeout=30)
                    while service.stats.requests + sum(service.stats.rejections.values()) \
                            < (i + 1) * 5 // 4:
                        await asyncio.sleep(0.01)
            stats = service.stats
            assert stats.requests == 5_000 and stats.errors["forbidden"] == 5_000
            # steered replies, and garbage whose error reply would go to a feed
            assert stats.rejections["bad_reply_to"] == 10_000
            assert stats.rejections["malformed"] == 10_000
        finally:
            await service.stop()
            await bus.close()
            await service_bus.close()
    configure_logging("info", json=True)
    lines = [json.loads(line) for line in (log_dir / "bank.log").read_text().splitlines()]
    refusals = [e for e in lines if e["event"] in ("rejected", "refused")]
    print(f"{len(lines)} service log lines for 20,000 refusals:",
          [(e["event"], e.get("code"), e.get("count")) for e in refusals])
    assert 3 <= len(refusals) <= 12, ({e["event"] for e in lines}, lines[-3:])
    assert all(e["count"] >= 1 for e in refusals)
    nats_logs = sorted(log_dir.glob("nats.log*"))
    sizes = [os.path.getsize(f) for f in nats_logs]
    print("nats-server log files:", list(zip([f.name for f in nats_logs], sizes, strict=True)))
    assert sum(sizes) > 64 * 1024  # it did log the violations (and rotated) ...
    assert len(nats_logs) <= 3 and max(sizes) <= 80 * 1024  # ... within its limits


def test_direct_get_time_stamps_round_trip() -> None:
    for ns in (0, 1, 999_999_999, 1_765_000_000_123_456_789, 4_102_444_800 * 10**9):
        assert parse_stamp(format_stamp(ns)) == ns
    assert parse_stamp("2026-12-06T09:55:30.99330533Z") % 10**9 == 993_305_330
    assert parse_stamp("2026-12-06T09:55:30Z") % 10**9 == 0
    with pytest.raises(ValueError):
        parse_stamp("2026-12-06T09:55:30+01:00")


# ------------------------------------------------------------------ helpers


async def _refused(bus: Bus, subject: str, timeout: float = 5.0) -> None:
    want = f'publish to "{subject.lower()}"'
    with contextlib.suppress(Exception):
        await bus.nc.flush(timeout=timeout)
    for _ in range(int(timeout / 0.02)):
        if want in str(bus.nc.last_error).lower():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no permission error for {subject}; last: {bus.nc.last_error}")


async def _consumers(js: Any, stream: str) -> AsyncIterator[str]:
    for info in await js.consumers_info(stream):
        yield info.name


