"""Per-role NATS permissions: the pure policy, the rendered config, and a real nats-server.

The server refuses a forbidden publish or subscribe asynchronously (an ``-ERR`` that
nats-py hands to the error callback and keeps as ``last_error``); the connection stays
up. So each refusal is checked twice: the server's error names the subject, and nobody
who would have received the message ever does.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.js.api import ConsumerConfig, StreamConfig
from policy_kit import may_publish, may_subscribe, subject_matches

from tycoon import natsconf
from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.launch import RunningAuctioneer, start_auctioneer
from tycoon.bank.client import BankClient
from tycoon.bank.launch import start_bank
from tycoon.bus import subjects
from tycoon.bus.connection import Bus, inbox_prefix, open_bus
from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.cli.status import discover
from tycoon.deploy import Deployment
from tycoon.money import MICRO
from tycoon.natsconf import (
    TLS,
    Principal,
    load_principals,
    permissions,
    render_config,
    render_principals,
    write_config,
)
from tycoon.natsserver import NatsServer, free_port, nats_server_binary
from tycoon.sls.client import SLSClient
from tycoon.sls.launch import start_sls
from tycoon.sls.service import SLSConfig
from tycoon.streams.reader import read_stream
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = pytest.mark.timeout(60)

# ------------------------------------------------------------------ the pure policy


def key() -> str:
    return Identity.generate().public_key


def test_subject_matching() -> None:
    assert subject_matches("tycoon.>", "tycoon.price.abc")
    assert not subject_matches("tycoon.>", "tycoon")
    assert subject_matches("tycoon.host.*.*", "tycoon.host.h.bid")
    assert not subject_matches("tycoon.host.*.*", "tycoon.host.h.bid.x")
    assert not subject_matches("tycoon.bank.*", "tycoon.bank")


def test_each_role_holds_only_what_it_needs() -> None:
    host, other = Principal(key(), "host"), Principal(key(), "host")
    h = permissions(host)
    assert may_publish(h, subjects.price(host.id)) and may_publish(h, subjects.alloc(host.id))
    assert not may_publish(h, subjects.price(other.id))
    assert not may_publish(h, subjects.alloc(other.id))
    assert may_publish(h, subjects.bank("transfer"))  # refunds, its own account
    assert not may_publish(h, subjects.BANK_SETTLED) and not may_publish(h, subjects.SLS_SNAPSHOT)
    assert may_subscribe(h, subjects.host_op(host.id, "bid"))
    assert not may_subscribe(h, subjects.host_op(other.id, "bid"))
    # no role answers "any reply subject" (allow_responses): services reply to inboxes only
    for role in natsconf.ROLES:
        perms = permissions(Principal(key(), role))
        assert not perms.allow_responses, role
        for danger in ("$JS.API.STREAM.PURGE.SETTLEMENTS", "$JS.API.STREAM.DELETE.PRICES",
                       "$JS.API.STREAM.UPDATE.PRICES", "$JS.API.CONSUMER.CREATE.PRICES",
                       "$JS.API.CONSUMER.DURABLE.CREATE.PRICES.x", "$KV.b.k", "$O.b.c",
                       "$SYS.REQ.SERVER.PING", "$JS.ACK.PRICES.x.1.1.1.1.1"):
            assert not may_publish(perms, danger), (role, danger)
    for role in ("bank", "sls", "host", "broker"):
        assert may_publish(permissions(Principal(key(), role)), "_INBOX.abcdefghijklmnop.x")
    for role in ("host", "agent", "broker", "user", "operator"):
        assert not any(s.startswith(("$JS", "$O")) for s in permissions(
            Principal(key(), role)).publish_allow), role  # bundles: through the bank

    bank = permissions(Principal(key(), "bank"))
    assert may_subscribe(bank, subjects.bank("transfer"))
    assert may_publish(bank, subjects.BANK_SETTLED)
    assert not may_subscribe(bank, subjects.BANK_SETTLED)
    assert not may_publish(bank, subjects.price(host.id))
    sls = permissions(Principal(key(), "sls"))
    assert may_subscribe(sls, subjects.price(host.id)) and may_subscribe(sls, subjects.sls("query"))
    assert may_publish(sls, subjects.SLS_SNAPSHOT) and not may_publish(sls, subjects.BANK_SETTLED)

    for role in ("agent", "broker", "user"):
        p = Principal(key(), role)
        perms = permissions(p)
        for forbidden in (subjects.price(host.id), subjects.alloc(host.id),
                          subjects.BANK_SETTLED, subjects.SLS_SNAPSHOT, "_INBOX.x.y"):
            if role == "broker" and forbidden.startswith("_INBOX"):
                continue  # a broker answers requests (to the requester's inbox only)
            assert not may_publish(perms, forbidden), (role, forbidden)
        for request in (subjects.bank("transfer"), subjects.sls("query"),
                        subjects.host_op(host.id, "bid"), subjects.broker("b", "enroll")):
            assert may_publish(perms, request), (role, request)
        for stolen in (subjects.bank("transfer"), subjects.host_op(host.id, "bid"),
                       subjects.sls("query"), subjects.BANK_SETTLED):
            assert not may_subscribe(perms, stolen), (role, stolen)
        assert may_subscribe(perms, subjects.price(host.id))
        assert may_publish(perms, subjects.agent(p.id, "plan")) == (role != "user")
        assert may_publish(perms, subjects.agent("someoneelse00000", "plan")) == (role == "broker")

    watcher = permissions(Principal(key(), "operator"))
    assert watcher.publish_allow == () and watcher.publish_deny == (">",)
    assert may_subscribe(watcher, "tycoon.price.x") and not watcher.allow_responses
    minting = permissions(Principal(key(), "operator", capabilities=frozenset(
        {"requests", "monitor"})))
    assert may_publish(minting, subjects.bank("mint")) and may_publish(minting, "$SRV.PING")
    assert not may_publish(minting, subjects.price(host.id))
    assert not may_publish(minting, subjects.BANK_SETTLED)


def test_every_principal_reads_only_its_own_inbox() -> None:
    ident = Identity.generate()
    assert natsconf.inbox(subject_id(ident.public_key)) == f"{inbox_prefix(ident)}.>"
    principals = [Principal(key(), role) for role in
                  ("bank", "sls", "host", "agent", "broker", "user", "operator")]
    for p in principals:
        perms = permissions(p)
        assert may_subscribe(perms, f"_INBOX.{p.id}.abc.1")
        for q in principals:
            if q is not p:
                assert not may_subscribe(perms, f"_INBOX.{q.id}.abc.1")
        assert not may_subscribe(perms, "_INBOX.>")


def test_bad_principals_are_refused() -> None:
    with pytest.raises(ValueError):
        Principal("not-a-key", "user")
    with pytest.raises(ValueError):
        Principal(key(), "root")
    with pytest.raises(ValueError):
        Principal(key(), "user", capabilities=frozenset({"everything"}))
    k = key()
    with pytest.raises(ValueError):
        render_principals([Principal(k, "user"), Principal(k, "host")], port=4222)
    with pytest.raises(ValueError):
        render_principals([], port=4222)


def nats_check(conf: Path) -> None:
    """``nats-server -t``: the server itself parses the config."""
    run = subprocess.run([nats_server_binary(), "-c", str(conf), "-t"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr


def test_rendered_deployment_config_is_valid(tmp_path: Path) -> None:
    deployment = Deployment.default(tmp_path / "home", hosts=3, agents=2)
    deployment.ensure_keys()
    extra = [Principal(key(), "operator", "watcher"), Principal(key(), "broker", "broker")]
    cert, pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    text = render_config(deployment, port=4333, jetstream_dir=str(tmp_path / "js"),
                         http_port=8333, extra_users=extra, jetstream_roles=("bank", "sls"),
                         tls=TLS(str(cert), str(pem), ca_file=str(cert), verify=True))
    names = [deployment.bank_key, deployment.sls_key, deployment.operator_key,
             *(h.key for h in deployment.hosts), *(a.key for a in deployment.agents)]
    for name in names:
        assert text.count(f"nkey: {deployment.public_key(name)}") == 1
    assert text.count("nkey: ") == len(names) + 2
    assert "tls {" in text and "verify: true" in text and "jetstream {" in text
    assert "$JS.API.>" in text and "no_auth_user" not in text
    nats_check(write_config(tmp_path / "plain.conf", render_config(deployment, port=4333)))
    if shutil.which("openssl"):  # the TLS block needs real files to pass the check
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                        "/CN=localhost", "-keyout", str(pem), "-out", str(cert)],
                       check=True, capture_output=True, timeout=30)
        nats_check(write_config(tmp_path / "nats.conf", text))


def test_reference_config_is_valid() -> None:
    nats_check(Path(__file__).resolve().parents[1] / "nats.conf")


# ------------------------------------------------------------------ on a real server


@dataclass
class Secured:
    deployment: Deployment
    server: NatsServer
    watcher: Identity
    users: list[Identity]
    broker: Identity
    buses: list[Bus] = field(default_factory=list)

    def ident(self, name: str) -> Identity:
        return self.deployment.store.load(name)

    def host_id(self, i: int) -> str:
        return subject_id(self.deployment.public_key(self.deployment.hosts[i].key))

    async def bus(self, identity: Identity) -> Bus:
        bus = await open_bus(self.server.url, identity)
        self.buses.append(bus)
        return bus


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    deployment = Deployment.default(tmp_path / "home", hosts=2, agents=1)
    deployment.ensure_keys()
    watcher, broker = Identity.generate(), Identity.generate()
    users = [Identity.generate(), Identity.generate()]
    extra = [Principal(watcher.public_key, "operator", "watcher"),
             Principal(broker.public_key, "broker", "broker")]
    extra += [Principal(u.public_key, "user", f"user-{i}") for i, u in enumerate(users)]
    port = free_port()
    config = write_config(tmp_path / "nats.conf",
                          render_config(deployment, port=port, extra_users=extra))
    async with NatsServer(port=port, config=config) as server:
        state = Secured(deployment, server, watcher, users, broker)
        try:
            yield state
        finally:
            for bus in state.buses:
                with contextlib.suppress(Exception):
                    await bus.close()


async def refused(bus: Bus, verb: str, subject: str, timeout: float = 5.0) -> None:
    """Wait until the server has refused ``verb`` ('publish' or 'subscription') on ``subject``."""
    want = f'{verb} to "{subject.lower()}"'
    with contextlib.suppress(Exception):
        await bus.nc.flush(timeout=timeout)
    for _ in range(int(timeout / 0.02)):
        if want in str(bus.nc.last_error).lower():
            assert bus.nc.is_connected
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no permission error for {verb} {subject}; last: {bus.nc.last_error}")


class Recorder:
    """Raw subjects a subscription received."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def cb(self, msg: Any) -> None:
        self.seen.append(msg.subject)


