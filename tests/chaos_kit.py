"""A seeded chaos run: a market of real ``tycoon`` processes SIGKILLed on a schedule.

Bank, SLS, hosts and agents run as processes over a JetStream nats-server; a user pays
random hosts (``pay_and_fund``) all along. A seeded schedule SIGKILLs every kind of
process and the nats-server: at random times, just before each agent's deadline (bank,
a host, the agent) and just after commits (an agent's journal finished a move: the agent
or the bank is killed at once). A supervisor restarts whatever was killed with the same
command (and so the same state) after 0.5-3 s, as an init system would; nobody else acts.

At the end (:func:`check_money_home`): every agent exited on its own saying its money is
home; for every agent, bank balance = budget - what the hosts charged it, no journal move
pending, nothing in its host accounts, every payment to a host redeemed; no host has a
pending refund; the user's receipts are all redeemed; the bank audit and ``verify-log``
pass. Shared by ``tests/test_chaos.py`` (short schedule) and ``benchmarks/chaos.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faults_kit import Proc, check_bank, check_host_store, pending_moves

from tycoon.auctioneer.client import AuctioneerClient, pay_and_fund, settle_receipts
from tycoon.bank.client import BankClient
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import Identity, KeyStore, subject_id
from tycoon.errors import Rejected
from tycoon.money import MICRO
from tycoon.natsserver import NatsServer
from tycoon.streams.verify import verify_log

HOME_CODES = (0, 3)
"""An agent's own exit: 0 = all money home, 3 = money still away after its grace."""


@dataclass
class ChaosConfig:
    seed: int = 1
    hosts: int = 3
    agents: tuple[tuple[int, float], ...] = ((20, 25.0), (40, 35.0))
    """(budget in credits, deadline in seconds) of each agent."""
    random_kills: int = 8
    commit_kills: int = 2
    grace: str = "90s"
    restart: tuple[float, float] = (0.5, 3.0)
    user_pays: bool = True
    timeout_s: float = 240.0
    verbose: bool = False
    """Print each kill, restart and phase on stderr."""


@dataclass
class Chaos:
    """One run's processes and what happened to them."""

    config: ChaosConfig
    tmp: Path
    server: NatsServer
    keys: KeyStore
    bank_key: str
    procs: dict[str, Proc] = field(default_factory=dict)
    agent_meta: dict[str, tuple[Identity, int, Path]] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)
    kills: list[tuple[float, str, str]] = field(default_factory=list)
    restarts: list[float] = field(default_factory=list)
    home_at: float | None = None
    stopping: bool = False
    user: Identity | None = None
    buses: list[Bus] = field(default_factory=list)
    nats_down: bool = False
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    """The schedule, the commit watcher and the user: cancelled when the agents are done."""
    nats_tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    """nats-server restarts: never cancelled before the end (the checks need the server)."""
    opened: dict[str, Bus] = field(default_factory=dict)

    def phase(self, text: str) -> None:
        if self.config.verbose:
            print(f"{time.strftime('%H:%M:%S')} chaos: {text}", file=sys.stderr, flush=True)

    @property
    def db(self) -> Path:
        return self.tmp / "bank.db"

    def host_store(self, i: int) -> Path:
        return self.tmp / f"host{i}.db"


