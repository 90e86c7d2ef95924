"""tap, top and status against a real nats-server (the market-wide checks live with `tycoon up`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from polling import subscribed, until

from tycoon.bank.receipt import make_receipt
from tycoon.bus import subjects
from tycoon.bus.connection import connect
from tycoon.bus.envelope import Message, open_envelope, seal
from tycoon.bus.keys import Identity, host_id
from tycoon.bus.service import Endpoint, Service
from tycoon.cli.status import discover, healthy
from tycoon.cli.tap import line_for, summarize
from tycoon.cli.top import MarketView
from tycoon.messages.agent import AgentRebid, AgentWarning
from tycoon.messages.market import Alloc
from tycoon.natsserver import NatsServer

pytestmark = pytest.mark.nats

HOST = Identity.generate()
HID = host_id(HOST.public_key)
PRICE = {"host": HID, "seq": 1, "name": "alpha", "driver": "simulated", "heartbeat_s": 5.0,
         "resources": {"cpu": {"capacity": 4000, "price": 2.5, "unit_price": 0.000625,
                               "utilization": 0.5, "bidders": 2}}}


def tycoon(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tycoon.cli.main", *args],
                          capture_output=True, text=True, timeout=timeout)


async def test_tap_prints_verified_events_and_flags_forgeries(
        nats_monitored: NatsServer) -> None:
    nats_url = nats_monitored.url
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tycoon.cli.main", "--nats", nats_url, "tap", "--count", "3",
        "--timeout", "30", stdout=asyncio.subprocess.PIPE)
    await until(lambda: subscribed(nats_monitored, subjects.price(HID)), timeout=30,
                what="the tap subscribed")
    async with connect(nats_url, HOST) as bus:
        subject = subjects.price(HID)
        await bus.publish(subject, "price", PRICE)
        forged = bytearray(seal(HOST, "price", PRICE, subject=subject))
        forged[-1] ^= 1
        await bus.nc.publish(subject, bytes(forged))
        await bus.nc.publish(subject, seal(HOST, "price", PRICE, subject="tycoon.price.other"))
        await bus.flush()
    out, _ = await asyncio.wait_for(proc.communicate(), 40)
    lines = out.decode().splitlines()
    assert len(lines) == 3
    # 2.5 µcredits/s, shown as credits/s with six decimals
    assert " price " in lines[0] and "cpu=0.000003" in lines[0] and HID in lines[0]
    assert "REJECTED bad_signature" in lines[1]
    assert "REJECTED wrong_subject" in lines[2]


def test_tap_json_and_raw_lines() -> None:
    from types import SimpleNamespace

    from tycoon.bus.connection import Bus

    bus = Bus(SimpleNamespace(), Identity.generate())  # verify() needs no connection
    subject = subjects.price(HID)
    line = line_for(subject, seal(HOST, "price", PRICE, subject=subject), bus,
                    as_json=True, raw=True)
    assert '"kind": "price"' in line and '"raw": "5459' in line


def test_market_view_folds_events() -> None:
    view = MarketView()
    subject = subjects.price(HID)
    view.feed(open_envelope(seal(HOST, "price", PRICE, subject=subject)))
    alloc = Alloc(HID, 1, {"Uabc": {"cpu": 0.75, "memory": 0.5, "rate": {"cpu": 7_250_000}}},
                  {}, {}).to_body()
    view.feed(open_envelope(seal(HOST, "alloc", alloc, subject=subjects.alloc(HID))))
    bank, payer = Identity.generate(), Identity.generate()
    receipt = make_receipt(bank, transfer_id="t1", payer=payer.public_key,
                           payee=HOST.public_key, amount=1_500_000, memo="fund", seq=1,
                           settled_ns=1)
    view.feed(open_envelope(seal(bank, "bank.settled", {"receipts": [receipt]},
                                 subject=subjects.BANK_SETTLED)))
    rebid = AgentRebid(epoch=2, reason="price moved", summary="moved 3 bids", funded={},
                       refunded={}, errors={}).to_body()
    view.feed(open_envelope(seal(HOST, "agent.rebid", rebid,
                                 subject=subjects.agent("a1", "rebid"))))
    warning = AgentWarning("host down", {"host": HID}).to_body()
    view.feed(open_envelope(seal(HOST, "agent.warning", warning,
                                 subject=subjects.agent("a1", "warning"))))
    assert view.hosts[HID].name == "alpha" and view.hosts[HID].accounts["Uabc"]["cpu"] == 0.75
    assert "1.5" in view.transfers[0] and "rebid moved 3 bids" in view.decisions[1]
    assert "warning host down" in view.decisions[0]
    # bodies their class refuses are counted, not shown (nor do they blank a host's rows)
    events = view.events
    for kind, body in (("alloc", {"host": HID, "seq": 2, "accounts": {}}),
                       ("agent.rebid", {"summary": "half a body"})):
        view.feed(open_envelope(seal(HOST, kind, body, subject=subjects.alloc(HID))))
    assert view.events == events + 2 and "half a body" not in " ".join(view.decisions)
    assert view.hosts[HID].accounts
    from rich.console import Console

    console = Console(width=160, record=True)
    console.print(view.render())
    text = console.export_text()
    assert "alpha" in text and "75.0%" in text and "7.2500" in text


async def test_status_discovers_micro_services_and_checks(nats_url: str) -> None:
    async def ok(msg: Message) -> dict:
        return {}

    assert tycoon("--nats", nats_url, "status", "--check").returncode == 1
    async with connect(nats_url, Identity.generate()) as bus:
        services = [Service(bus, name, [Endpoint(f"tycoon.demo.{name[7:]}", "demo.echo", ok)])
                    for name in ("tycoon-bank", "tycoon-sls", "tycoon-auctioneer")]
        for s in services:
            await s.start()
        rows = await discover(bus.nc, 0.5)
        assert healthy(rows) and {r["name"] for r in rows} >= {"tycoon-bank", "tycoon-sls"}
        check = await asyncio.to_thread(tycoon, "--nats", nats_url, "status", "--check")
        assert check.returncode == 0, check.stdout + check.stderr
        await services[0].stop()
        check = await asyncio.to_thread(tycoon, "--nats", nats_url, "status", "--check")
        assert check.returncode == 1 and "missing: tycoon-bank" in check.stdout
        for s in services[1:]:
            await s.stop()


def test_status_without_server_fails_fast() -> None:
    out = tycoon("--nats", "nats://127.0.0.1:1", "status", "--check", timeout=30)
    assert out.returncode == 1


def test_tap_shows_logged_receipts_as_receipts() -> None:
    from types import SimpleNamespace

    from tycoon.bus.connection import Bus

    bank, payer = Identity.generate(), Identity.generate()
    raw = make_receipt(bank, transfer_id="t9", payer=payer.public_key, payee=HOST.public_key,
                       amount=2_500_000, memo="", seq=9, settled_ns=1)
    bus = Bus(SimpleNamespace(), Identity.generate())
    subject = subjects.settlement(host_id(payer.public_key), HID)
    line = line_for(subject, raw, bus, as_json=False, raw=False)
    assert "bank.receipt" in line and "2.5" in line and "REJECTED" not in line
    forged = bytearray(raw)
    forged[-1] ^= 1
    assert "REJECTED bad_signature" in line_for(subject, bytes(forged), bus, as_json=False,
                                                 raw=False)


def test_tap_reads_each_body_with_its_class() -> None:
    def line(kind: str, body: dict[str, Any], subject: str) -> str:
        return summarize(open_envelope(seal(HOST, kind, body, subject=subject)))

    alloc = Alloc(HID, 3, {"Uabcdefghij": {"cpu": 0.25}}, {}, {}).to_body()
    assert line("alloc", alloc, subjects.alloc(HID)) == f"host={HID} accounts=1 Uabcdefg:cpu=0.25"
    assert line("alloc", {"host": HID, "accounts": {}}, subjects.alloc(HID)) \
        == "malformed alloc: missing field 'seq'"
    rebid = AgentRebid(2, "moved", "3 bids", {}, {}, {}).to_body()
    assert line("agent.rebid", rebid, subjects.agent("a1", "rebid")).startswith(
        "epoch=2 reason=moved summary=3 bids")
    assert line("agent.rebid", {"summary": "x"}, subjects.agent("a1", "rebid")) \
        == "malformed agent.rebid: missing field 'epoch'"
    assert line("price", {**PRICE, "seq": "one"}, subjects.price(HID)).startswith(
        "malformed price:")