@pytest.mark.nats
async def test_unknown_principals_cannot_connect(secured: Secured) -> None:
    for options in ({"nkeys_seed_str": Identity.generate().seed}, {}):
        with pytest.raises(nats.errors.Error):
            nc = await nats.connect(secured.server.url, allow_reconnect=False,
                                    max_reconnect_attempts=0, connect_timeout=2, **options)
            await nc.close()


@pytest.mark.nats
async def test_agent_cannot_publish_prices_and_the_sls_never_sees_it(secured: Secured) -> None:
    s = secured
    sls = await start_sls(await s.bus(s.ident(s.deployment.sls_key)),
                          config=SLSConfig(snapshot_s=3600))
    try:
        watcher = await s.bus(s.watcher)
        seen = Recorder()
        await watcher.nc.subscribe(subjects.PRICES_ALL, cb=seen.cb)
        await watcher.flush()
        agent = await s.bus(s.ident(s.deployment.agents[0].key))
        target = subjects.price(s.host_id(0))
        body = {"host": s.host_id(0), "seq": 1, "heartbeat_s": 60.0, "name": "x",
                "driver": "y", "resources": {}}
        await agent.nc.publish(target, seal(agent.identity, "price", body, subject=target))
        await refused(agent, "publish", target)
        # the honest host publishes afterwards: order per subscriber shows nothing came before
        host = await s.bus(s.ident(s.deployment.hosts[0].key))
        await host.publish(target, "price", {**body, "seq": 2})
        for _ in range(250):
            if seen.seen and sum(sls.service.ingest.counters.values()):
                break
            await asyncio.sleep(0.02)
        assert seen.seen == [target]
        assert dict(sls.service.ingest.counters) == {"accepted": 1}
    finally:
        await sls.stop()


