"""The SLS over a real nats-server: signed prices in, queries answered by replicas."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from polling import until

from tycoon.bus import subjects
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.envelope import Message, seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.errors import Rejected
from tycoon.sls.client import HostRow, SLSClient
from tycoon.sls.service import SLSConfig, SLSService

pytestmark = pytest.mark.nats

FAST = SLSConfig(sweep_s=0.05, snapshot_s=0.2)


def price_body(host: Identity, seq: int, price: float, *, hb: float = 5.0, cap: int = 1000) -> dict:
    return {
        "host": subject_id(host.public_key),
        "seq": seq,
        "heartbeat_s": hb,
        "name": f"node-{subject_id(host.public_key)[:4]}",
        "driver": "sim",
        "resources": {
            "cpu": {
                "capacity": cap,
                "price": price,
                "unit_price": price / cap,
                "utilization": 0.25,
                "bidders": 2,
            }
        },
    }


async def publish_price(bus: Bus, host: Identity, seq: int, price: float, **kw: Any) -> None:
    await bus.publish(subjects.price(subject_id(host.public_key)), "price",
                      price_body(host, seq, price, **kw))
    await bus.flush()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    await until(check, timeout=timeout, every=0.02)


@asynccontextmanager
async def sls_replica(url: str, config: SLSConfig = FAST) -> AsyncIterator[SLSService]:
    bus = await open_bus(url, Identity.generate(), name="test-sls")
    try:
        async with SLSService(bus, config) as sls:
            yield sls
    finally:
        await bus.close()


@asynccontextmanager
async def principals(url: str, n: int) -> AsyncIterator[list[tuple[Identity, Bus]]]:
    idents = [Identity.generate() for _ in range(n)]
    buses = [await open_bus(url, i) for i in idents]
    try:
        yield list(zip(idents, buses, strict=True))
    finally:
        for bus in buses:
            await bus.close()


async def total(client: SLSClient) -> int:
    body = await client.page("cpu", statistics=False)
    return int(body["total"])


async def test_query_and_host_over_nats(nats_url: str) -> None:
    async with sls_replica(nats_url), principals(nats_url, 4) as ps:
        (_, user_bus), hosts = ps[0], ps[1:]
        for i, (host, bus) in enumerate(hosts):
            await publish_price(bus, host, 1, 1.0 + i, cap=1000 * (i + 1))
        client = SLSClient(user_bus)

        async def all_listed() -> bool:
            return await total(client) == 3

        await eventually(all_listed)
        rows = await client.rows("cpu")
        assert all(isinstance(r, HostRow) for r in rows)
        assert [r.capacity_per_price for r in rows] == sorted(
            (r.capacity_per_price for r in rows), reverse=True
        )
        assert rows[0].statistics is not None
        assert rows[0].statistics.windows["minute"].count == 1
        assert {r.public_key for r in rows} == {h.public_key for h, _ in hosts}
        full = await client.host(rows[0].host)
        assert full["resources"]["cpu"]["capacity"] == rows[0].capacity
        with pytest.raises(Rejected) as info:
            await client.host("nosuchhost000000")
        assert info.value.code == "unknown_host"
        with pytest.raises(Rejected) as info:
            await user_bus.request(subjects.sls("query"), "sls.query", {"sort": "bogus"})
        assert info.value.code == "malformed"
        cheap = await client.query("cpu", max_unit_price=1.0 / 1000, statistics=False)
        assert [r["unit_price"] <= 0.001 for r in cheap] == [True] * len(cheap)


async def test_update_signed_by_another_key_is_ignored_and_counted(nats_url: str) -> None:
    async with sls_replica(nats_url) as sls, principals(nats_url, 3) as ps:
        (host, host_bus), (thief, thief_bus), (_, user_bus) = ps
        await publish_price(host_bus, host, 1, 1.0)
        victim = subject_id(host.public_key)
        # 1. the thief signs an update for the victim's subject
        await thief_bus.publish(subjects.price(victim), "price", price_body(host, 2, 999.0))
        # 2. the thief claims the victim's host id on its own subject
        await thief_bus.publish(
            subjects.price(subject_id(thief.public_key)), "price", price_body(host, 3, 999.0)
        )
        # 3. a forged signature: the victim's update with a flipped body byte
        raw = bytearray(seal(host, "price", price_body(host, 4, 999.0),
                             subject=subjects.price(victim)))
        raw[-70] ^= 0x01
        await thief_bus.nc.publish(subjects.price(victim), bytes(raw))
        await thief_bus.flush()

        async def counted() -> bool:
            return sls.counters().get("forbidden") == 2 and sls.counters().get("bad_signature") == 1

        await eventually(counted)
        assert sls.bus.rejected["forbidden"] == 2 and sls.bus.rejected["bad_signature"] == 1
        rows = await SLSClient(user_bus).query("cpu")
        assert [(r["host"], r["price"], r["seq"]) for r in rows] == [(victim, 1.0, 1)]


async def test_out_of_order_update_is_ignored(nats_url: str) -> None:
    async with sls_replica(nats_url) as sls, principals(nats_url, 2) as ps:
        (host, host_bus), (_, user_bus) = ps
        await publish_price(host_bus, host, 5, 2.0)
        await publish_price(host_bus, host, 3, 99.0)

        async def counted() -> bool:
            return sls.counters().get("out_of_order") == 1

        await eventually(counted)
        full = await SLSClient(user_bus).host(subject_id(host.public_key))
        assert (full["seq"], full["resources"]["cpu"]["price"]) == (5, 2.0)
        assert full["resources"]["cpu"]["statistics"]["windows"]["minute"]["count"] == 1


async def test_silent_host_disappears_after_its_heartbeats(nats_url: str) -> None:
    async with sls_replica(nats_url), principals(nats_url, 3) as ps:
        (quiet, quiet_bus), (chatty, chatty_bus), (_, user_bus) = ps
        client = SLSClient(user_bus)
        await publish_price(quiet_bus, quiet, 1, 1.0, hb=0.2)
        await publish_price(chatty_bus, chatty, 1, 1.0, hb=0.2)

        async def both() -> bool:
            return await total(client) == 2

        await eventually(both)
        seq = 1

        async def only_chatty() -> bool:
            nonlocal seq
            seq += 1
            await publish_price(chatty_bus, chatty, seq, 1.0, hb=0.2)
            rows = await client.query("cpu", statistics=False)
            return [r["host"] for r in rows] == [subject_id(chatty.public_key)]

        await eventually(only_chatty)
        with pytest.raises(Rejected) as info:
            await client.host(subject_id(quiet.public_key))
        assert info.value.code == "unknown_host"
        # it speaks again: it is back
        await publish_price(quiet_bus, quiet, 2, 1.0, hb=0.2)
        await publish_price(chatty_bus, chatty, seq + 1, 1.0, hb=0.2)
        await eventually(both)


async def test_two_replicas_give_the_same_answer(nats_url: str) -> None:
    async with (
        sls_replica(nats_url) as one,
        sls_replica(nats_url) as two,
        principals(nats_url, 9) as ps,
    ):
        (_, user_bus), hosts = ps[0], ps[1:]
        for seq in range(1, 6):
            for i, (host, bus) in enumerate(hosts):
                await publish_price(bus, host, seq, float((i * 7 + seq * 3) % 5), cap=1000 + i)

        async def both_complete() -> bool:
            return all(
                sls.counters().get("accepted") == 5 * len(hosts) for sls in (one, two)
            )

        await eventually(both_complete)
        answers: dict[str, Any] = {}
        request = {"resource": "cpu", "limit": 100}
        for _ in range(200):
            reply: Message = await user_bus.request(subjects.sls("query"), "sls.query", request)
            answers.setdefault(reply.sender, reply.body)
            if len(answers) == 2:
                break
        assert set(answers) == {one.bus.identity.public_key, two.bus.identity.public_key}
        first, second = answers.values()
        assert first == second
        assert first["total"] == 8 and len(first["rows"]) == 8


async def test_snapshot_is_published(nats_url: str) -> None:
    async with sls_replica(nats_url), principals(nats_url, 2) as ps:
        (host, host_bus), (_, watcher) = ps
        seen: list[Message] = []

        async def on_snapshot(msg: Message) -> None:
            seen.append(msg)

        await watcher.subscribe(subjects.SLS_SNAPSHOT, on_snapshot)
        await watcher.flush()
        await publish_price(host_bus, host, 1, 4.0, cap=2000)

        async def has_host() -> bool:
            return any(m.body["hosts"] == 1 for m in seen)

        await eventually(has_host)
        snap = next(m.body for m in seen if m.body["hosts"] == 1)
        assert seen[-1].kind == "sls.snapshot"
        assert snap["resources"]["cpu"]["capacity"] == 2000
        assert snap["resources"]["cpu"]["unit_price"] == pytest.approx(4.0 / 2000)
        assert snap["counters"]["accepted"] >= 1


async def test_cli_hosts(nats_url: str, tmp_path: Path) -> None:
    async with sls_replica(nats_url), principals(nats_url, 2) as ps:
        (host, host_bus), (_, user_bus) = ps
        await publish_price(host_bus, host, 1, 3.0, cap=4000)

        async def listed() -> bool:
            return await total(SLSClient(user_bus)) == 1

        await eventually(listed)
        env = {**os.environ, "TYCOON_HOME": str(tmp_path), "TYCOON_NATS": nats_url}

        async def run(*args: str) -> str:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tycoon.cli.main", *args, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            return out.decode()

        body = json.loads((await run("hosts", "--json", "--min-capacity", "2k")).splitlines()[-1])
        assert body["total"] == 1 and body["rows"][0]["capacity"] == 4000
        table = await run("hosts", "--resource", "cpu", "--max-price", "0.01")
        assert subject_id(host.public_key) in table and "4,000 MHz" in table
        none = json.loads((await run("hosts", "--json", "--max-price", "0.0001")).splitlines()[-1])
        assert none["total"] == 0
