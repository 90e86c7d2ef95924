"""SIGKILL the agent, an auctioneer and the bank (real ``tycoon`` processes) under load.

One market of processes — bank, SLS, two auctioneers, one agent — over a JetStream
nats-server, plus a transfer flood from this test. In turn: the agent is killed and
restarted (it resumes its job from its journal), an auctioneer is killed and restarted
(from its store), the bank is killed mid-flood and restarted (from its ledger). The agent
then finishes its job. Invariants: the bank's audit passes (conservation, every stored
receipt verifies), no transfer id settled twice, every flood transfer applied exactly
once, every receipt a host redeemed is a ledger transfer to it, every host's books
balance, each bank payment of the agent is one journalled move (none repeated) within
its budget, its host accounts were refunded, and the SETTLEMENTS log matches the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from pathlib import Path

import pytest
from faults_kit import (
    Flood,
    Proc,
    check_bank,
    check_host_store,
    check_journal,
    eventually,
    pending_moves,
)

from tycoon.bank.client import BankClient
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bus import subjects
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import Identity, KeyStore, subject_id
from tycoon.log import configure_logging
from tycoon.money import MICRO
from tycoon.natsserver import NatsServer
from tycoon.sls.client import SLSClient
from tycoon.streams.verify import verify_log

pytestmark = [pytest.mark.nats, pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 20 * MICRO


def fund_moves_done(journal: Path) -> int:
    with contextlib.suppress(sqlite3.Error):
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT count(*) FROM moves WHERE kind = 'fund' AND "
                                  "status = 'done'").fetchone()[0])
        finally:
            db.close()
    return 0


async def test_kill_agent_auctioneer_and_bank_processes(tmp_path: Path) -> None:
    configure_logging("error")
    home = tmp_path / "home"
    keys = KeyStore(home)
    bank_key = keys.create("bank").public_key
    operator = keys.create("operator")
    agent_id = keys.create("agent")
    for name in ("sls", "host0", "host1"):
        keys.create(name)
    db = tmp_path / "bank.db"
    journal = tmp_path / "agents" / subject_id(agent_id.public_key) / "faults.db"
    server = NatsServer(jetstream=True, store_dir=tmp_path / "js")
    await server.start()
    url = server.url
    bank = Proc("bank", url, home, "--as", "bank", "bank", "serve", "--db", str(db),
                "--operator-key", "operator")
    sls = Proc("sls", url, home, "--as", "sls", "sls", "serve", "--snapshot-s", "1")
    hosts = [Proc(f"host{i}", url, home, "--as", f"host{i}", "auctioneer", "serve",
                  "--driver", "simulated", "--preset", "small", "--bank", bank_key,
                  "--store", str(tmp_path / f"host{i}.db"), "--name", f"host{i}",
                  "--tick", "0.2", "--heartbeat", "0.5") for i in range(2)]
    agent = Proc("agent", url, home, "--as", "agent", "agent", "run", "--json", "--job", "faults",
                 "--budget", str(BUDGET // MICRO), "--deadline", "40s", "--replan", "1.5",
                 "--candidates", "10", "--state", str(tmp_path / "agents"), "--bank", bank_key)
    buses: list[Bus] = []
    try:
        await bank.start()
        await asyncio.gather(sls.start(), *(h.start() for h in hosts))

        async def bus_of(identity: Identity) -> Bus:
            bus = await open_bus(url, identity)
            buses.append(bus)
            return bus

        watcher = await bus_of(Identity.generate())
        sls_client = SLSClient(watcher, timeout=2.0)
        plans: list[float] = []

        async def on_agent(msg: Message) -> None:
            if msg.kind == "agent.plan":
                plans.append(time.monotonic())

        await watcher.subscribe(subjects.agent_all(subject_id(agent_id.public_key)), on_agent)

        async def hosts_listed(since_ns: int = 0) -> bool:
            rows = await sls_client.query("cpu", limit=10, statistics=False)
            return len([r for r in rows if r["last_seen_ns"] > since_ns]) == 2

        await eventually(hosts_listed, 30)
        op = BankClient(await bus_of(operator), bank_key)
        await BankClient(await bus_of(agent_id), bank_key).open(exist_ok=True)
        await op.mint(agent_id.public_key, 50 * MICRO, "agent-budget")
        users = []
        for _ in range(4):
            user = BankClient(await bus_of(Identity.generate()), bank_key, timeout=1.0)
            await user.open()
            await op.mint(user.account, 100 * MICRO)
            users.append(user)

        # 1. the agent, killed once it has moved money, resumes from its journal
        await agent.start(ready=False)
        await eventually(lambda: _true(fund_moves_done(journal) > 0), 30)
        await agent.kill()
        await asyncio.sleep(0.3)  # what the killed agent had in flight is delivered by now
        # taken before the restart: the new agent's first plan can come out before start()
        # returns, and later plans only on a market move
        restarted = time.monotonic()
        await agent.start(ready=False)
        await eventually(lambda: _true(any(t > restarted for t in plans)), 30)

        # 2. an auctioneer killed while the agent bids on it comes back from its store
        await hosts[0].kill()
        await asyncio.sleep(0.5)
        await hosts[0].start()
        back = time.time_ns()
        await eventually(lambda: hosts_listed(back), 30)

        # 3. the bank killed mid-flood comes back from its ledger
        flood = Flood(users)
        flood.start()
        await eventually(lambda: _true(len(flood.told) >= 60), 30)
        await bank.kill()
        await asyncio.sleep(0.5)
        await bank.start()
        mark = len(flood.told)
        await eventually(lambda: _true(flood.settled_since(mark) >= 30), 30)
        await flood.finish()

        # the agent's job runs to its deadline and refunds what is left
        assert agent.proc is not None
        assert await asyncio.wait_for(agent.proc.wait(), 90) == 0, agent.text()
        pending_after_run = pending_moves(journal)
        summary = json.loads([ln for ln in agent.text().splitlines()
                              if ln.startswith('{"agent"')][-1])
        assert 0 < summary["spent"] <= BUDGET
        # 4. the same job run again after its deadline finishes any move an outage left
        # pending (paid at the bank, not yet redeemed at the host), refunds, and pays nothing
        # twice
        await agent.start(ready=False)
        assert await asyncio.wait_for(agent.proc.wait(), 60) == 0, agent.text()
        codes = [await p.stop() for p in (sls, *hosts, bank)]
        assert codes == [0, 0, 0, 0], [p.text()[-2000:] for p in (sls, *hosts, bank)]
        # the settlement log matches the ledger: the restarted bank re-published what the
        # kill left unpublished
        with SqliteStore(db, readonly=True) as store:
            report = await verify_log(watcher.nc.jetstream(), store, bank_key, grace_s=0)
        assert report.ok, report.to_dict()
    finally:
        for p in (agent, sls, *hosts, bank):
            await p.stop(5)
        for bus in buses:
            await bus.close()
        await server.stop()
    transfers = check_bank(db)
    assert {t for t in transfers if t.startswith("flood-")} == set(flood.attempted)
    assert report.matched == len(transfers)
    for i in range(2):
        check_host_store(tmp_path / f"host{i}.db", keys.load(f"host{i}").public_key, db)
        store = sqlite3.connect(f"file:{tmp_path / f'host{i}.db'}?mode=ro", uri=True)
        row = store.execute("SELECT balance FROM accounts WHERE account = ?",
                            (agent_id.public_key,)).fetchone()
        store.close()
        assert row is None or row[0] == 0  # the agent's leftovers came back
    check_journal(journal, agent_id.public_key, db, BUDGET)
    assert not pending_moves(journal), "moves still pending after the re-run"
    if pending_after_run:  # a known gap of the agent: reported, recovered by a restart
        print(f"moves left pending by the first run: {pending_after_run}")


async def _true(value: bool) -> bool:
    return value
