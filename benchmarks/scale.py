"""Scale run: 1,000 simulated hosts and 200 agents on this machine, over one nats-server and
then over a three-node cluster (JetStream on: PRICES and SETTLEMENTS are written).

Processes: this one runs the bank (with its settlement log) and the SLS — the central
services — and samples; ``--workers`` processes each run their share of the hosts (real
auctioneers: market core, SQLite store, simulated driver; tick and heartbeat loops) and
of the agents (real continuous agents, ramped in), all on one event loop per process,
plus a mover that re-bids on hosts the agents use so prices keep moving.

Measured over the ``--seconds`` window, after the agents have started and warmed up:

* events/s — messages on ``tycoon.>`` (prices, allocations, requests, agent events,
  settlements) counted by one subscriber;
* SLS staleness — every 0.5 s, the age of the oldest price the SLS holds (now − the
  signed time of each host's latest accepted update, max over all hosts); p50/p99;
* rebid latency — each agent's time from a price move reaching it to its new bids being
  placed (it includes the agent's random pause of up to ``--jitter`` s); p50/p99;
* memory — peak RSS (VmHWM) of every process: workers, this one, nats-server(s).

    python benchmarks/scale.py [--quick] [--topology single|cluster|both] [--json]

``--json`` ends with one object: the keys of the first topology run (``hosts``, ``agents``,
``events_per_s``, ``sls_staleness_p99_s``, ``rebid_p99_ms``, ``rss_mb_max``) and ``runs``
with every topology's results.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit_json, parser, percentile, table
from _scale_worker import WorkerConfig, connect, rss_mb, run_worker

from tycoon.agent.agent import AgentConfig
from tycoon.bank.launch import start_bank
from tycoon.bus.connection import Bus
from tycoon.bus.keys import Identity
from tycoon.log import configure_logging
from tycoon.natsserver import NatsServer
from tycoon.sls.launch import start_sls
from tycoon.sls.service import SLSConfig
from tycoon.streams.settlements import SettlementLog, sqlite_source
from tycoon.testing.natscluster import start_cluster
from tycoon.units import NS


def arguments() -> argparse.Namespace:
    p = parser(__doc__ or "")
    p.add_argument("--hosts", type=int, default=None, help="default 1000 (quick: 100)")
    p.add_argument("--agents", type=int, default=None, help="default 200 (quick: 20)")
    p.add_argument("--seconds", type=float, default=None, help="window (60 s; quick: 15)")
    p.add_argument("--workers", type=int, default=None, help="host/agent processes (4; 2)")
    p.add_argument("--topology", choices=("single", "cluster", "both"), default="both")
    p.add_argument("--quick", action="store_true", help="100 hosts, 20 agents, 15 s, 2 workers")
    p.add_argument("--heartbeat", type=float, default=1.0, help="auctioneer heartbeat, s")
    p.add_argument("--tick", type=float, default=2.0, help="auctioneer charging tick, s")
    p.add_argument("--jitter", type=float, default=AgentConfig.jitter_s,
                   help="agents' random pause, s (default: the agent's own)")
    p.add_argument("--candidates", type=int, default=20, help="hosts each agent follows")
    p.add_argument("--max-hosts", type=int, default=5, help="hosts each agent bids on")
    p.add_argument("--ramp", type=float, default=None, help="agents start over this many s")
    p.add_argument("--warmup", type=float, default=None, help="s after the ramp, unmeasured")
    p.add_argument("--move-every", type=float, default=0.5, help="mover period per worker, s")
    p.add_argument("--no-jetstream", action="store_true")
    args = p.parse_args()
    defaults = (100, 20, 15.0, 2) if args.quick else (1000, 200, 60.0, 4)
    for name, value in zip(("hosts", "agents", "seconds", "workers"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.ramp = args.ramp if args.ramp is not None else (5.0 if args.quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (5.0 if args.quick else 10.0)
    return args


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def recv(conn: Any, timeout: float) -> Any:
    """The next message from a worker's pipe (without blocking the loop)."""
    if not await asyncio.to_thread(conn.poll, timeout):
        raise TimeoutError("a worker did not answer in time")
    return conn.recv()


async def run(topology: str, args: argparse.Namespace) -> dict[str, Any]:
    """One scale run; returns its measures."""
    jetstream = not args.no_jetstream
    with tempfile.TemporaryDirectory(prefix="tycoon-scale-") as tmp_name:
        tmp = Path(tmp_name)
        if topology == "single":
            servers = [NatsServer(jetstream=jetstream, store_dir=tmp / "js")]
            await servers[0].start()
        else:
            servers = await start_cluster(tmp / "cluster", 3, jetstream=jetstream)
        urls = [s.url for s in servers]
        try:
            return await _run(topology, args, urls, servers, tmp)
        finally:
            for server in servers:
                await server.stop()


