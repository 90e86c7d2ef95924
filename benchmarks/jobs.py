"""Jobs benchmark: paid CPU on a real cgroups market, and how fast work starts and talks.

A real market (``tycoon up --driver cgroups``, root, cgroup v1) with one host pinned to one
core (``TYCOON_UP_CPUS=0``). (1) carol, alone on the host, measures through
:class:`~tycoon.auctioneer.jobclient.JobClient`: submit → task running (the job's first
instruction prints the time: ``/bin/date``), and output chunk latency (a job prints the time
every 5 ms; a chunk's latency is its arrival minus the time of its oldest line). (2) alice and
bob, budgets 3:1, run identical bags of CPU-bound tasks through agents (``tycoon agent run
--tasks``) on that one core; every 0.25 s the bench reads each account's CPU seconds from its
cgroup (cpuacct) and what it has spent at the host (``host.account``): while both bags run,
CPU received alice/bob against spent alice/bob (goal: within 10 %). (3) The same two bags
unpriced: plain processes on the same core, each bag's tasks one after the other, both bags
at once (the kernel's equal shares). Each bag's completion time is reported both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import emit_json, parser, percentile, table

from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.jobclient import JobClient
from tycoon.bus.connection import open_bus
from tycoon.bus.keys import KeyStore, subject_id
from tycoon.messages.jobs import JobExit, JobOutput
from tycoon.vmm import cgroups_v1
from tycoon.vmm.cgroupfs import find_mounts
from tycoon.vmm.cgroups import CgroupsDriver

PY = "/usr/bin/python3"  # readable by the jobs' uids (a venv under /root is not)
BURN = "import sys\nn = {n}\nwhile n:\n    n -= 1\nprint(sys.argv[1])\n"
TICK = "import time\nfor i in range(300):\n    print(repr(time.time()), flush=True)\n" \
       "    time.sleep(0.005)\n"
USERS = {"alice": 3, "bob": 1}


def missing() -> str | None:
    lacking = cgroups_v1.lacks(pinned=True)
    if lacking is None and (not os.access(PY, os.X_OK) or 0 not in os.sched_getaffinity(0)):
        return f"needs {PY} and CPU 0"
    return lacking


def calibrate(seconds: float) -> int:
    """Loop iterations of :data:`BURN` that take ``seconds`` of CPU on this machine."""
    n = 3_000_000
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([PY, "-c", BURN.format(n=n), "x"], check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return int(n * seconds / max(used, 1e-3))


class Market:
    """``tycoon up --driver cgroups --hosts 1 --agents 0`` on CPU 0, and its CLI."""

    def __init__(self, base: Path) -> None:
        self.state, self.jobs = base / "market", base / "jobs"
        self.jobs.mkdir(mode=0o755)
        base.chmod(0o755)
        self.env = {**os.environ, "TYCOON_JOBS_ROOT": str(self.jobs), "TYCOON_UP_CPUS": "0",
                    "TYCOON_LOG": "warning"}
        self.up: subprocess.Popen[str] | None = None
        self.url = ""

    def cli(self, *args: str, script: str = "tycoon.cli.main") -> str:
        done = subprocess.run([sys.executable, "-m", script, "--home", str(self.state), *args],
                              capture_output=True, text=True, timeout=120, env=self.env)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr[-1500:]}")
        return done.stdout

    def start(self) -> None:
        self.up = subprocess.Popen(
            [sys.executable, "-m", "tycoon.cli.main", "up", "--hosts", "1", "--agents", "0",
             "--driver", "cgroups", "--state", str(self.state)], env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        ready = threading.Event()

        def read() -> None:
            assert self.up is not None and self.up.stdout is not None
            for line in self.up.stdout:
                if "market ready at " in line:
                    self.url = line.split("market ready at ", 1)[1].split()[0].rstrip(";")
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120) or not self.url:
            raise RuntimeError("tycoon up did not get ready")

    def user(self, name: str, credits: int) -> None:
        self.cli("init", "--user", name)
        self.cli("--as", name, "bank", "open")
        self.cli("--as", "operator", "bank", "mint", name, str(credits))

    def key(self, name: str) -> str:
        return KeyStore(self.state).load(name).public_key

    @property
    def root(self) -> str:
        return f"tycoon-{subject_id(self.key('host-1'))[:8]}"

    def cpu_s(self, name: str) -> float:
        """The account's CPU seconds as its cgroup counts them (0 before it exists)."""
        path = find_mounts().v1["cpuacct"] / self.root / self.key(name) / "cpuacct.usage"
        try:
            return int(path.read_text()) / 1e9
        except OSError:
            return 0.0

    def stop(self) -> None:
        if self.up is not None and self.up.poll() is None:
            self.up.send_signal(signal.SIGINT)
            try:
                self.up.wait(90)
            except subprocess.TimeoutExpired:
                self.up.kill()
        with contextlib.suppress(Exception):
            remove_root(self.root)


