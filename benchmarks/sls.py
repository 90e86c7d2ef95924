"""SLS benchmark: verified ingest of price updates from 10,000 hosts, and query latency.

Ingest: every host's updates are sealed beforehand (Ed25519-signed envelopes); the timed
path is what the service does to each one: open_envelope (signature check, decode),
subject binding, freshness/replay guard, host-key check, body parse, registry and
statistics update. Measured in one process with 1 thread and with the service's
verification thread pool. The first round (first sight of each key) is reported apart.

Query: top 100 of all hosts by capacity per price, rows with their statistics, in
process; with --nats also end to end over a local nats-server (signed request/reply).

    python benchmarks/sls.py [--hosts 10000] [--rounds 3] [--nats] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tycoon.bus import subjects
from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.bus.replay import ReplayGuard
from tycoon.log import configure_logging
from tycoon.sls.ingest import PriceIngest, Raw
from tycoon.sls.query import Query
from tycoon.sls.registry import Registry

RESOURCES = ("cpu", "memory", "disk", "net")


def make_hosts(n: int) -> list[tuple[Identity, str]]:
    out = []
    for _ in range(n):
        ident = Identity.generate()
        out.append((ident, subject_id(ident.public_key)))
    return out


def seal_round(hosts: list[tuple[Identity, str]], seq: int, rng: np.random.Generator) -> list[Raw]:
    """One price update per host, sealed now."""
    caps = {"cpu": 8000, "memory": 16 * 2**30, "disk": 500 * 10**9, "net": 10**9}
    prices = rng.gamma(2.0, 50.0, size=(len(hosts), len(RESOURCES)))
    out: list[Raw] = []
    for i, (ident, hid) in enumerate(hosts):
        subject = subjects.price(hid)
        resources = {}
        for j, r in enumerate(RESOURCES):
            cap = caps[r] * (1 + i % 4)
            price = float(prices[i, j])
            resources[r] = {"capacity": cap, "price": price, "unit_price": price / cap,
                            "utilization": 0.5, "bidders": 3}
        body = {"host": hid, "seq": seq, "heartbeat_s": 30.0, "name": f"node{i}",
                "driver": "sim", "resources": resources}
        out.append((subject, seal(ident, "price", body, subject=subject)))
    return out


def time_ingest(
    rounds: list[list[Raw]], workers: int
) -> tuple[Registry, float, float, float]:
    """Ingest every round; returns (registry, first-round rate, later-rounds rate,
    later-rounds updates per CPU second of this process)."""
    reg = Registry()
    ingest = PriceIngest(reg, guard=ReplayGuard(), workers=workers)
    rates = []
    cpu = wall = 0.0
    try:
        for n, batch in enumerate(rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            for start in range(0, len(batch), 4096):  # the service's batch size
                outcome = ingest.ingest(batch[start : start + 4096])
                assert outcome["accepted"] == len(batch[start : start + 4096]), outcome
            reg.flush()
            rates.append(len(batch) / (time.perf_counter() - t0))
            if n > 0 or len(rounds) == 1:
                cpu += time.process_time() - c0
                wall += len(batch)
    finally:
        ingest.close()
    later = rates[1:] or rates
    return reg, rates[0], len(later) / sum(1 / r for r in later), wall / cpu


def time_queries(reg: Registry, n: int = 300) -> tuple[float, float]:
    now = time.time_ns()
    query = Query(resource="cpu", sort="capacity_per_price", limit=100)
    assert len(reg.query(query, now)["rows"]) == 100
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        reg.query(query, now)
        lat.append(time.perf_counter() - t0)
    ms = np.array(lat) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


async def over_nats(hosts: list[tuple[Identity, str]], rounds: int) -> dict[str, float]:
    """Publish pre-sealed updates to a live SLS and time until applied; then query it."""
    from tycoon.bus.connection import open_bus
    from tycoon.natsserver import NatsServer
    from tycoon.sls.client import SLSClient
    from tycoon.sls.launch import launch as launch_sls
    from tycoon.sls.service import SLSConfig

    rng = np.random.default_rng(2)
    out: dict[str, float] = {}
    async with NatsServer() as server:
        pub = await open_bus(server.url, Identity.generate(), name="bench-pub")
        async with launch_sls(server.url, None, SLSConfig(snapshot_s=3600)) as running:
            sls = running.service
            rates = []
            for seq in range(1, rounds + 1):
                batch = seal_round(hosts, seq, rng)
                target = sls.counters().get("accepted", 0) + len(batch)
                t0 = time.perf_counter()
                for subject, raw in batch:
                    await pub.nc.publish(subject, raw)
                await pub.flush()
                while sls.counters().get("accepted", 0) < target:
                    await asyncio.sleep(0.002)
                rates.append(len(batch) / (time.perf_counter() - t0))
            later = rates[1:] or rates
            out["nats_ingest_per_s"] = len(later) / sum(1 / r for r in later)
            client = SLSClient(pub)
            lat = []
            for _ in range(100):
                t0 = time.perf_counter()
                rows = await client.query("cpu", limit=100)
                lat.append(time.perf_counter() - t0)
                assert len(rows) == 100
            ms = np.array(lat) * 1e3
            out["nats_query_p50_ms"] = float(np.percentile(ms, 50))
            out["nats_query_p99_ms"] = float(np.percentile(ms, 99))
        await pub.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="updates per host")
    parser.add_argument("--workers", type=int, default=2, help="verification threads")
    parser.add_argument("--nats", action="store_true", help="also measure over nats-server")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("warning")

    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    hosts = make_hosts(args.hosts)
    rounds = [seal_round(hosts, seq, rng) for seq in range(1, args.rounds + 1)]
    seal_s = time.perf_counter() - t0
    _, cold_1, warm_1, per_cpu = time_ingest(rounds, workers=1)
    rounds = [seal_round(hosts, seq, rng) for seq in range(1, args.rounds + 1)]  # fresh nonces
    reg, cold_n, warm_n, _ = time_ingest(rounds, workers=args.workers)
    p50, p99 = time_queries(reg)
    result: dict[str, Any] = {
        "hosts": args.hosts,
        "updates": args.hosts * args.rounds,
        "ingest_per_s": round(max(warm_1, warm_n), 1),
        "ingest_per_s_1thread": round(warm_1, 1),
        f"ingest_per_s_{args.workers}threads": round(warm_n, 1),
        "ingest_first_sight_per_s": round(max(cold_1, cold_n), 1),
        "ingest_per_cpu_s": round(per_cpu, 1),  # 1 thread: updates per CPU-second
        "query_p50_ms": round(p50, 3),
        "query_p99_ms": round(p99, 3),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews rates
    }
    if args.nats:
        extra = asyncio.run(over_nats(hosts, args.rounds))
        result.update({k: round(v, 3) for k, v in extra.items()})

    print(f"sls benchmark: {args.hosts} hosts x {args.rounds} updates (sealed in {seal_s:.1f} s)")
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"  {key:<{width}}  {value}")
    goals = result["ingest_per_s"] >= 10_000, result["query_p99_ms"] <= 10
    print(f"  goals: ingest >= 10000/s {'met' if goals[0] else 'NOT met'}, "
          f"query p99 <= 10 ms {'met' if goals[1] else 'NOT met'}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
