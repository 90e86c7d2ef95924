"""Agent benchmark: acquire 100 hosts from nothing, and react to price changes.

By default in one process with no server: the real AgentCore and Allocator (and journal)
against in-memory hosts and bank (benchmarks/_agent_local.py), the agent's own work.
With ``--connected``: a real market runs on a real nats-server as it would be deployed:
the bank and the SLS in one process (the central services), the 100 simulated
auctioneers in two more (hosts are other machines in a real cluster; one process per
core is as close as this machine gets); the agent runs in this one, as on a user's
machine, and a rival user in another. (1) Time from the agent's start to bids placed on
every host of its plan (SLS query, plan, 100 bank transfers, 100 fundings, 100 bids);
(2) latency from a price change reaching the agent to its new plan's bids being placed,
over repeated competitor jumps (a competitor outbids it on 10 hosts at once; the agent
runs with its default settings); the whole answer, with the parks of the hosts it leaves
(sent after the plan's bids); and how long the money moves behind those bids take once
prices are quiet (refunds, transfers, top-ups; they start ``settle_delay_s`` after the
last plan).
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

from _agent_local import run_local
from _common import emit_json, parser, percentile, table

from tycoon.agent.agent import Agent, AgentConfig
from tycoon.auctioneer.client import AuctioneerClient
from tycoon.bank.client import BankClient
from tycoon.bus.connection import open_bus
from tycoon.bus.keys import Identity
from tycoon.log import configure_logging
from tycoon.money import MICRO
from tycoon.natsserver import NatsServer
from tycoon.testing.localmarket import PRESETS, LocalMarket

HOSTS = 100
HOST_PROCESSES = 2
"""The hosts are simulated in this many processes (each host is a machine of its own in a
real cluster; one per core is as close as this machine gets)."""
JUMPS = 30
WIDTH = 10


async def serve_central(url: str, state: Path) -> None:
    """The bank and the SLS, until killed; their keys go to <state>/central.json."""
    configure_logging("error")
    market = LocalMarket(url, state, Identity.generate(), Identity.generate())
    await market.start_bank()
    await market.start_sls()
    (state / "central.json").write_text(json.dumps(
        {"bank": market.bank_identity.seed, "operator": market.operator.seed}))
    while market.sls is None or len(market.sls.registry.live_hosts(time.time_ns())) < HOSTS:
        await asyncio.sleep(0.1)
    (state / "market.json").write_text(json.dumps({"bank": market.bank_key,
                                                   "operator": market.operator.seed}))
    await asyncio.Event().wait()


async def serve_hosts(url: str, state: Path, part: int) -> None:
    """Part ``part`` of the auctioneers, until killed; their keys go to
    <state>/hosts-<part>.json."""
    configure_logging("error")
    central = json.loads((state / "central.json").read_text())
    market = LocalMarket(url, state, Identity.from_seed(central["bank"]),
                         Identity.from_seed(central["operator"]))
    # The hosts of a process share one NATS connection (each still signs with its own
    # key): fifty connections' reader and flusher tasks would cost this simulation more
    # CPU than the auctioneers themselves, which on a cluster each have a machine.
    connection = await market.bus()
    for i in range(part, HOSTS, HOST_PROCESSES):
        await market.add_host(PRESETS[i % len(PRESETS)], tick_s=1.0, heartbeat_s=5.0,
                              connection=connection)
    (state / f"hosts-{part}.json").write_text(json.dumps(
        [[h.id, h.identity.public_key] for h in market.hosts]))
    await asyncio.Event().wait()


async def serve_rival(url: str, state: Path) -> None:
    """A rival user: outbids on the hosts named on each stdin line, answers ``ok``."""
    configure_logging("error")
    info = json.loads((state / "market.json").read_text())
    hosts = [h for i in range(HOST_PROCESSES)
             for h in json.loads((state / f"hosts-{i}.json").read_text())]
    rival = await open_bus(url, Identity.generate())
    bank = BankClient(rival, info["bank"])
    await bank.open()
    async with await open_bus(url, Identity.from_seed(info["operator"])) as operator:
        await BankClient(operator, info["bank"]).mint(rival.identity.public_key,
                                                      1_000_000 * MICRO)

    async def outbid(host_id: str, host_key: str) -> None:
        receipt = await bank.transfer(host_key, 2_000 * MICRO)
        client = AuctioneerClient(rival, host_id)
        await client.fund(receipt)
        await client.bid("cpu:1,0,1", "600s")

    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        await asyncio.gather(*(outbid(*hosts[int(i)]) for i in line.split()))
        print("ok", flush=True)


async def wait_for(path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    while not path.exists():
        if any(child.poll() is not None for child in children):
            raise RuntimeError("a market process died")
        await asyncio.sleep(0.1)


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--serve", nargs=3, metavar=("ROLE", "URL", "DIR"), help=argparse.SUPPRESS)
    p.add_argument("--connected", action="store_true",
                   help="a real market on a real nats-server (else in-process, no server)")
    args = p.parse_args()
    if args.serve:
        role, url, state = args.serve
        if role == "central":
            await serve_central(url, Path(state))
        elif role == "rival":
            await serve_rival(url, Path(state))
        else:
            await serve_hosts(url, Path(state), int(role.removeprefix("hosts-")))
        return
    configure_logging("error")
    if not args.connected:
        local = await run_local(HOSTS, JUMPS, WIDTH)
        result = figures(float(local["acquire"]), int(local["acquired"]),  # type: ignore[arg-type]
                         local["rebids"], local["answers"], local["settle"])  # type: ignore[arg-type]
        result["mode"] = "in-process"
        show("agent: 100 in-memory hosts and bank, in process (no server): the agent's own work",
             result)
        emit_json(result, args.json)
        return
    async with NatsServer() as server:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            children: list[subprocess.Popen[bytes]] = []
            try:
                roles = ["central", *(f"hosts-{i}" for i in range(HOST_PROCESSES))]
                for role in roles:
                    children.append(subprocess.Popen(
                        [sys.executable, __file__, "--serve", role, server.url, tmp]))
                    await wait_for(tmp_path / f"{role}.json", children)
                await wait_for(tmp_path / "market.json", children)
                info = json.loads((tmp_path / "market.json").read_text())
                info["hosts"] = [h for i in range(HOST_PROCESSES) for h in
                                 json.loads((tmp_path / f"hosts-{i}.json").read_text())]
                result = await run(server.url, info, tmp_path)
            finally:
                for child in children:
                    child.kill()
                    child.wait()
    result["mode"] = "connected"
    show("agent: 100 simulated hosts (bank + SLS; hosts in two processes), real nats-server",
         result)
    emit_json(result, args.json)


def show(title: str, result: dict) -> None:
    table(title,
          [("acquire 100 hosts (s)", result["acquire_100_hosts_s"]),
           ("hosts in the plan", result["hosts_acquired"]),
           ("rebid p50 (ms)", result["rebid_p50_ms"]),
           ("rebid p99 (ms)", result["rebid_p99_ms"]),
           ("answer with parks p50 (ms)", result["answer_p50_ms"]),
           ("answer with parks p99 (ms)", result["answer_p99_ms"]),
           ("money moves of a plan p50 (ms)", result["settle_p50_ms"]),
           ("money moves of a plan p99 (ms)", result["settle_p99_ms"]),
           ("price jumps answered", result["rebids_measured"])], ("measure", "value"))


def figures(acquire: float, acquired: int, latencies: list[float], answers: list[float],
            settled: list[float]) -> dict:
    return {
        "acquire_100_hosts_s": round(acquire, 3),
        "hosts_acquired": acquired,
        "rebid_p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
        "rebid_p99_ms": round(percentile(latencies, 99), 1) if latencies else None,
        "rebids_measured": len(latencies),
        "answer_p50_ms": round(percentile(answers, 50), 1) if answers else None,
        "answer_p99_ms": round(percentile(answers, 99), 1) if answers else None,
        "settle_p50_ms": round(percentile(settled, 50), 1) if settled else None,
        "settle_p99_ms": round(percentile(settled, 99), 1) if settled else None,
        "settles_measured": len(settled),
        "jumps": JUMPS,
        "hosts_per_jump": WIDTH,
    }


async def run(url: str, info: dict, tmp: Path) -> dict:
    bank_key = info["bank"]
    user = await open_bus(url, Identity.generate())
    await BankClient(user, bank_key).open()
    operator = await open_bus(url, Identity.from_seed(info["operator"]))
    treasury = BankClient(operator, bank_key)
    await treasury.mint(user.identity.public_key, 10_000 * MICRO)
    # The agent's default settings (5% hysteresis). A jump is a competitor outbidding the
    # agent on WIDTH hosts at once: enough of a market move that the hysteresis lets it
    # through, as a single host of 100 would not.
    agent = Agent(user, bank_key,
                  AgentConfig(budget=5_000 * MICRO, deadline_s=600, candidates=HOSTS,
                              replan_every_s=600), tmp / "agent.db")
    started = time.perf_counter()
    task = asyncio.create_task(agent.run())
    while agent.summary.rebids == 0:
        if task.done():  # the agent failed: say why rather than wait forever
            task.result()
            raise RuntimeError("the agent stopped before its first plan")
        await asyncio.sleep(0.005)
    acquire = time.perf_counter() - started
    acquired = len(agent.plan.hosts) if agent.plan else 0
    rival = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", "rival", url, str(tmp),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert rival.stdin is not None and rival.stdout is not None
    if (await rival.stdout.readline()).strip() != b"ready":
        raise RuntimeError("the rival did not start")
    for n in range(JUMPS):
        before = len(agent.summary.rebid_latencies_ms)
        hosts = " ".join(str((n * WIDTH + k) % HOSTS) for k in range(WIDTH))
        rival.stdin.write(f"{hosts}\n".encode())
        await rival.stdin.drain()
        if (await rival.stdout.readline()).strip() != b"ok":
            raise RuntimeError("the rival failed")
        for _ in range(200):
            if len(agent.summary.rebid_latencies_ms) > before:
                break
            if task.done():
                task.result()
                raise RuntimeError("the agent stopped")
            await asyncio.sleep(0.01)
    rival.stdin.close()
    await rival.wait()
    await asyncio.sleep(2.5)  # the last plan's money moves: settle_delay_s, then the moves
    latencies = agent.summary.rebid_latencies_ms
    answers = agent.summary.answer_latencies_ms
    settled = agent.summary.settle_ms
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for bus in (user, operator):
        await bus.close()
    return figures(acquire, acquired, latencies, answers, settled)


if __name__ == "__main__":
    asyncio.run(main())
