"""Agent benchmark: acquire 100 hosts from nothing, and react to price changes.

A real market (bank, SLS, 100 simulated auctioneers) runs in a second process on a real
nats-server; the agent runs in this one, as it would on a user's machine.
(1) Time from the agent's start to bids placed on every host of its plan (SLS query,
plan, 100 bank transfers, 100 fundings, 100 bids); (2) latency from a price change
reaching the agent to its new bids being placed, over repeated competitor jumps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit_json, parser, percentile, table

from tycoon.agent.agent import Agent, AgentConfig
from tycoon.auctioneer.client import AuctioneerClient
from tycoon.bank.client import BankClient
from tycoon.bus.connection import open_bus
from tycoon.bus.keys import Identity
from tycoon.localmarket import start_market
from tycoon.log import configure_logging
from tycoon.money import MICRO
from tycoon.natsserver import NatsServer

HOSTS = 100
JUMPS = 30


async def serve_market(url: str, state: Path) -> None:
    """The second process: the market, until killed; its keys go to <state>/market.json."""
    configure_logging("error")
    market = await start_market(url, state, hosts=HOSTS, tick_s=1.0, heartbeat_s=5.0)
    while len(market.sls.registry.live_hosts(time.time_ns())) < HOSTS:
        await asyncio.sleep(0.1)
    info = {"bank": market.bank_key, "operator": market.operator.seed,
            "hosts": [[h.id, h.identity.public_key] for h in market.hosts]}
    (state / "market.json").write_text(json.dumps(info))
    await asyncio.Event().wait()


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--serve-market", nargs=2, metavar=("URL", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_market:
        await serve_market(args.serve_market[0], Path(args.serve_market[1]))
        return
    configure_logging("error")
    async with NatsServer() as server:
        with tempfile.TemporaryDirectory() as tmp:
            child = subprocess.Popen([sys.executable, __file__, "--serve-market", server.url,
                                      tmp])
            try:
                info_path = Path(tmp) / "market.json"
                while not info_path.exists():
                    if child.poll() is not None:
                        raise RuntimeError("the market process died")
                    await asyncio.sleep(0.2)
                result = await run(server.url, json.loads(info_path.read_text()), Path(tmp))
            finally:
                child.kill()
                child.wait()
    table("agent: 100 simulated hosts (market in a second process), real nats-server",
          [("acquire 100 hosts (s)", result["acquire_100_hosts_s"]),
           ("hosts in the plan", result["hosts_acquired"]),
           ("rebid p50 (ms)", result["rebid_p50_ms"]),
           ("rebid p99 (ms)", result["rebid_p99_ms"]),
           ("price jumps answered", result["rebids_measured"])], ("measure", "value"))
    emit_json(result, args.json)


async def run(url: str, info: dict, tmp: Path) -> dict:
    bank_key = info["bank"]
    user = await open_bus(url, Identity.generate())
    await BankClient(user, bank_key).open()
    operator = await open_bus(url, Identity.from_seed(info["operator"]))
    treasury = BankClient(operator, bank_key)
    await treasury.mint(user.identity.public_key, 10_000 * MICRO)
    # a per-host floor (max_hosts unset) and a budget that makes every host worth a bid
    # threshold=0: every noticeable price move is answered, so every jump is a sample
    # (with the default 5% hysteresis a jump on one host of 100 rarely moves money).
    agent = Agent(user, bank_key,
                  AgentConfig(budget=5_000 * MICRO, deadline_s=600, candidates=HOSTS,
                              replan_every_s=600, threshold=0.0), tmp / "agent.db")
    started = time.perf_counter()
    task = asyncio.create_task(agent.run())
    while agent.summary.rebids == 0:
        await asyncio.sleep(0.005)
    acquire = time.perf_counter() - started
    acquired = len(agent.plan.hosts) if agent.plan else 0
    rival = await open_bus(url, Identity.generate())
    bank = BankClient(rival, bank_key)
    await bank.open()
    await treasury.mint(rival.identity.public_key, 1_000_000 * MICRO)
    for n in range(JUMPS):
        host_id, host_key = info["hosts"][n % HOSTS]
        before = len(agent.summary.rebid_latencies_ms)
        receipt = await bank.transfer(host_key, 20_000 * MICRO)
        client = AuctioneerClient(rival, host_id)
        await client.fund(receipt)
        await client.bid("cpu:1,0,1", "600s")
        for _ in range(200):
            if len(agent.summary.rebid_latencies_ms) > before:
                break
            await asyncio.sleep(0.01)
    latencies = agent.summary.rebid_latencies_ms
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for bus in (user, operator, rival):
        await bus.close()
    return {
        "acquire_100_hosts_s": round(acquire, 3),
        "hosts_acquired": acquired,
        "rebid_p50_ms": round(percentile(latencies, 50), 1),
        "rebid_p99_ms": round(percentile(latencies, 99), 1),
        "rebids_measured": len(latencies),
        "jumps": JUMPS,
    }


if __name__ == "__main__":
    asyncio.run(main())