async def _run(topology: str, args: argparse.Namespace, urls: list[str],
               servers: list[NatsServer], tmp: Path) -> dict[str, Any]:
    bank_id, operator, sls_id = Identity.generate(), Identity.generate(), Identity.generate()
    bank_bus = Bus(await connect(urls, 0, bank_id, "scale-bank"), bank_id)
    logs: list[SettlementLog] = []

    def settlement_log(bus: Bus) -> SettlementLog:
        logs.append(SettlementLog(bus.nc, bank_id.public_key, sqlite_source(tmp / "bank.db")))
        return logs[0]

    bank = await start_bank(bank_bus, db=tmp / "bank.db", operator=operator.public_key,
                            settlement_log=None if args.no_jetstream else settlement_log)
    ledger, log = bank.ledger, (logs[0] if logs else None)
    sls_bus = Bus(await connect(urls, 1, sls_id, "scale-sls"), sls_id)
    sls = await start_sls(sls_bus, config=SLSConfig(
        warm_start_s=0 if args.no_jetstream else 60.0))
    counter = {"n": 0}

    async def count(_msg: Any) -> None:
        counter["n"] += 1

    watch_id = Identity.generate()
    watch_nc = await connect(urls, 2, watch_id, "scale-watch")
    await watch_nc.subscribe("tycoon.>", cb=count, pending_msgs_limit=1_000_000)
    run_s = args.ramp + args.warmup + args.seconds
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for i, (h, a) in enumerate(zip(split(args.hosts, args.workers),
                                   split(args.agents, args.workers), strict=True)):
        cfg = WorkerConfig(i, urls, bank_id.public_key, operator.seed, h, a, args.tick,
                           args.heartbeat, run_s + 120.0, args.ramp, args.jitter,
                           args.candidates, args.max_hosts, args.move_every)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=run_worker, args=(cfg, child), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    out: dict[str, Any] = {"topology": topology, "hosts": args.hosts, "agents": args.agents,
                           "workers": args.workers, "nodes": len(urls)}
    try:
        t0 = time.monotonic()
        for pipe in pipes:
            await recv(pipe, 300)
        out["hosts_start_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        while len(sls.registry.live_hosts(time.time_ns())) < args.hosts:
            if time.monotonic() - t0 > 120:
                break
            await asyncio.sleep(0.2)
        out["sls_live_at_start"] = len(sls.registry.live_hosts(time.time_ns()))
        for pipe in pipes:
            pipe.send("agents")
        for pipe in pipes:
            await recv(pipe, 300)
        await asyncio.sleep(args.warmup)
        for pipe in pipes:
            pipe.send("mark")
        seq0, n0, t_start = ledger.seq, counter["n"], time.monotonic()
        cpu0 = [cpu_s(s.process.pid) if s.process else 0.0 for s in servers]
        cpu0_self = sum(os.times()[:2])
        stale, ages_all = [], []
        while time.monotonic() - t_start < args.seconds:
            await asyncio.sleep(0.5)
            now = time.time_ns()
            ages = [(now - rec.last_seen_ns) / NS for rec in sls.registry._by_host.values()]
            missing = args.hosts - len(ages)
            stale.append(float("inf") if missing > 0 else max(ages))
            ages_all += ages
        window = time.monotonic() - t_start
        out["cpu_share"] = {
            "central": (sum(os.times()[:2]) - cpu0_self) / window,
            "nats": sum(cpu_s(s.process.pid) if s.process else 0.0 for s in servers)
            / window - sum(cpu0) / window,
        }
        events = counter["n"] - n0
        for pipe in pipes:
            pipe.send("report")
        reports = [await recv(pipe, 60) for pipe in pipes]
        out.update(measures(reports, stale, ages_all, events, window, ledger.seq - seq0))
        out["cpu_share"]["workers"] = sum(r["cpu_s"] for r in reports) / window
        out["rss_mb"] = {"workers_max": max(r["rss_mb"] for r in reports),
                         "central": rss_mb(),
                         "nats_max": max(rss_mb(s.process.pid) for s in servers if s.process)}
        out["rss_mb_max"] = max(out["rss_mb"].values())
        out["sls_counters"] = sls.service.counters()
        out["settlement_log"] = dict(log.counters) if log else None
    finally:
        for pipe in pipes:
            with contextlib.suppress(Exception):
                pipe.send("exit")
        for proc in procs:
            await asyncio.to_thread(proc.join, 20)
            if proc.is_alive():
                proc.kill()
        await watch_nc.close()
        await sls.stop()
        await bank.stop()  # closes the ledger's store
        await sls_bus.close()
        await bank_bus.close()
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def measures(reports: list[dict[str, Any]], stale: list[float], ages: list[float],
             events: int, window: float, ledger_events: int) -> dict[str, Any]:
    latencies = [x for r in reports for x in r["latencies_ms"]]
    in_plans = collections.Counter(h for r in reports for h in r["plan_hosts"])
    finite = [s for s in stale if s != float("inf")]
    errors: dict[str, int] = {}
    calls: dict[str, list[float]] = {}
    for r in reports:
        for k, v in r["calls_ms"].items():
            calls.setdefault(k, []).extend(v)
    for r in reports:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {
        "events_per_s": events / window,
        "ledger_events_per_s": ledger_events / window,
        "sls_staleness_p50_s": percentile(stale, 50) if finite else None,
        "sls_staleness_p99_s": percentile(stale, 99) if len(finite) == len(stale) else None,
        "sls_staleness_max_s": max(finite) if finite else None,
        "sls_samples_missing_hosts": len(stale) - len(finite),
        "price_age_p50_s": percentile(ages, 50),
        "rebids_measured": len(latencies),
        "rebid_p50_ms": percentile(latencies, 50) if latencies else None,
        "rebid_p99_ms": percentile(latencies, 99) if latencies else None,
        "agents_planned": sum(r["agents_planned"] for r in reports),
        # How the agents spread over the hosts at the end: herding shows as few hosts
        # with many agents each.
        "hosts_in_plans": len(in_plans),
        "agents_per_host_max": max(in_plans.values(), default=0),
        "agent_warnings": dict(sum((collections.Counter(r["warnings"]) for r in reports),
                                   collections.Counter()).most_common(4)),
        "worker_loop_lag_p99_ms": max(percentile(r["loop_lag_ms"], 99) if r["loop_lag_ms"]
                                      else 0.0 for r in reports),
        "mover_bids": sum(r["moves"] for r in reports),
        "errors": errors,
        "calls_p50_ms": {k: round(percentile(v, 50), 1) for k, v in calls.items() if v},
        "calls_p99_ms": {k: round(percentile(v, 99), 1) for k, v in calls.items() if v},
        "calls_per_s": {k: round(len(v) / window, 1) for k, v in calls.items() if v},
    }


def show(results: list[dict[str, Any]]) -> None:
    rows = []
    for r in results:
        rows.append([r["topology"], r["hosts"], r["agents"], r["workers"],
                     r["events_per_s"], r["ledger_events_per_s"],
                     _n(r["sls_staleness_p50_s"]), _n(r["sls_staleness_p99_s"]),
                     r["rebids_measured"], _n(r["rebid_p50_ms"]), _n(r["rebid_p99_ms"]),
                     r["rss_mb"]["workers_max"], r["rss_mb"]["central"], r["rss_mb"]["nats_max"]])
    table("scale run (goals: staleness p99 <= 2 s, rebid p99 <= 250 ms)", rows,
          ["topology", "hosts", "agents", "workers", "events/s", "ledger ev/s",
           "stale p50 s", "stale p99 s", "rebids", "rebid p50 ms", "rebid p99 ms",
           "RSS worker MB", "RSS central MB", "RSS nats MB"])
    for r in results:
        print(f"\n{r['topology']}: hosts up in {r['hosts_start_s']:.1f} s, SLS saw "
              f"{r['sls_live_at_start']} live; agents planned {r['agents_planned']} "
              f"over {r['hosts_in_plans']} hosts (at most {r['agents_per_host_max']} on one), "
              f"warnings {r['agent_warnings']}, mover bids {r['mover_bids']}, "
              f"worker loop lag p99 {r['worker_loop_lag_p99_ms']:.0f} ms, "
              f"errors {r['errors'] or 'none'}; price age p50 {r['price_age_p50_s']:.2f} s; "
              f"SLS {r['sls_counters']}; settlement log {r['settlement_log']}")
        print(f"  CPU (cores busy): {_cores(r['cpu_share'])}")
        print("  round trips in the workers, p50/p99 ms (calls/s): " + ", ".join(
            f"{k.split('.')[-1]} {v}/{r['calls_p99_ms'][k]} ({r['calls_per_s'][k]})"
            for k, v in sorted(r["calls_p50_ms"].items())))


def _cores(share: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in share.items())


def _n(value: float | None) -> float | str:
    return "-" if value is None else value


def main() -> None:
    args = arguments()
    configure_logging("critical")
    topologies = ["single", "cluster"] if args.topology == "both" else [args.topology]
    print(f"scale run: {args.hosts} hosts, {args.agents} agents, {args.workers} workers, "
          f"{args.seconds:.0f} s window, {', '.join(topologies)}; {os.cpu_count()} CPUs",
          flush=True)
    results = []
    for topology in topologies:
        results.append(asyncio.run(run(topology, args)))
        print(f"{topology}: done", flush=True)
    show(results)
    first = results[0]
    keys = ("hosts", "agents", "events_per_s", "sls_staleness_p99_s", "rebid_p99_ms",
            "rss_mb_max")
    emit_json({**{k: first[k] for k in keys}, "topology": first["topology"],
               "runs": {r["topology"]: {k: r[k] for k in (*keys, "sls_staleness_p50_s",
                                                          "rebid_p50_ms", "rebids_measured",
                                                          "ledger_events_per_s")}
                        for r in results}}, args.json)


if __name__ == "__main__":
    main()
