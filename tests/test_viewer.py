"""The ``viewer`` role (the web dashboard's key): it reads the public feeds and publishes
nothing at all — no market subject, no request, no JetStream API, no inbox of anybody.

Checked on the pure policy, on the rendered config, and on a real nats-server (over TCP
and over its WebSocket listener: the same user, the same permissions).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from pathlib import Path

import nats
import pytest
from policy_kit import may_publish, may_subscribe

from tycoon.bus import subjects
from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity
from tycoon.natsconf import Principal, permissions, render_principals, write_config
from tycoon.natspolicy import CAPABILITIES
from tycoon.natsserver import NatsServer, free_port
from tycoon.web.config import websocket_listen

pytestmark = pytest.mark.timeout(60)

FEEDS = ("tycoon.price.*", "tycoon.alloc.*", "tycoon.bank.settled", "tycoon.sls.snapshot",
         "tycoon.agent.>")
NEVER = ("tycoon.price.abc", "tycoon.alloc.abc", "tycoon.bank.settled", "tycoon.bank.transfer",
         "tycoon.bank.mint", "tycoon.sls.query", "tycoon.sls.history", "tycoon.sls.snapshot",
         "tycoon.host.abc.bid", "tycoon.agent.abc.plan", "tycoon.settlement.a.b",
         "tycoon.broker.abc.enroll", "$JS.API.INFO", "$JS.API.STREAM.INFO.PRICES",
         "$JS.API.DIRECT.GET.PRICES", "$JS.API.STREAM.PURGE.PRICES", "$JS.ACK.PRICES.x",
         "$KV.x.y", "$SYS.REQ.SERVER.PING", "$SRV.PING", "_INBOX.abc.1", "anything", "a.b.c")


def viewer(caps: frozenset[str] = frozenset()) -> Principal:
    return Principal(Identity.generate().public_key, "viewer", "viewer", caps)


@pytest.mark.parametrize("caps", [frozenset(), frozenset(CAPABILITIES)])
def test_a_viewer_publishes_nothing_whatever_its_capabilities(caps: frozenset[str]) -> None:
    p = permissions(viewer(caps))
    assert p.publish_allow == () and p.publish_deny == (">",)
    assert not p.allow_responses
    for subject in NEVER:
        assert not may_publish(p, subject), subject


def test_a_viewer_reads_the_public_feeds_only() -> None:
    p = permissions(viewer(frozenset(CAPABILITIES)))
    assert set(p.subscribe_allow) == set(FEEDS)
    for feed in FEEDS:
        assert may_subscribe(p, feed)
    for subject in ("tycoon.>", ">", "$JS.>", "$JS.API.>", "_INBOX.>", "tycoon.host.*.*",
                    "tycoon.bank.*", "tycoon.settlement.>", "$SRV.>", "$SYS.>",
                    "tycoon.broker.x.enroll"):
        assert not may_subscribe(p, subject), subject


def test_the_rendered_user_denies_every_publish() -> None:
    v = viewer()
    text = render_principals([v], port=4222, websocket_port=4223)
    block = text[text.index(v.public_key):]
    assert 'deny: [">"]' in block and "allow_responses" not in block
    assert websocket_listen(text) == ("127.0.0.1", 4223)


@pytest.fixture
async def served(tmp_path: Path):
    """A JetStream nats-server with a viewer, a host, and an operator watching everything."""
    v, host, watcher = Identity.generate(), Identity.generate(), Identity.generate()
    port, ws_port = free_port(), free_port()
    principals = [Principal(v.public_key, "viewer", "viewer"),
                  Principal(host.public_key, "host", "host"),
                  Principal(watcher.public_key, "operator", "watcher")]
    config = write_config(tmp_path / "nats.conf", render_principals(
        principals, port=port, jetstream_dir=str(tmp_path / "js"), websocket_port=ws_port))
    async with NatsServer(port=port, config=config) as server:
        yield server, ws_port, v, host, watcher


async def permission_error(nc: nats.NATS, subject: str) -> bool:
    for _ in range(50):
        if subject.lower() in str(nc.last_error).lower():
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.nats
async def test_a_viewer_cannot_publish_or_reach_jetstream_on_a_real_server(served) -> None:
    server, _, v, host, watcher = served
    nc = await nats.connect(server.url, nkeys_seed_str=v.seed, allow_reconnect=False)
    watch = await nats.connect(server.url, nkeys_seed_str=watcher.seed, allow_reconnect=False)
    hnc = await nats.connect(server.url, nkeys_seed_str=host.seed, allow_reconnect=False)
    try:
        heard: list[str] = []
        got: list[bytes] = []

        async def on_watch(msg) -> None:
            heard.append(msg.subject)

        async def on_feed(msg) -> None:
            got.append(msg.data)

        await watch.subscribe("tycoon.>", cb=on_watch)
        await watch.flush()
        await nc.subscribe(subjects.PRICES_ALL, cb=on_feed)
        await nc.flush()
        host_id = Principal(host.public_key, "host").id
        forged = seal(v, "price", {"host": host_id}, subject=subjects.price(host_id))
        for subject in (subjects.price(host_id), "tycoon.bank.transfer", "tycoon.sls.history"):
            await nc.publish(subject, forged)
            await nc.flush()
            assert await permission_error(nc, subject), (subject, nc.last_error)
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.request("$JS.API.INFO", b"", timeout=0.5)
        assert await permission_error(nc, "$JS.API.INFO")
        await nc.subscribe("$JS.API.>")
        await nc.flush()
        assert await permission_error(nc, "$JS.API.>")
        await nc.subscribe("tycoon.>")
        await nc.flush()
        assert await permission_error(nc, "tycoon.>")
        # the feed itself is readable: a host's own price reaches the viewer
        real = seal(host, "price", {"host": host_id}, subject=subjects.price(host_id))
        await hnc.publish(subjects.price(host_id), real)
        await hnc.flush()
        for _ in range(100):
            if got and heard:
                break
            await asyncio.sleep(0.05)
        assert got == [real]
        assert heard == [subjects.price(host_id)]  # nothing the viewer sent got through
        js = nc.jetstream(timeout=0.5)
        with pytest.raises(Exception):  # noqa: B017 (timeout or no responders)
            await js.account_info()
    finally:
        for conn in (nc, watch, hnc):
            await conn.close()


def _ws_handshake(port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    return sock, data


@pytest.mark.nats
async def test_the_websocket_listener_speaks_nats_and_asks_for_an_nkey(served) -> None:
    _, ws_port, *_ = served
    sock, data = await asyncio.to_thread(_ws_handshake, ws_port)
    with sock:
        assert data.startswith(b"HTTP/1.1 101"), data[:80]
        frame = data.split(b"\r\n\r\n", 1)[1] or await asyncio.to_thread(sock.recv, 65536)
    assert b"INFO " in frame and b'"nonce"' in frame  # nkey challenge, as over TCP