async def run_chaos(config: ChaosConfig, tmp: Path) -> dict[str, Any]:
    """Run the whole schedule and the end checks; return the figures."""
    rng = random.Random(config.seed)
    home = tmp / "home"
    keys = KeyStore(home)
    bank_key = keys.create("bank").public_key
    keys.create("operator")
    for name in ["sls", *(f"host{i}" for i in range(config.hosts))]:
        keys.create(name)
    server = NatsServer(jetstream=True, store_dir=tmp / "js")
    await server.start()
    chaos = Chaos(config, tmp, server, keys, bank_key)
    url = server.url
    chaos.procs["bank"] = Proc("bank", url, home, "--as", "bank", "bank", "serve",
                               "--db", str(chaos.db), "--operator-key", "operator")
    chaos.procs["sls"] = Proc("sls", url, home, "--as", "sls", "sls", "serve",
                              "--snapshot-s", "1")
    for i in range(config.hosts):
        chaos.procs[f"host{i}"] = Proc(
            f"host{i}", url, home, "--as", f"host{i}", "auctioneer", "serve", "--driver",
            "simulated", "--preset", "small", "--bank", bank_key, "--store",
            str(chaos.host_store(i)), "--name", f"host{i}", "--tick", "0.2", "--heartbeat", "0.5")
    started = time.monotonic()
    supervisors: list[asyncio.Task[None]] = []
    try:
        await chaos.procs["bank"].start()
        await asyncio.gather(*(p.start(ready=False) for n, p in chaos.procs.items() if n != "bank"))
        operator = BankClient(await _bus(chaos, keys.load("operator")), bank_key, timeout=3.0)
        for n, (budget, deadline) in enumerate(config.agents):
            ident = keys.create(f"agent{n}")
            await _retry(lambda i=ident: _open(chaos, i))
            await _retry(lambda i=ident, b=budget: operator.mint(
                i.public_key, b * MICRO, f"budget-{i.public_key}"))
            journal = tmp / "agents" / subject_id(ident.public_key) / "chaos.db"
            chaos.agent_meta[f"agent{n}"] = (ident, budget * MICRO, journal)
            chaos.procs[f"agent{n}"] = Proc(
                f"agent{n}", url, home, "--as", f"agent{n}", "agent", "run", "--json",
                "--job", "chaos",
                "--budget", str(budget), "--deadline", f"{deadline:g}s", "--replan", "2",
                "--candidates", "10", "--state", str(tmp / "agents"), "--bank", bank_key,
                "--grace", config.grace)
        await _wait_hosts_listed(chaos)
        user_task: asyncio.Task[None] | None = None
        if config.user_pays:
            chaos.user = keys.create("user")
            user_key = chaos.user.public_key
            await _retry(lambda: _open(chaos, keys.load("user")))
            await _retry(lambda: operator.mint(user_key, 50 * MICRO, "budget-user"))
            user_task = asyncio.create_task(_user_pays(chaos, rng.random()))
        t0 = time.monotonic()
        for name in [n for n in chaos.procs if n.startswith("agent")]:
            await chaos.procs[name].start(ready=False)
        supervisors = [asyncio.create_task(_supervise(chaos, n, random.Random(rng.random())))
                       for n in chaos.procs]
        schedule = _schedule(chaos, rng, t0)
        killer = asyncio.create_task(_run_schedule(chaos, schedule, t0))
        watcher = asyncio.create_task(_kill_after_commits(chaos, random.Random(rng.random())))
        chaos.tasks += [killer, watcher, *([user_task] if user_task else [])]
        await _wait_agents(chaos, config.timeout_s)
        chaos.home_at = time.monotonic()
        chaos.phase("agents done")
        await _cancel(chaos.tasks)
        await _wait_all_up(chaos)
        chaos.phase("services up")
        user_left = await _settle_user(chaos) if config.user_pays else 0
        chaos.phase("user settled")
        chaos.stopping = True
        for task in supervisors:
            task.cancel()
        chaos.phase("checking")
        result = await check_money_home(chaos)
        result["user_outstanding"] = user_left
    finally:
        chaos.stopping = True
        await _cancel([*supervisors, *chaos.tasks, *chaos.nats_tasks])
        for proc in chaos.procs.values():
            await proc.stop(10)
        for bus in chaos.buses:
            await bus.close()
        await server.stop()
    check_bank(chaos.db)
    for i in range(config.hosts):
        check_host_store(chaos.host_store(i), keys.load(f"host{i}").public_key, chaos.db)
    last_restart = max(chaos.restarts, default=t0)
    result.update({
        "seed": config.seed, "kills": len(chaos.kills),
        "kills_by_target": _count(k for _, k, _ in chaos.kills),
        "kills_by_reason": _count(r for _, _, r in chaos.kills),
        "agent_exits": dict(chaos.exits),
        "home_after_last_restart_s": round(max((chaos.home_at or 0) - last_restart, 0.0), 2),
        "wall_s": round(time.monotonic() - started, 1),
    })
    return result


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them (a few seconds at most each)."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 5)


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


