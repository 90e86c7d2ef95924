"""The bus over a real nats-server: signed request/reply, rejections, two processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest

from tycoon.bus import subjects
from tycoon.bus.connection import Bus, connect
from tycoon.bus.envelope import Message, seal
from tycoon.bus.keys import Identity
from tycoon.bus.service import Endpoint, Service
from tycoon.errors import Rejected

pytestmark = pytest.mark.nats


async def echo(msg: Message) -> dict:
    if msg.body.get("boom"):
        raise RuntimeError("handler bug")
    if msg.body.get("refuse"):
        raise Rejected("overdraft", "not enough")
    return {"echo": msg.body}


@pytest.fixture
async def echo_service(nats_url: str):
    async with connect(nats_url, Identity.generate()) as bus:
        service = Service(bus, "tycoon-test", [Endpoint(subjects.DEMO_ECHO, "demo.echo", echo)])
        async with service:
            yield service


async def test_signed_round_trip_and_error_replies(nats_url: str, echo_service: Service) -> None:
    async with connect(nats_url, Identity.generate()) as bus:
        reply = await bus.request(subjects.DEMO_ECHO, "demo.echo", {"x": 1})
        assert reply.kind == "reply" and reply.body == {"echo": {"x": 1}}
        assert reply.sender == echo_service.bus.identity.public_key
        with pytest.raises(Rejected) as info:
            await bus.request(subjects.DEMO_ECHO, "demo.echo", {"refuse": True})
        assert info.value.code == "overdraft" and info.value.message == "not enough"
        with pytest.raises(Rejected) as info:
            await bus.request(subjects.DEMO_ECHO, "demo.echo", {"boom": True})
        assert info.value.code == "internal"
        # the subscription survived the handler's exception
        assert (await bus.request(subjects.DEMO_ECHO, "demo.echo", {})).kind == "reply"
        with pytest.raises(Rejected) as info:
            await bus.request(subjects.DEMO_ECHO, "bank.transfer", {})
        assert info.value.code == "unknown_kind"
    assert echo_service.stats.errors["internal"] == 1
    assert echo_service.stats.rejections["unknown_kind"] == 1


async def raw_request(bus, subject: str, data: bytes) -> Rejected | Message:
    resp = await bus.nc.request(subject, data, timeout=2)
    try:
        return bus.check_reply(data, resp.data)
    except Rejected as error:
        return error


async def test_replay_wrong_subject_and_tampering_get_error_replies(
    nats_url: str, echo_service: Service
) -> None:
    async with connect(nats_url, Identity.generate()) as bus:
        me = bus.identity
        good = seal(me, "demo.echo", {"n": 1}, subject=subjects.DEMO_ECHO)
        assert isinstance(await raw_request(bus, subjects.DEMO_ECHO, good), Message)
        replayed = await raw_request(bus, subjects.DEMO_ECHO, good)
        assert isinstance(replayed, Rejected) and replayed.code == "replayed"
        # signed for the bank, sent to the echo service
        other = seal(me, "demo.echo", {}, subject="tycoon.bank.transfer")
        wrong = await raw_request(bus, subjects.DEMO_ECHO, other)
        assert isinstance(wrong, Rejected) and wrong.code == "wrong_subject"
        stale = seal(me, "demo.echo", {}, subject=subjects.DEMO_ECHO, ts_ns=1)
        old = await raw_request(bus, subjects.DEMO_ECHO, stale)
        assert isinstance(old, Rejected) and old.code == "stale"
        tampered = bytearray(seal(me, "demo.echo", {"a": 1}, subject=subjects.DEMO_ECHO))
        tampered[-70] ^= 1
        bad = await raw_request(bus, subjects.DEMO_ECHO, bytes(tampered))
        assert isinstance(bad, Rejected) and bad.code == "bad_signature"
        junk = await raw_request(bus, subjects.DEMO_ECHO, b"not an envelope at all")
        assert isinstance(junk, Rejected) and junk.code == "malformed"
    rejections = echo_service.stats.rejections
    assert rejections["replayed"] == 1 and rejections["wrong_subject"] == 1
    assert rejections["stale"] == 1 and rejections["bad_signature"] == 1


async def test_reply_for_another_request_is_refused(nats_url: str) -> None:
    async with connect(nats_url, Identity.generate()) as bus:
        first = seal(bus.identity, "demo.echo", {}, subject=subjects.DEMO_ECHO)
        second = seal(bus.identity, "demo.echo", {}, subject=subjects.DEMO_ECHO)
        import hashlib

        reply = seal(bus.identity, "reply", {}, answers=hashlib.sha256(first).digest())
        with pytest.raises(Rejected, match="wrong_reply"):
            bus.check_reply(second, reply)


async def watch_prices(watcher: Bus, **options: Any) -> list[Message]:
    """Subscribe ``watcher`` to every price subject; the list fills as messages come."""
    seen: list[Message] = []

    async def on_event(msg: Message) -> None:
        seen.append(msg)

    await watcher.subscribe("tycoon.price.*", on_event, **options)
    await watcher.flush()
    return seen


async def test_subscribers_drop_and_count_bad_events(nats_url: str) -> None:
    host = Identity.generate()
    async with connect(nats_url, Identity.generate()) as watcher, connect(nats_url, host) as pub:
        seen = await watch_prices(watcher)
        await pub.publish("tycoon.price.h1", "price", {"p": 1})
        await pub.nc.publish("tycoon.price.h1", b"garbage")
        await pub.nc.publish(
            "tycoon.price.h2", seal(host, "price", {"p": 2}, subject="tycoon.price.h1")
        )
        await pub.flush()
        for _ in range(50):
            if sum(watcher.rejected.values()) >= 2 and seen:
                break
            await asyncio.sleep(0.02)
        assert [m.body for m in seen] == [{"p": 1}]
        assert watcher.rejected["malformed"] == 1 and watcher.rejected["wrong_subject"] == 1


async def test_skipped_subjects_are_dropped_before_any_check(nats_url: str) -> None:
    host = Identity.generate()
    async with connect(nats_url, Identity.generate()) as watcher, connect(nats_url, host) as pub:
        seen = await watch_prices(watcher, skip=lambda s: s.endswith(".h2"))
        await pub.publish("tycoon.price.h2", "price", {"p": 2})
        await pub.nc.publish("tycoon.price.h2", b"garbage")  # not even looked at
        await pub.publish("tycoon.price.h1", "price", {"p": 1})
        await pub.flush()
        for _ in range(50):
            if seen:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert [m.body for m in seen] == [{"p": 1}]
        assert not watcher.rejected


async def test_no_responder_is_unavailable(nats_url: str) -> None:
    async with connect(nats_url, Identity.generate()) as bus:
        with pytest.raises(Rejected, match="unavailable"):
            await bus.request("tycoon.bank.open", "bank.open", {}, timeout=1)


async def test_micro_discovery(nats_url: str, echo_service: Service) -> None:
    async with connect(nats_url, Identity.generate()) as bus:
        resp = await bus.nc.request("$SRV.PING.tycoon-test", b"", timeout=2)
        assert b"tycoon-test" in resp.data


async def test_two_processes_request_reply(nats_url: str) -> None:
    env = {**os.environ, "TYCOON_LOG": "error"}
    server = subprocess.Popen(
        [sys.executable, "-m", "tycoon.cli.main", "--nats", nats_url, "demo", "serve"],
        stdout=subprocess.PIPE, env=env, text=True,
    )
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), 30)
        assert "ready" in line
        async with connect(nats_url, Identity.generate()) as bus:
            reply = await bus.request(subjects.DEMO_ECHO, "demo.echo", {"text": "hi"})
            assert reply.body["text"] == "hi" and reply.sender != bus.identity.public_key
            with pytest.raises(Rejected, match="malformed"):
                await bus.request(subjects.DEMO_ECHO, "demo.echo", {"text": ""})
        server.terminate()  # SIGTERM drains and exits cleanly
        assert await asyncio.to_thread(server.wait, 10) == 0
    finally:
        if server.poll() is None:
            server.kill()


def test_demo_command_runs_end_to_end() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tycoon.cli.main", "demo"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("verified reply:") == 2
    assert "verified error reply: code=malformed" in out.stdout