@pytest.mark.nats
async def test_host_cannot_speak_for_another_host(secured: Secured) -> None:
    s = secured
    watcher = await s.bus(s.watcher)
    seen = Recorder()
    await watcher.nc.subscribe(subjects.ALL, cb=seen.cb)
    await watcher.flush()
    host = await s.bus(s.ident(s.deployment.hosts[0].key))
    other = s.host_id(1)
    for subject in (subjects.price(other), subjects.alloc(other), subjects.BANK_SETTLED,
                    subjects.SLS_SNAPSHOT, subjects.agent(s.host_id(0), "plan")):
        await host.nc.publish(subject, b"x")
        await refused(host, "publish", subject)
    for subject in (subjects.host_all(other), subjects.bank("transfer"), subjects.ALL):
        await host.nc.subscribe(subject)
        await refused(host, "subscription", subject)
    await host.publish(subjects.price(s.host_id(0)), "price", {"host": s.host_id(0)})
    for _ in range(250):
        if seen.seen:
            break
        await asyncio.sleep(0.02)
    assert seen.seen == [subjects.price(s.host_id(0))]


@pytest.mark.nats
async def test_watching_operator_cannot_publish_at_all(secured: Secured) -> None:
    s = secured
    other = await s.bus(s.watcher)  # a second watcher connection sees all of tycoon.>
    seen = Recorder()
    await other.nc.subscribe(subjects.ALL, cb=seen.cb)
    user = await s.bus(s.users[0])
    inbox_seen = Recorder()
    await user.nc.subscribe(f"{user.inbox_prefix}.>", cb=inbox_seen.cb)
    await user.flush()
    await other.flush()
    watcher = await s.bus(s.watcher)
    me = subject_id(s.watcher.public_key)
    for subject in (subjects.bank("transfer"), subjects.price(s.host_id(0)),
                    subjects.agent(me, "plan"), subjects.sls("query"), "$SRV.PING",
                    f"{user.inbox_prefix}.x", "anything.else"):
        await watcher.nc.publish(subject, b"x")
        await refused(watcher, "publish", subject)
    # a request cannot even leave
    with pytest.raises(nats.errors.Error):
        await watcher.nc.request(subjects.bank("info"), b"x", timeout=0.5)
    assert await discover(watcher.nc, wait=0.2) == []
    await other.flush()
    await user.flush()
    assert seen.seen == [] and inbox_seen.seen == []