async def _bus(chaos: Chaos, ident: Identity) -> Bus:
    bus = await open_bus(chaos.server.url, ident)
    chaos.buses.append(bus)
    return bus


async def _open(chaos: Chaos, ident: Identity) -> None:
    bus = chaos.opened.get(ident.public_key) or await _bus(chaos, ident)
    chaos.opened[ident.public_key] = bus
    await BankClient(bus, chaos.bank_key, timeout=3.0).open(exist_ok=True)


async def _retry(op: Any, attempts: int = 60) -> Any:
    for n in range(attempts):
        try:
            return await op()
        except Rejected:
            if n == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    return None


async def _wait_hosts_listed(chaos: Chaos) -> None:
    from tycoon.sls.client import SLSClient

    sls = SLSClient(chaos.buses[0], timeout=2.0)
    for _ in range(300):
        with contextlib.suppress(Rejected):
            if len(await sls.query("cpu", limit=20, statistics=False)) >= chaos.config.hosts:
                return
        await asyncio.sleep(0.2)
    raise AssertionError("the hosts never reached the SLS")


# -- the schedule ----------------------------------------------------------------------


def _schedule(chaos: Chaos, rng: random.Random, t0: float) -> list[tuple[float, str, str]]:
    """(seconds after t0, target, reason): random kills and kills just before deadlines."""
    cfg = chaos.config
    last = max(d for _, d in cfg.agents)
    targets = ["bank", "sls", "nats", *(f"host{i}" for i in range(cfg.hosts)),
               *(f"agent{n}" for n in range(len(cfg.agents)))]
    plan = [(rng.uniform(2.0, last), rng.choice(targets), "random")
            for _ in range(cfg.random_kills)]
    for n, (_, deadline) in enumerate(cfg.agents):
        # the bank, a host and the agent die within the last 2 s (the agent's final
        # refunds meet a bank or host that is down); every other agent meets a nats outage
        near = [("bank", 1.8), (f"host{rng.randrange(cfg.hosts)}", 1.2), (f"agent{n}", 0.4)]
        if n % 2:
            near.append(("nats", 0.9))
        plan += [(deadline - before + rng.uniform(-0.2, 0.2), target, "before deadline")
                 for target, before in near]
    return sorted(plan)


async def _run_schedule(chaos: Chaos, plan: list[tuple[float, str, str]], t0: float) -> None:
    for at, target, reason in plan:
        await asyncio.sleep(max(t0 + at - time.monotonic(), 0.0))
        await _kill(chaos, target, reason)


async def _kill_after_commits(chaos: Chaos, rng: random.Random) -> None:
    """Kill an agent (or the bank) right after the agent's journal finished a move."""
    seen = {name: 0 for name in chaos.agent_meta}
    left = chaos.config.commit_kills
    while left > 0:
        await asyncio.sleep(0.05)
        for name, (_, _, journal) in chaos.agent_meta.items():
            done = _done_moves(journal)
            if done > seen[name] and seen[name] and rng.random() < 0.5 and left > 0:
                left -= 1
                await _kill(chaos, rng.choice([name, "bank"]), "after commit")
            seen[name] = max(seen[name], done)


def _done_moves(journal: Path) -> int:
    with contextlib.suppress(sqlite3.Error):
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT count(*) FROM moves WHERE status = 'done'")
                       .fetchone()[0])
        finally:
            db.close()
    return 0