def remove_root(root: str) -> None:
    """Kill what is left in a host's cgroup root and remove it."""
    for mount in {*find_mounts().v1.values()}:
        base = mount / root
        for sandbox in [p for p in base.iterdir() if p.is_dir()] if base.is_dir() else []:
            for pid in (sandbox / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    CgroupsDriver(root=root, version="v1", state_dir=None, strict=False).teardown()


async def latencies(market: Market, samples: int) -> dict[str, Any]:
    """carol alone on the host: submit → running, host.exec round trip, chunk latency."""
    market.user("carol", 100)
    market.cli("--as", "carol", "fund", "host-1", "5", script="tycoon.cli.pub")
    market.cli("--as", "carol", "bid", "host-1", "1h", "cpu:1,0,1.0", script="tycoon.cli.pub")
    bus = await open_bus(market.url, KeyStore(market.state).load("carol"))
    try:
        client = JobClient(bus, subject_id(market.key("host-1")), timeout=10)
        running, replied = [], []
        for _ in range(samples):
            t0 = time.time()
            _, stream, sub = await client.start(["/bin/date", "+%s.%N"])
            replied.append(time.time() - t0)
            events = [e async for e in stream.events(timeout=10)]
            await sub.unsubscribe()
            out = b"".join(e.data for e in events if isinstance(e, JobOutput))
            running.append(float(out.split()[0]) - t0)
        chunks: list[float] = []
        _, stream, sub = await client.start([PY, "-c", TICK])
        async for event in stream.events(timeout=10):
            if isinstance(event, JobOutput) and event.data:
                chunks.append(time.time() - float(event.data.split()[0]))
            elif isinstance(event, JobExit):
                break
        await sub.unsubscribe()
        await AuctioneerClient(bus, client.host).refund()
    finally:
        await bus.close()
    return {"running": running, "replied": replied, "chunks": chunks}


def write_bag(path: Path, tasks: int) -> None:
    path.write_text("".join(f"t{i}\n" for i in range(tasks)))


async def priced(market: Market, base: Path, tasks: int, n: int, budget: int,
                 deadline: str) -> dict[str, Any]:
    """alice and bob's bags through agents; samples of CPU, spend and tasks done."""
    bag = base / "bag.txt"
    write_bag(bag, tasks)
    buses = {}
    for name in USERS:
        market.user(name, budget * USERS[name] * 2)
        buses[name] = await open_bus(market.url, KeyStore(market.state).load(name))
    host = subject_id(market.key("host-1"))
    clients = {name: AuctioneerClient(bus, host, timeout=5) for name, bus in buses.items()}
    agents = {}
    t0 = time.monotonic()
    for name, weight in USERS.items():
        log = (base / f"{name}.log").open("w")
        agents[name] = subprocess.Popen(
            [sys.executable, "-m", "tycoon.cli.main", "--home", str(market.state), "--as", name,
             "agent", "run", "--budget", str(budget * weight), "--deadline", deadline,
             "--hosts", "1", "--tasks", str(bag), "--out", str(base / f"{name}.out"), "--json",
             "--", PY, "-c", BURN.format(n=n), "{}"],
            env=market.env, stdout=log, stderr=subprocess.STDOUT, text=True)
    samples: list[dict[str, Any]] = []

    async def sample() -> None:
        row: dict[str, Any] = {"t": time.monotonic() - t0}
        for name in USERS:
            row[f"cpu_{name}"] = market.cpu_s(name)
            with contextlib.suppress(Exception):
                row[f"spent_{name}"] = (await clients[name].account()).get("spent", 0)
            row[f"done_{name}"] = len(list((base / f"{name}.out").glob("*/exit.json")))
        samples.append(row)

    try:
        while any(a.poll() is None for a in agents.values()):
            await sample()
            if time.monotonic() - t0 > 600:
                raise RuntimeError("the bags did not finish in 10 minutes")
            await asyncio.sleep(0.25)
        await sample()  # a bag finishing between the last sample and its agent's exit
    finally:
        for agent in agents.values():
            if agent.poll() is None:
                agent.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    agent.wait(60)
        for bus in buses.values():
            await bus.close()
    return {"samples": samples, "codes": {n: a.returncode for n, a in agents.items()}}


def contest(samples: list[dict[str, Any]], tasks: int) -> dict[str, Any]:
    """CPU and spend ratios while both bags run (both sandboxes gaining CPU, neither done)."""
    a, b = USERS
    both = [i for i in range(1, len(samples))
            if samples[i][f"cpu_{a}"] > samples[i - 1][f"cpu_{a}"]
            and samples[i][f"cpu_{b}"] > samples[i - 1][f"cpu_{b}"]]
    if not both:
        raise RuntimeError("the two bags never ran at the same time")
    start = both[0] - 1
    end = max(i for i in range(start, len(samples))
              if samples[i][f"done_{a}"] < tasks and samples[i][f"done_{b}"] < tasks)
    s, e = samples[start], samples[end]
    cpu = {u: e[f"cpu_{u}"] - s[f"cpu_{u}"] for u in USERS}
    spent = {u: e.get(f"spent_{u}", 0) - s.get(f"spent_{u}", 0) for u in USERS}
    done_at = {u: next((r["t"] for r in samples if r[f"done_{u}"] >= tasks), float("nan"))
               for u in USERS}
    first = {u: next((r["t"] for r in samples if r[f"cpu_{u}"] > 0), float("nan"))
             for u in USERS}
    cpu_ratio = cpu[a] / cpu[b] if cpu[b] else float("inf")
    spend_ratio = spent[a] / spent[b] if spent[b] else float("inf")
    return {"window_s": e["t"] - s["t"], "cpu_s": cpu, "spent_uc": spent,
            "cpu_ratio": cpu_ratio, "spend_ratio": spend_ratio,
            "cpu_over_spend": cpu_ratio / spend_ratio, "done_s": done_at, "first_cpu_s": first}


def unpriced(tasks: int, n: int) -> dict[str, float]:
    """Both bags at once as plain processes on CPU 0: each bag's completion time (s)."""
    done: dict[str, float] = {}
    t0 = time.monotonic()

    def bag(name: str) -> None:
        for i in range(tasks):
            subprocess.run([PY, "-c", BURN.format(n=n), f"t{i}"], check=True,
                           capture_output=True, preexec_fn=lambda: os.sched_setaffinity(0, {0}))
        done[name] = time.monotonic() - t0

    threads = [threading.Thread(target=bag, args=(u,)) for u in USERS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done


async def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=6, help="tasks per bag")
    p.add_argument("--task-cpu", type=float, default=2.0, help="CPU seconds per task")
    p.add_argument("--budget", type=int, default=10, help="bob's budget; alice's is 3×")
    p.add_argument("--deadline", default="3m", help="the agents' deadline")
    p.add_argument("--samples", type=int, default=40, help="submit → running samples")
    args = p.parse_args()
    reason = missing()
    if reason:
        print(f"skipped: {reason}")
        emit_json({"skipped": reason}, args.json)
        return
    n = calibrate(args.task_cpu)
    base = Path(tempfile.mkdtemp(prefix="tycoon-bench-jobs-", dir="/tmp"))
    market = Market(base)
    try:
        market.start()
        lat = await latencies(market, args.samples)
        run = await priced(market, base, args.tasks, n, args.budget, args.deadline)
    finally:
        market.stop()
        shutil.rmtree(base, ignore_errors=True)
    fight = contest(run["samples"], args.tasks)
    plain = unpriced(args.tasks, n)
    ms = {k: [1000 * x for x in v] for k, v in lat.items()}
    rows = [
        ("CPU received alice/bob (both bags running)", f"{fight['cpu_ratio']:.3f}", "", ""),
        ("spent alice/bob (same window)", f"{fight['spend_ratio']:.3f}", "", ""),
        ("CPU ratio / spend ratio", f"{fight['cpu_over_spend']:.3f}", "", "1 ± 0.10"),
        ("submit → task running, ms", f"{percentile(ms['running'], 50):.1f}",
         f"{percentile(ms['running'], 99):.1f}", "p99 ≤ 1000"),
        ("host.exec round trip, ms", f"{percentile(ms['replied'], 50):.1f}",
         f"{percentile(ms['replied'], 99):.1f}", ""),
        ("output chunk latency, ms", f"{percentile(ms['chunks'], 50):.1f}",
         f"{percentile(ms['chunks'], 99):.1f}", "p99 ≤ 100"),
    ]
    table(f"Jobs on one core, {args.tasks} tasks × {args.task_cpu} CPU s per bag, budgets 3:1 "
          f"(window {fight['window_s']:.1f} s)", rows, ("measure", "value / p50", "p99", "goal"))
    table("Bag completion, seconds from the start",
          [(u, f"{fight['done_s'][u]:.1f}", f"{fight['first_cpu_s'][u]:.1f}",
            f"{plain[u]:.1f}") for u in USERS],
          ("user", "priced (agents)", "first CPU (priced)", "unpriced (equal shares)"))
    emit_json({"cpu_ratio": fight["cpu_ratio"], "spend_ratio": fight["spend_ratio"],
               "cpu_over_spend": fight["cpu_over_spend"], "window_s": fight["window_s"],
               "cpu_s": fight["cpu_s"], "spent_uc": fight["spent_uc"],
               "submit_running_ms": {"p50": percentile(ms["running"], 50),
                                     "p99": percentile(ms["running"], 99)},
               "exec_reply_ms": {"p50": percentile(ms["replied"], 50),
                                 "p99": percentile(ms["replied"], 99)},
               "chunk_ms": {"p50": percentile(ms["chunks"], 50),
                            "p99": percentile(ms["chunks"], 99), "n": len(ms["chunks"])},
               "done_priced_s": fight["done_s"], "first_cpu_priced_s": fight["first_cpu_s"],
               "done_unpriced_s": plain, "agent_exit": run["codes"], "tasks": args.tasks,
               "task_cpu_s": args.task_cpu}, args.json)


if __name__ == "__main__":
    asyncio.run(main())