@pytest.mark.nats
async def test_no_one_reads_another_principals_replies(secured: Secured, tmp_path: Path) -> None:
    s = secured
    bank_ident, operator = s.ident(s.deployment.bank_key), s.ident(s.deployment.operator_key)
    bank = await start_bank(await s.bus(bank_ident), db=tmp_path / "bank.db",
                            operator=operator.public_key)
    try:
        alice, mallory = await s.bus(s.users[0]), await s.bus(s.users[1])
        stolen = Recorder()
        for subject in (f"{alice.inbox_prefix}.>", "_INBOX.>", "_INBOX.*.*.*", ">",
                        subjects.bank("open"), subjects.BANK_SETTLED):
            await mallory.nc.subscribe(subject, cb=stolen.cb)
            await refused(mallory, "subscription", subject)
        await BankClient(alice, bank_ident.public_key).open()
        await BankClient(await s.bus(operator), bank_ident.public_key).mint(
            alice.identity.public_key, 5 * MICRO)
        assert await BankClient(alice, bank_ident.public_key).balance() == 5 * MICRO
        await mallory.flush()
        assert stolen.seen == []
        # mallory's own requests still work: her inbox is hers
        info = await mallory.request(subjects.bank("info"), "bank.info", {})
        assert info.body["bank"] == bank_ident.public_key
    finally:
        await bank.stop()