async def _kill(chaos: Chaos, target: str, reason: str) -> None:
    if target == "nats":
        if chaos.nats_down:
            return
        chaos.server.kill()
        chaos.nats_down = True
        chaos.kills.append((time.monotonic(), target, reason))
        chaos.nats_tasks.append(asyncio.create_task(_restart_nats(chaos)))
        return
    proc = chaos.procs[target]
    if target in chaos.exits or not proc.alive:
        return
    await proc.kill()
    chaos.kills.append((time.monotonic(), target, reason))
    chaos.phase(f"killed {target} ({reason})")


async def _restart_nats(chaos: Chaos) -> None:
    await asyncio.sleep(random.uniform(*chaos.config.restart))
    while True:
        try:
            await chaos.server.start()
            break
        except (RuntimeError, TimeoutError) as error:  # the port not free yet: again
            chaos.phase(f"nats restart failed: {error}")
            chaos.server.kill()
            await asyncio.sleep(0.5)
    chaos.nats_down = False
    chaos.restarts.append(time.monotonic())
    chaos.phase("nats restarted")


async def _supervise(chaos: Chaos, name: str, rng: random.Random) -> None:
    """Restart ``name`` whenever it is not running, after a pause (an agent that exited
    on its own with 0 or 3 is done)."""
    proc = chaos.procs[name]
    while not chaos.stopping:
        assert proc.proc is not None
        code = await proc.proc.wait()
        if chaos.stopping:
            return
        if name.startswith("agent") and code in HOME_CODES:
            chaos.exits[name] = code
            chaos.phase(f"{name} exited {code}")
            return
        chaos.phase(f"{name} died ({code}); restarting")
        await asyncio.sleep(rng.uniform(*chaos.config.restart))
        if chaos.stopping:
            return
        await proc.start(ready=False)
        chaos.restarts.append(time.monotonic())


