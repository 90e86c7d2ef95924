"""One worker process of benchmarks/scale.py: many auctioneers and agents on one event loop.

Hosts are the real :class:`AuctioneerService` (market core, SQLite store, simulated
driver), agents the real :class:`Agent`; each principal signs with its own key, but they
share a few NATS connections (a :class:`Bus` is one identity's view of a connection), as
a dense deployment would. A mover re-bids on hosts the agents use, alternating bid
durations, so prices keep moving. Commands come from the parent over a pipe.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from tycoon.agent.agent import Agent, AgentConfig
from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.launch import RunningAuctioneer, start_auctioneer
from tycoon.bank.client import BankClient
from tycoon.bus.connection import Bus, inbox_prefix
from tycoon.bus.keys import Identity
from tycoon.errors import Rejected
from tycoon.log import configure_logging
from tycoon.money import MICRO
from tycoon.vmm.simulated import SimulatedDriver

PRESETS = ("small", "medium", "large")
CALLS: dict[str, list[float]] = collections.defaultdict(list)
"""Round-trip times (ms) of the agents' requests, by call, while measuring."""
MEASURING = [False]


def timed(cls: type, name: str) -> None:
    """Record the duration of every ``cls.name`` call made while measuring."""
    call = getattr(cls, name)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await call(*args, **kwargs)
        finally:
            if MEASURING[0]:
                CALLS[f"{cls.__name__}.{name}"].append((time.perf_counter() - start) * 1000)

    setattr(cls, name, wrapper)


for _name in ("transfer", "balance"):
    timed(BankClient, _name)
for _name in ("account", "fund", "bid", "refund"):
    timed(AuctioneerClient, _name)
timed(Agent, "_replan")
HOSTS_PER_CONNECTION = 100
AGENTS_PER_CONNECTION = 25


@dataclass
class WorkerConfig:
    index: int
    urls: list[str]
    bank_key: str
    operator_seed: str
    hosts: int
    agents: int
    tick_s: float
    heartbeat_s: float
    agent_deadline_s: float
    ramp_s: float
    jitter_s: float
    candidates: int
    max_hosts: int
    move_every_s: float


async def connect(urls: list[str], home: int, identity: Identity, name: str) -> Client:
    """A connection to node ``home`` first (mod the nodes), every node known, no shuffle."""
    home %= len(urls)
    nc = Client()
    await nc.connect(
        servers=[urls[home], *(u for i, u in enumerate(urls) if i != home)],
        dont_randomize=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
        connect_timeout=5.0, inbox_prefix=inbox_prefix(identity), name=name,
        pending_size=64 * 1024 * 1024, flush_timeout=10.0,
    )  # fmt: skip
    return nc