@pytest.mark.nats
async def test_a_whole_market_works_under_the_config(secured: Secured, tmp_path: Path) -> None:
    s = secured
    d = s.deployment
    bank_ident, operator = s.ident(d.bank_key), s.ident(d.operator_key)
    bank = await start_bank(await s.bus(bank_ident), db=tmp_path / "bank.db",
                            operator=operator.public_key)
    sls = await start_sls(await s.bus(s.ident(d.sls_key)), config=SLSConfig(snapshot_s=0.5))
    hosts: list[RunningAuctioneer] = []
    try:
        for i, spec in enumerate(d.hosts):
            hosts.append(await start_auctioneer(
                s.server.url, s.ident(spec.key), bank_key=bank_ident.public_key,
                driver=SimulatedDriver(preset="small", seed=i), store_path=tmp_path / f"h{i}.db",
                name=spec.key, tick_s=0.2, heartbeat_s=0.5))  # fmt: skip
        watcher = await s.bus(s.watcher)
        seen = Recorder()
        await watcher.nc.subscribe(subjects.ALL, cb=seen.cb)
        await watcher.flush()
        agent = await s.bus(s.ident(d.agents[0].key))
        agent_bank = BankClient(agent, bank_ident.public_key)
        await agent_bank.open()
        await BankClient(await s.bus(operator), bank_ident.public_key).mint(
            agent.identity.public_key, 50 * MICRO)
        sls_client = SLSClient(agent)
        for _ in range(100):
            rows = await sls_client.query("cpu")
            if len(rows) == 2:
                break
            await asyncio.sleep(0.1)
        assert {r["host"] for r in rows} == {s.host_id(0), s.host_id(1)}
        host = AuctioneerClient(agent, s.host_id(0))
        receipt = await agent_bank.transfer(await host.host_key(), 10 * MICRO)
        assert (await host.fund(receipt))["amount"] == 10 * MICRO
        assert (await host.bid("1h cpu:1,0.1,1"))["account"] == agent.identity.public_key
        await agent.publish(subjects.agent(subject_id(agent.identity.public_key), "plan"),
                            "agent.plan", {"hosts": [s.host_id(0)]})
        refund = await host.refund()
        assert refund["refunds"]
        # tycoon status: the minting operator may send $SRV discovery requests
        names = {row["name"] for row in await discover((await s.bus(operator)).nc, wait=0.5)}
        assert {"tycoon-bank", "tycoon-sls", "tycoon-auctioneer"} <= names
        agent_id = subject_id(agent.identity.public_key)
        for _ in range(100):
            kinds = {subj.split(".")[1] for subj in seen.seen}
            if {"price", "alloc", "bank", "sls", "agent", "host"} <= kinds:
                break
            await asyncio.sleep(0.05)
        assert {"price", "alloc", "bank", "sls", "agent", "host"} <= kinds, kinds
        assert subjects.BANK_SETTLED in seen.seen and subjects.SLS_SNAPSHOT in seen.seen
        assert subjects.agent(agent_id, "plan") in seen.seen
        for bus in s.buses:
            assert "permissions violation" not in str(bus.nc.last_error).lower(), bus.nc.last_error
    finally:
        for h in hosts:
            await h.stop()
        await sls.stop()
        await bank.stop()


def test_stream_names_match_the_streams_module() -> None:
    streams = pytest.importorskip("tycoon.streams.config")
    assert streams.PRICES == natsconf.PRICES_STREAM
    assert streams.SETTLEMENTS == natsconf.SETTLEMENTS_STREAM
    assert streams.SETTLEMENTS_ALL == natsconf.SETTLEMENTS_ALL