async def _wait_agents(chaos: Chaos, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(chaos.exits) < len(chaos.agent_meta):
        alive = [n for n, p in chaos.procs.items() if p.alive]
        assert time.monotonic() < deadline, f"agents not done: {chaos.exits}, alive: {alive}"
        await asyncio.sleep(0.2)


async def _wait_all_up(chaos: Chaos) -> None:
    """Let the supervisor bring every killed service back before the end checks."""
    for _ in range(300):
        services = [p for n, p in chaos.procs.items() if not n.startswith("agent")]
        if not chaos.nats_down and all(p.alive for p in services):
            return
        await asyncio.sleep(0.1)


# -- the user paying random hosts ------------------------------------------------------


async def _user_pays(chaos: Chaos, seed: float) -> None:
    """Pay a random host 0.1 credits and fund an account there, every ~1.5 s; whatever
    fails is left to ``tycoon host settle`` at the end."""
    assert chaos.user is not None
    rng = random.Random(seed)
    bus = await _bus(chaos, chaos.user)
    bank = BankClient(bus, chaos.bank_key, timeout=2.0)
    hosts = [subject_id(chaos.keys.load(f"host{i}").public_key)
             for i in range(chaos.config.hosts)]
    wallet = chaos.tmp / "user-wallet"
    while True:
        await asyncio.sleep(rng.uniform(1.0, 2.0))
        client = AuctioneerClient(bus, rng.choice(hosts), timeout=2.0)
        with contextlib.suppress(Rejected):
            await pay_and_fund(client, bank, MICRO // 10, wallet=wallet)


async def _settle_user(chaos: Chaos) -> int:
    """``tycoon host settle --refund`` for the user (what its script does at its end);
    returns how many receipts still wait."""
    assert chaos.user is not None
    bus = await _bus(chaos, chaos.user)
    bank = BankClient(bus, chaos.bank_key, timeout=3.0)
    waiting = -1
    for _ in range(30):
        try:
            results = await settle_receipts(bus, bank, wallet=chaos.tmp / "user-wallet",
                                            timeout=3.0)
        except Rejected:
            await asyncio.sleep(1)
            continue
        waiting = sum(1 for r in results if r.result not in ("redeemed", "done"))
        for host in {r.host for r in results}:
            with contextlib.suppress(Rejected):
                await AuctioneerClient(bus, host, timeout=3.0).refund()
        if waiting == 0:
            return 0
        await asyncio.sleep(1)
    return waiting


# -- the end checks --------------------------------------------------------------------


async def check_money_home(chaos: Chaos) -> dict[str, Any]:
    """Every agent's money is home: see the module docstring. Returns the figures."""
    cfg = chaos.config
    host_keys = [chaos.keys.load(f"host{i}").public_key for i in range(cfg.hosts)]
    stores = [sqlite3.connect(f"file:{chaos.host_store(i)}?mode=ro", uri=True)
              for i in range(cfg.hosts)]
    outstanding = 0
    agents: dict[str, Any] = {}
    try:
        pending_refunds = sum(s.execute("SELECT count(*) FROM refunds WHERE receipt IS NULL")
                              .fetchone()[0] for s in stores)
        redeemed = set()
        for s in stores:
            redeemed |= {r[0] for r in s.execute("SELECT transfer_id FROM redeemed")}
        with SqliteStore(chaos.db, readonly=True) as bank:
            transfers = [e for e in bank.events() if e.kind == "transfer"]
            balances = {k: row.balance for k, row in bank.load_accounts().items()}
        user = chaos.user.public_key if chaos.user else None
        for payer in [*(m[0].public_key for m in chaos.agent_meta.values()), user]:
            if payer is None:
                continue
            unredeemed = [e.op_id for e in transfers
                          if e.payer == payer and e.payee in host_keys
                          and e.op_id not in redeemed and f"{payer}:{e.op_id}" not in redeemed]
            assert not unredeemed, f"receipts never redeemed: {unredeemed}"
        for name, (ident, budget, journal) in chaos.agent_meta.items():
            key = ident.public_key
            spent = held = 0
            for s in stores:
                row = s.execute("SELECT balance, spent FROM accounts WHERE account = ?",
                                (key,)).fetchone()
                if row is not None:
                    held += row[0]
                    spent += row[1]
            pending = pending_moves(journal)
            summary = _summary(chaos.procs[name])
            outstanding += held + sum(o["amount"] for o in summary.get("outstanding", []))
            agents[name] = {"budget": budget, "spent": spent, "held_at_hosts": held,
                            "bank": balances.get(key, 0), "pending_moves": len(pending),
                            "exit": chaos.exits.get(name), "summary_spent": summary.get("spent"),
                            "summary_refunded": summary.get("refunded")}
            assert chaos.exits.get(name) == 0, (name, summary)
            assert held == 0 and not pending, (name, held, pending)
            assert balances.get(key, 0) + spent == budget, agents[name]
            assert summary.get("spent") == spent, (summary, spent)
            refunds = sum(e.amount for e in transfers if e.payee == key and e.payer in host_keys)
            assert summary.get("refunded") == refunds, (summary, refunds)
        if user is not None:
            user_held = sum((s.execute("SELECT balance FROM accounts WHERE account = ?",
                                       (user,)).fetchone() or (0,))[0] for s in stores)
            assert user_held == 0, user_held
        assert pending_refunds == 0
    finally:
        for s in stores:
            s.close()
    report = None
    bus = chaos.buses[0]
    for _ in range(30):  # the bank re-publishes what its kills left unpublished
        with SqliteStore(chaos.db, readonly=True) as store:
            report = await verify_log(bus.nc.jetstream(), store, chaos.bank_key, grace_s=0)
        if report.ok:
            break
        await asyncio.sleep(1)
    assert report is not None and report.ok, report.to_dict() if report else None
    return {"outstanding_uc": outstanding, "agents": agents, "pending_refunds": pending_refunds}


def _summary(proc: Proc) -> dict[str, Any]:
    lines = [ln for ln in proc.text().splitlines() if ln.startswith('{"agent"')]
    return json.loads(lines[-1]) if lines else {}