@dataclass
class Worker:
    cfg: WorkerConfig
    conns: list[Client] = field(default_factory=list)
    hosts: list[RunningAuctioneer] = field(default_factory=list)
    agents: list[Agent] = field(default_factory=list)
    runs: list[asyncio.Task[Any]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    moves: int = 0
    operator: BankClient | None = None
    mark_warnings: dict[int, int] = field(default_factory=dict)
    cpu_mark: float = 0.0
    mark: dict[int, int] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)

    def count(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def start_hosts(self, tmp: Path) -> None:
        cfg, nc = self.cfg, None
        for i in range(cfg.hosts):
            ident = Identity.generate()
            if i % HOSTS_PER_CONNECTION == 0:
                nc = await connect(cfg.urls, cfg.index, ident, f"scale-hosts-{cfg.index}-{i}")
                self.conns.append(nc)
            assert nc is not None
            preset = PRESETS[(cfg.index + i) % len(PRESETS)]
            self.hosts.append(await start_auctioneer(
                Bus(nc, ident), bank_key=cfg.bank_key,
                driver=SimulatedDriver(preset=preset, seed=cfg.index * 100_000 + i),
                store_path=tmp / f"host-{i}.db", name=f"w{cfg.index}-{i}",
                tick_s=cfg.tick_s, heartbeat_s=cfg.heartbeat_s, durability="normal",
                bank_timeout=10.0))
            if i % 20 == 19:
                await asyncio.sleep(0.05)  # let the heartbeats of the first ones out

    async def start_agents(self, tmp: Path) -> None:
        cfg, nc = self.cfg, None
        op_ident = Identity.from_seed(cfg.operator_seed)
        op_nc = await connect(cfg.urls, cfg.index, op_ident, f"scale-op-{cfg.index}")
        self.conns.append(op_nc)
        operator = self.operator = BankClient(Bus(op_nc, op_ident), cfg.bank_key, timeout=10.0)
        pause = cfg.ramp_s / max(1, cfg.agents)
        for i in range(cfg.agents):
            ident = Identity.generate()
            if i % AGENTS_PER_CONNECTION == 0:
                nc = await connect(cfg.urls, cfg.index, ident, f"scale-agents-{cfg.index}-{i}")
                self.conns.append(nc)
            assert nc is not None
            bus = Bus(nc, ident)
            await BankClient(bus, cfg.bank_key, timeout=10.0).open()
            await operator.mint(ident.public_key, 1000 * MICRO)
            config = AgentConfig(budget=(50 + 50 * (i % 4)) * MICRO,
                                 deadline_s=cfg.agent_deadline_s, candidates=cfg.candidates,
                                 max_hosts=cfg.max_hosts, replan_every_s=15.0,
                                 jitter_s=cfg.jitter_s)
            agent = Agent(bus, cfg.bank_key, config, tmp / f"agent-{i}.db")
            self.agents.append(agent)
            self.runs.append(asyncio.create_task(self._run(agent)))
            await asyncio.sleep(pause)

    async def _run(self, agent: Agent) -> None:
        try:
            await agent.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.count(f"agent {type(exc).__name__}")

    async def mover(self) -> None:
        """A rival with money at a few hosts the agents use, re-bidding to move prices."""
        cfg = self.cfg
        ident = Identity.generate()
        nc = await connect(cfg.urls, cfg.index, ident, f"scale-mover-{cfg.index}")
        self.conns.append(nc)
        bus = Bus(nc, ident)
        bank = BankClient(bus, cfg.bank_key, timeout=10.0)
        await bank.open()
        assert self.operator is not None
        await self.operator.mint(ident.public_key, 10_000 * MICRO)
        funded: set[str] = set()
        rng = random.Random(cfg.index)
        while True:
            await asyncio.sleep(cfg.move_every_s)
            in_play = sorted({h for a in self.agents if a.plan for h in a.plan.hosts})
            if not in_play:
                continue
            host = rng.choice(in_play)
            client = AuctioneerClient(bus, host, timeout=10.0)
            try:
                if host not in funded:
                    key = self._host_key(host) or await client.host_key()
                    receipt = await bank.transfer(key, 20 * MICRO)
                    await client.fund(receipt)
                    funded.add(host)
                await client.bid("cpu:1,0,1", f"{rng.choice((20, 40, 80))}s")
                self.moves += 1
            except Rejected as error:
                self.count(f"mover {error.code}")

    def _host_key(self, host: str) -> str | None:
        for running in self.hosts:
            if running.service.host == host:
                return running.bus.identity.public_key
        return None

    def mark_latencies(self) -> None:
        self.mark = {id(a): len(a.summary.rebid_latencies_ms) for a in self.agents}
        self.mark_warnings = {id(a): len(a.summary.warnings) for a in self.agents}
        self.lags = []
        CALLS.clear()
        MEASURING[0] = True
        self.cpu_mark = sum(os.times()[:2])

    async def lag_probe(self) -> None:
        """How late the event loop runs a 50 ms sleep: a saturated loop delays everything."""
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.05)
            self.lags.append((time.perf_counter() - start - 0.05) * 1000)

    def report(self) -> dict[str, Any]:
        latencies: list[float] = []
        for a in self.agents:
            latencies += a.summary.rebid_latencies_ms[self.mark.get(id(a), 0):]
        return {
            "index": self.cfg.index,
            "hosts": len(self.hosts),
            "agents": len(self.agents),
            "agents_planned": sum(1 for a in self.agents if a.plan is not None),
            "rebids": sum(a.summary.rebids for a in self.agents),
            "plan_hosts": [h for a in self.agents if a.plan for h in a.plan.hosts],
            "warnings": collections.Counter(
                w.split(":")[0] for a in self.agents
                for w in a.summary.warnings[self.mark_warnings.get(id(a), 0):]),
            "loop_lag_ms": sorted(self.lags),
            "calls_ms": {k: sorted(v) for k, v in CALLS.items()},
            "cpu_s": sum(os.times()[:2]) - self.cpu_mark,
            "latencies_ms": latencies,
            "moves": self.moves,
            "errors": self.errors,
            "rss_mb": rss_mb(),
        }


def rss_mb(pid: int | str = "self") -> float:
    """Peak resident memory (VmHWM) of a process, MiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_worker(cfg: WorkerConfig, conn: Connection) -> None:
    """Process entry point (``TYCOON_SCALE_PROFILE=DIR`` writes a cProfile per worker)."""
    configure_logging("critical")
    # agents cancelled at the end leave never-started coroutines: not worth a warning
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited")
    profile_dir = os.environ.get("TYCOON_SCALE_PROFILE")
    if not profile_dir:
        asyncio.run(_main(cfg, conn))
        return
    import cProfile

    profile = cProfile.Profile()
    profile.runcall(asyncio.run, _main(cfg, conn))
    profile.dump_stats(f"{profile_dir}/worker-{cfg.index}.prof")


async def _main(cfg: WorkerConfig, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[str] = asyncio.Queue()

    def listen() -> None:
        while True:
            try:
                command = conn.recv()
            except EOFError:
                command = "exit"
            loop.call_soon_threadsafe(inbox.put_nowait, command)
            if command == "exit":
                return

    threading.Thread(target=listen, daemon=True).start()
    worker = Worker(cfg)
    with tempfile.TemporaryDirectory(prefix=f"tycoon-scale-{cfg.index}-") as tmp:
        started = time.monotonic()
        await worker.start_hosts(Path(tmp))
        conn.send({"ready": cfg.index, "seconds": time.monotonic() - started})
        tasks: list[asyncio.Task[None]] = [asyncio.create_task(worker.lag_probe())]
        while True:
            command = await inbox.get()
            if command == "agents":
                await worker.start_agents(Path(tmp))
                if cfg.move_every_s > 0:
                    tasks.append(asyncio.create_task(worker.mover()))
                conn.send({"agents_started": cfg.index})
            elif command == "mark":
                worker.mark_latencies()
            elif command == "report":
                conn.send(worker.report())
            elif command == "exit":
                break
        for task in [*tasks, *worker.runs]:
            task.cancel()
        await asyncio.gather(*tasks, *worker.runs, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(s.stop() for s in worker.hosts),
                                                  return_exceptions=True), 5)
        for nc in worker.conns:
            with contextlib.suppress(Exception):
                await nc.close()