@pytest.mark.nats
async def test_jetstream_streams_are_owned_by_their_services(tmp_path: Path) -> None:
    d = Deployment.default(tmp_path / "home", hosts=1, agents=1)
    d.ensure_keys()
    watcher = Identity.generate()
    port = free_port()
    config = write_config(tmp_path / "nats.conf", render_config(
        d, port=port, jetstream_dir=str(tmp_path / "js"),
        extra_users=[Principal(watcher.public_key, "operator", "watcher")]))
    async with NatsServer(port=port, config=config) as server:
        buses = {name: await open_bus(server.url, d.store.load(name))
                 for name in (d.bank_key, d.sls_key, d.operator_key, d.hosts[0].key,
                              d.agents[0].key)}
        buses["watcher"] = await open_bus(server.url, watcher)
        js = {name: bus.nc.jetstream(timeout=0.3) for name, bus in buses.items()}
        bank, sls, agent = js[d.bank_key], js[d.sls_key], js[d.agents[0].key]
        try:
            await bank.add_stream(StreamConfig(name="SETTLEMENTS", allow_direct=True,
                                               subjects=[natsconf.SETTLEMENTS_ALL]))
            await sls.add_stream(StreamConfig(name="PRICES", subjects=[subjects.PRICES_ALL],
                                              allow_direct=True))
            ack = await bank.publish("tycoon.settlement.a.b", b"receipt")
            assert ack.stream == "SETTLEMENTS"
            host = buses[d.hosts[0].key]
            hid = subject_id(host.identity.public_key)
            await host.publish(subjects.price(hid), "price", {"host": hid})
            # each owner reads its own stream with direct gets (no consumer)
            async def subjects_of(reader: Any, stream: str) -> list[str]:
                return [m.subject async for m in read_stream(reader, stream)]

            for _ in range(50):
                if await subjects_of(sls, "PRICES"):
                    break
                await asyncio.sleep(0.02)
            assert await subjects_of(sls, "PRICES") == [subjects.price(hid)]
            assert await subjects_of(bank, "SETTLEMENTS") == ["tycoon.settlement.a.b"]
            # nobody else holds any JetStream right: no reading, changing, making, consuming
            agent_bus, watcher_bus = buses[d.agents[0].key], buses["watcher"]
            for bus, attempt, subject in (
                (agent_bus, agent.delete_stream("PRICES"), "$JS.API.STREAM.DELETE.PRICES"),
                (agent_bus, agent.add_stream(StreamConfig(name="MINE", subjects=["x.y"])),
                 "$JS.API.STREAM.CREATE.MINE"),
                (agent_bus, agent.stream_info("PRICES"), "$JS.API.STREAM.INFO.PRICES"),
                (agent_bus, agent.stream_info("SETTLEMENTS"), "$JS.API.STREAM.INFO.SETTLEMENTS"),
                (agent_bus, agent.add_consumer("PRICES", ConsumerConfig(durable_name="d")),
                 "$JS.API.CONSUMER.DURABLE.CREATE.PRICES.d"),
                (buses[d.sls_key], sls.delete_stream("SETTLEMENTS"),
                 "$JS.API.STREAM.DELETE.SETTLEMENTS"),
                (buses[d.sls_key], sls.purge_stream("PRICES"), "$JS.API.STREAM.PURGE.PRICES"),
                (buses[d.bank_key], bank.delete_stream("SETTLEMENTS"),
                 "$JS.API.STREAM.DELETE.SETTLEMENTS"),
                (buses[d.hosts[0].key], js[d.hosts[0].key].stream_info("PRICES"),
                 "$JS.API.STREAM.INFO.PRICES"),
                (watcher_bus, js["watcher"].stream_info("PRICES"), "$JS.API.STREAM.INFO.PRICES"),
            ):
                with pytest.raises(Exception):  # noqa: B017 - the request never leaves
                    await attempt
                await refused(bus, "publish", subject)
            await buses[d.agents[0].key].nc.publish("tycoon.settlement.a.b", b"forged")
            await refused(buses[d.agents[0].key], "publish", "tycoon.settlement.a.b")
            assert (await bank.stream_info("SETTLEMENTS")).state.messages == 1
            # the deployment's operator manages every stream
            assert {s.config.name for s in await js[d.operator_key].streams_info()} == {
                "PRICES", "SETTLEMENTS"}
        finally:
            for bus in buses.values():
                await bus.close()


def test_extra_principals_file(tmp_path: Path) -> None:
    alice, night = key(), key()
    path = tmp_path / "principals.conf"
    path.write_text(f"# extra users\nuser {alice} alice\n\noperator {night} night +monitor\n")
    loaded = load_principals(path)
    assert [(p.role, p.name, p.capabilities) for p in loaded] == [
        ("user", "alice", frozenset()), ("operator", "night", frozenset({"monitor"}))]
    assert load_principals(tmp_path / "absent.conf") == []
    for bad in (f"root {alice}", "user nokey", f"user {alice} a b", f"user {alice} +root"):
        path.write_text(f"# ok\n{bad}\n")
        with pytest.raises(ValueError, match=":2:"):
            load_principals(path)


