"""Flood benchmark: one key floods an auctioneer; does another key's bid latency hold?

A real nats-server; the bank and one auctioneer (simulated driver) in a process of their
own, as a host runs them; a victim here, bidding at a steady pace and timing each signed
round trip (bid committed, shares applied, reply verified), first with the market idle,
then while an attacker — another funded key, in a third process — sends 20,000 valid
bids as fast as it can from several concurrent senders, without waiting for replies.
Rounds of idle and flood alternate; samples are pooled per phase. Goal: the victim's
flood p99 within 2x its idle p99. Reported: idle and flood p50/p99, their ratio, and the
attacker's requests refused as ``rate_limited`` (by the service's own counters).

Run: ``python benchmarks/flood.py [--json] [--requests N] [--senders K] [--rounds R]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgpack
from _common import emit_json, parser, percentile, table

from tycoon.auctioneer.client import AuctioneerClient
from tycoon.bank.client import BankClient
from tycoon.bus import subjects
from tycoon.bus.connection import open_bus
from tycoon.bus.envelope import HEADER_SIZE, SIGNATURE_SIZE, seal
from tycoon.bus.keys import Identity, host_id
from tycoon.log import configure_logging
from tycoon.natsserver import NatsServer

SPECS = ("1h cpu:2,0.1,1.0 memory:1,512MB,4GB", "2h cpu:1 net:1,10Mbps",
         "30m cpu:3,0.2 disk:1,1GB,10GB memory:1")
ATTACK = {"duration": "1h", "resources": "cpu:5 memory:5"}


# ---------------------------------------------------------------- the host's process

async def serve(url: str, state: Path) -> None:
    """Bank and auctioneer until killed (keys from <state>/keys.json)."""
    from tycoon.auctioneer.launch import start_auctioneer
    from tycoon.bank.launch import start_bank
    from tycoon.vmm.simulated import SimulatedDriver

    configure_logging("error")
    keys = json.loads((state / "keys.json").read_text())
    bank_id, host = Identity.from_seed(keys["bank"]), Identity.from_seed(keys["host"])
    await start_bank(url, bank_id, db=state / "bank.db", operator=keys["operator"])
    auctioneer = await start_auctioneer(
        url, host, bank_key=bank_id.public_key, driver=SimulatedDriver(preset="medium"),
        store_path=state / "host.db", tick_s=1.0, heartbeat_s=5.0)
    await BankClient(auctioneer.bus, bank_id.public_key).open(exist_ok=True)
    (state / "ready").write_text("1")
    await asyncio.Event().wait()


# ---------------------------------------------------------------- the attacker's process

async def attack(url: str, seed: str, host: str, requests: int, senders: int,
                 nice: int) -> None:
    """Send ``requests`` signed bids from ``senders`` tasks, open loop; report replies."""
    configure_logging("error")
    os.nice(nice)
    me = Identity.from_seed(seed)
    bus = await open_bus(url, me, name="flood-attacker")
    subject = subjects.host_op(host, "bid")
    codes: dict[str, int] = {}
    last = [time.perf_counter()]

    async def on_reply(msg: Any) -> None:  # count by code, cheaply (no signature check)
        last[0] = time.perf_counter()
        payload = msgpack.unpackb(memoryview(msg.data)[HEADER_SIZE:-SIGNATURE_SIZE])
        kind, body = payload[0], payload[5]
        code = body.get("code", "?") if kind == "error" else "ok"
        codes[code] = codes.get(code, 0) + 1

    inbox = f"{bus.inbox_prefix}.flood"
    sub = await bus.nc.subscribe(f"{inbox}.*", cb=on_reply)
    await bus.nc.flush()

    async def sender(k: int) -> None:
        for i in range(k, requests, senders):
            raw = seal(me, "host.bid", ATTACK, subject=subject)
            await bus.nc.publish(subject, raw, reply=f"{inbox}.{i}")
            if i % 64 == k:
                await asyncio.sleep(0)  # let the other senders interleave

    print("start", flush=True)
    start = time.perf_counter()
    await asyncio.gather(*(sender(k) for k in range(senders)))
    await bus.nc.flush()
    sent_s = time.perf_counter() - start
    print("sent", flush=True)
    last[0] = time.perf_counter()
    while time.perf_counter() - last[0] < 1.0 and sum(codes.values()) < requests:
        await asyncio.sleep(0.05)
    await sub.unsubscribe()
    await bus.close()
    print(json.dumps({"sent": requests, "send_s": sent_s, "replies": codes}), flush=True)


# ---------------------------------------------------------------- the victim (here)

async def victim_phase(client: AuctioneerClient, pace_s: float, stop: asyncio.Event,
                       count: int | None = None) -> list[float]:
    """Bid every ``pace_s`` until ``stop`` is set (or ``count`` bids); latencies in ms."""
    latencies: list[float] = []
    k = 0
    next_at = time.perf_counter()
    while not stop.is_set() and (count is None or k < count):
        start = time.perf_counter()
        await client.bid(SPECS[k % len(SPECS)])
        latencies.append((time.perf_counter() - start) * 1e3)
        k += 1
        next_at += pace_s
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    return latencies


async def flood_round(url: str, client: AuctioneerClient, attacker: Identity, host: str,
                      args: Any) -> tuple[list[float], dict[str, Any]]:
    """Start the attacker; time the victim from its first send until it has finished."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--attack", url, attacker.seed, host,
        str(args.requests), str(args.senders), str(args.attacker_nice), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"start"
    stop = asyncio.Event()
    sampling = asyncio.create_task(victim_phase(client, args.pace_ms / 1e3, stop))
    lines = [line async for line in proc.stdout]
    stop.set()
    await proc.wait()
    latencies = await sampling
    return latencies, json.loads(lines[-1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def service_stats(bus: Any) -> dict[str, Any]:
    """The auctioneer's own counters, through the NATS micro services API."""
    reply = await bus.nc.request("$SRV.STATS.tycoon-auctioneer", b"", timeout=5)
    return dict(json.loads(reply.data)["endpoints"][0]["data"])


async def run(args: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        bank_id, operator, host, victim, attacker = (Identity.generate() for _ in range(5))
        (state / "keys.json").write_text(json.dumps(
            {"bank": bank_id.seed, "host": host.seed, "operator": operator.public_key}))
        async with NatsServer() as server:
            proc = subprocess.Popen([sys.executable, __file__, "--serve", server.url, tmp])
            buses = []
            try:
                while not (state / "ready").exists():
                    if proc.poll() is not None:
                        raise RuntimeError("the host process died")
                    await asyncio.sleep(0.05)
                buses = [await open_bus(server.url, i) for i in (operator, victim, attacker)]
                hid = host_id(host.public_key)
                clients = []
                for bus in buses[1:]:  # victim and attacker: bank account, money, host account
                    bank = BankClient(bus, bank_id.public_key)
                    await bank.open()
                    await BankClient(buses[0], bank_id.public_key).mint(bus.identity.public_key,
                                                                        10**13)
                    client = AuctioneerClient(bus, hid)
                    await client.fund(await bank.transfer(host.public_key, 10**12))
                    clients.append(client)
                await clients[1].bid(f"{ATTACK['duration']} {ATTACK['resources']}")
                await victim_phase(clients[0], args.pace_ms / 1e3, asyncio.Event(),
                                   count=20)  # warm up
                idle: list[float] = []
                flood: list[float] = []
                attacks: list[dict[str, Any]] = []
                for _ in range(args.rounds):
                    idle += await victim_phase(clients[0], args.pace_ms / 1e3, asyncio.Event(),
                                               count=args.idle)
                    cpu0 = cpu_seconds(proc.pid)
                    lat, report = await flood_round(server.url, clients[0], attacker, hid, args)
                    report["host_cpu_s"] = cpu_seconds(proc.pid) - cpu0
                    flood += lat
                    attacks.append(report)
                stats = await service_stats(buses[1])
            finally:
                for bus in buses:
                    await bus.close()
                proc.terminate()
                proc.wait(timeout=10)
    refused = sum(a["replies"].get("rate_limited", 0) for a in attacks)
    sent = sum(a["sent"] for a in attacks)
    idle_p99, flood_p99 = percentile(idle, 99), percentile(flood, 99)
    return {
        "idle_p50_ms": round(percentile(idle, 50), 3), "idle_p99_ms": round(idle_p99, 3),
        "flood_p50_ms": round(percentile(flood, 50), 3), "flood_p99_ms": round(flood_p99, 3),
        "ratio": round(flood_p99 / idle_p99, 3),
        "idle_samples": len(idle), "flood_samples": len(flood),
        "attack_requests": sent,
        "attack_per_s": round(sent / sum(a["send_s"] for a in attacks)),
        "attacker_nice": args.attacker_nice,
        "host_cpu_us_per_attack_request": round(
            1e6 * sum(a["host_cpu_s"] for a in attacks) / sent, 1),
        "attack_ok": sum(a["replies"].get("ok", 0) for a in attacks),
        "attack_refused_replied": refused,
        "service_rate_limited": stats.get("rate_limited", 0),
        "service_unanswered": stats.get("unanswered", 0),
        "service_requests": stats.get("requests", 0),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        asyncio.run(serve(sys.argv[2], Path(sys.argv[3])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--attack":
        url, seed, host, requests, senders, nice = sys.argv[2:8]
        asyncio.run(attack(url, seed, host, int(requests), int(senders), int(nice)))
        return
    p = parser(__doc__ or "")
    p.add_argument("--requests", type=int, default=20_000, help="attacker requests per round")
    p.add_argument("--senders", type=int, default=4, help="attacker's concurrent senders")
    p.add_argument("--rounds", type=int, default=5, help="idle + flood rounds, pooled")
    p.add_argument("--idle", type=int, default=60, help="victim bids per idle phase")
    p.add_argument("--pace-ms", type=float, default=60.0,
                   help="victim's bid period, ms (within the auctioneer's per-key limit)")
    p.add_argument("--attacker-nice", type=int, default=0,
                   help="run the attacker at this nice level (19: it takes only CPU time the "
                        "host process leaves, as if it ran on another machine)")
    args = p.parse_args()
    configure_logging("error")
    out = asyncio.run(run(args))
    table("Victim bid round trip (ms), idle and during the flood",
          [("idle", out["idle_samples"], out["idle_p50_ms"], out["idle_p99_ms"]),
           ("flood", out["flood_samples"], out["flood_p50_ms"], out["flood_p99_ms"])],
          ("phase", "samples", "p50", "p99"))
    table("Attacker", [(out["attack_requests"], out["attack_per_s"], out["attack_ok"],
                        out["service_rate_limited"], out["attack_refused_replied"],
                        out["service_unanswered"])],
          ("requests", "per s", "admitted", "rate_limited", "refusals replied", "unanswered"))
    print(f"\nattacker: {out['attack_per_s']:,} requests/s (nice {args.attacker_nice})")
    print(f"\nhost process CPU per attacker request: {out['host_cpu_us_per_attack_request']} us")
    print(f"\ngoal: flood p99 <= 2 x idle p99 (ratio {out['ratio']:.2f})")
    emit_json(out, args.json)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