def test_tycoon_init_writes_a_valid_server_config(tmp_path: Path) -> None:
    from tycoon.cli.main import main

    home = tmp_path / "home"
    home.mkdir()
    watcher = key()
    (home / "principals.conf").write_text(f"operator {watcher} watcher\n")
    assert main(["--home", str(home), "--nats", "nats://127.0.0.1:4333", "init", "--local",
                 "--hosts", "2", "--agents", "1"]) == 0
    conf = home / "nats.conf"
    text = conf.read_text()
    deployment = Deployment.load(home)
    cli_key = deployment.store.load("default").public_key
    for public in (watcher, cli_key, deployment.public_key(deployment.bank_key)):
        assert f"nkey: {public}" in text
    assert 'listen: "127.0.0.1:4333"' in text and "jetstream {" in text
    nats_check(conf)
    # a second run re-renders from tycoon.toml and keeps every key
    assert main(["--home", str(home), "init"]) == 0
    assert conf.read_text().count("nkey: ") == text.count("nkey: ")


@pytest.mark.nats
async def test_removing_a_key_and_reloading_shuts_it_out(tmp_path: Path) -> None:
    """Key rotation: re-render without the old key, SIGHUP the server; the old key is out."""
    old, new, bank = Identity.generate(), Identity.generate(), Identity.generate()
    port = free_port()
    path = tmp_path / "nats.conf"

    def render(*users: Identity) -> None:
        principals = [Principal(bank.public_key, "bank", "bank")]
        principals += [Principal(u.public_key, "user", f"u{i}") for i, u in enumerate(users)]
        write_config(path, render_principals(principals, port=port))

    render(old)
    async with NatsServer(port=port, config=path) as server:
        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        stale = await nats.connect(server.url, nkeys_seed_str=old.seed, allow_reconnect=True,
                                   max_reconnect_attempts=2, reconnect_time_wait=0.1,
                                   closed_cb=on_closed)
        render(new)  # the old key replaced by the new one
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        await asyncio.wait_for(closed.wait(), 10)
        with pytest.raises(nats.errors.Error):
            await nats.connect(server.url, nkeys_seed_str=old.seed, allow_reconnect=False,
                               max_reconnect_attempts=0, connect_timeout=2)
        fresh = await open_bus(server.url, new)
        await fresh.close()
        assert stale.is_closed


@pytest.mark.nats
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a cert")
async def test_tls_option_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(pem), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    user = Identity.generate()
    port = free_port()
    path = write_config(tmp_path / "nats.conf", render_principals(
        [Principal(user.public_key, "user")], port=port, tls=TLS(str(cert), str(pem))))
    async with NatsServer(port=port, config=path) as server:
        # a client that does not trust the certificate cannot connect
        with pytest.raises(Exception) as info:
            await nats.connect(server.url, nkeys_seed_str=user.seed, allow_reconnect=False,
                               max_reconnect_attempts=0, connect_timeout=2)
        assert "CERTIFICATE_VERIFY_FAILED" in repr(info.value), repr(info.value)
        # one that trusts it (SSL_CERT_FILE, read by Python's default SSL context) can
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        bus = await open_bus(f"tls://127.0.0.1:{port}", user, deadline=5.0)
        try:
            assert bus.nc.is_connected
            await bus.nc.publish(subjects.bank("info"), b"x")
            await bus.flush()
        finally:
            await bus.close()


def test_tycoon_init_tls_options(tmp_path: Path) -> None:
    from tycoon.cli.main import main

    home = tmp_path / "home"
    assert main(["--home", str(home), "init", "--local", "--tls-cert", "/etc/c.pem",
                 "--tls-key", "/etc/k.pem", "--tls-ca", "/etc/ca.pem", "--http-port", "8222"]) == 0
    text = (home / "nats.conf").read_text()
    assert 'cert_file: "/etc/c.pem"' in text and "verify: true" in text
    assert 'http: "127.0.0.1:8222"' in text
    with pytest.raises(SystemExit):
        main(["--home", str(home), "init", "--tls-cert", "/etc/c.pem"])
