"""Faults of the bus: nats-server restarted under a running market; a cluster node killed.

Real services in this process (the classes the daemons run), real nats-server processes.
After each fault: everything reconnected on its own, agents finished their jobs, no
transfer was applied twice, every redeemed receipt is a ledger transfer, every book
balances and the SETTLEMENTS log matches the ledger.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from faults_kit import (
    Flood,
    check_bank,
    check_host_store,
    check_journal,
    cluster_bus,
    eventually,
)

from tycoon.agent.agent import Agent, AgentConfig
from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.launch import RunningAuctioneer, start_auctioneer
from tycoon.auctioneer.service import AuctioneerService
from tycoon.bank.client import BankClient
from tycoon.bank.launch import RunningBank, start_bank
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bus import subjects
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import Identity, host_id
from tycoon.log import configure_logging
from tycoon.money import MICRO
from tycoon.natsserver import NatsServer
from tycoon.sls.launch import RunningSLS, start_sls
from tycoon.sls.service import SLSConfig
from tycoon.streams.settlements import SettlementLog, sqlite_source
from tycoon.streams.verify import verify_log
from tycoon.testing.localmarket import LocalMarket
from tycoon.testing.natscluster import start_cluster
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(120)]

FAST_SLS = SLSConfig(sweep_s=0.2, snapshot_s=1.0)


@pytest.fixture(autouse=True)
def _quiet() -> None:
    configure_logging("error")  # reconnect warnings by the hundred are expected here


def agent_config(budget: int, deadline_s: float) -> AgentConfig:
    return AgentConfig(budget=budget, deadline_s=deadline_s, replan_every_s=1.5,
                       refund_margin_s=1.5, candidates=10)


async def start_bank_with_log(market: LocalMarket) -> SettlementLog:
    """The market's bank, with its receipts copied to JetStream (as ``bank serve`` does)."""
    logs: list[SettlementLog] = []

    def settlement_log(bus: Bus) -> SettlementLog:
        logs.append(SettlementLog(bus.nc, market.bank_key, sqlite_source(market.state /
                                                                         "bank.db"),
                                  retry_s=(0.2, 1.0)))
        return logs[0]

    await market.start_bank(settlement_log)
    return logs[0]


async def test_nats_restart_under_a_running_market(tmp_path: Path) -> None:
    server = NatsServer(jetstream=True, store_dir=tmp_path / "js")
    await server.start()
    market = LocalMarket(server.url, tmp_path, Identity.generate(), Identity.generate())
    try:
        log = await start_bank_with_log(market)
        await market.start_sls(FAST_SLS)
        for preset in ("small", "medium", "large"):
            await market.add_host(preset, tick_s=0.2, heartbeat_s=0.5)
        assert market.sls is not None
        await eventually(lambda: _live(market, 3))
        users = [BankClient(await market.fund_user(100 * MICRO), market.bank_key)
                 for _ in range(4)]
        flood = Flood(users)
        flood.start()
        budgets = [10 * MICRO, 20 * MICRO]
        agents = [Agent(await market.fund_user(50 * MICRO), market.bank_key,
                        agent_config(b, 14.0), tmp_path / f"agent-{i}.db")
                  for i, b in enumerate(budgets)]
        runs = [asyncio.create_task(a.run()) for a in agents]
        await eventually(lambda: _true(all(a.plan is not None for a in agents)))
        await asyncio.sleep(1.0)

        await server.restart()  # every connection drops; the same port, the same store
        mark, restarted = len(flood.told), time.time_ns()
        # everyone reconnects on their own: hosts heartbeat into the SLS again, the bank
        # settles again, the agents keep following prices until their deadline
        await eventually(lambda: _fresh(market, restarted))
        await eventually(lambda: _true(flood.settled_since(mark) >= 20))
        summaries = await asyncio.wait_for(asyncio.gather(*runs), 60)
        await flood.finish()
        assert await log.drained(20)
    finally:
        await market.close()
    try:
        for summary, budget in zip(summaries, budgets, strict=True):
            assert 0 < summary.paid_out <= budget
        transfers = check_bank(tmp_path / "bank.db")
        flood_ids = {t for t in transfers if t.startswith("flood-")}
        assert flood_ids == set(flood.attempted)  # each attempted once, applied once
        for host in market.hosts:
            check_host_store(tmp_path / f"host-{host.id}.db", host.identity.public_key,
                             tmp_path / "bank.db")
        for i, (agent, budget) in enumerate(zip(agents, budgets, strict=True)):
            check_journal(tmp_path / f"agent-{i}.db", agent.bus.identity.public_key,
                          tmp_path / "bank.db", budget)
            for host in market.hosts:  # leftovers came back to the bank
                account = host.service.market.accounts.get(agent.bus.identity.public_key)
                assert account is None or account.balance == 0
        # the settlement log lost nothing across the restart (it resyncs from the ledger)
        report = await _verify(server.url, tmp_path / "bank.db", market.bank_key)
        assert report.ok and report.matched == len(transfers), report.to_dict()
    finally:
        await server.stop()


async def _live(market: LocalMarket, n: int) -> bool:
    assert market.sls is not None
    return len(market.sls.registry.live_hosts(time.time_ns())) >= n


async def _fresh(market: LocalMarket, since_ns: int) -> bool:
    """Every host's latest price in the SLS was signed after ``since_ns``."""
    assert market.sls is not None
    now = time.time_ns()
    return all(market.sls.registry.host(h.id, now)["last_seen_ns"] > since_ns
               for h in market.hosts)


async def _true(value: bool) -> bool:
    return value


async def _verify(url: str, db: Path, bank_key: str):  # type: ignore[no-untyped-def]
    bus = await open_bus(url, Identity.generate())
    try:
        with SqliteStore(db, readonly=True) as store:
            return await verify_log(bus.nc.jetstream(), store, bank_key, grace_s=0)
    finally:
        await bus.close()


# -- a three-node cluster, one node killed ---------------------------------------------


async def test_cluster_node_killed_market_carries_on(tmp_path: Path) -> None:
    servers = await start_cluster(tmp_path)
    urls = [s.url for s in servers]
    buses: list[Bus] = []
    running: list[RunningAuctioneer | RunningSLS | RunningBank] = []  # stopped in reverse
    bank_id, operator = Identity.generate(), Identity.generate()

    async def bus_on(node: int, identity: Identity | None = None) -> Bus:
        bus = await cluster_bus(urls, identity or Identity.generate(), node)
        buses.append(bus)
        return bus

    try:
        # node 0: the bank and host 0; node 1: the SLS and host 1; node 2: host 2 and the
        # agents
        bank = await start_bank(await bus_on(0, bank_id), db=tmp_path / "bank.db",
                                operator=operator.public_key)
        running.append(bank)
        sls = await start_sls(await bus_on(1), config=FAST_SLS)
        running.append(sls)
        host_ids = [Identity.generate() for _ in range(3)]
        hosts: list[AuctioneerService] = []
        for node, ident in enumerate(host_ids):
            hbus = await bus_on(node, ident)
            await BankClient(hbus, bank_id.public_key).open()
            host = await start_auctioneer(
                hbus, bank_key=bank_id.public_key,
                driver=SimulatedDriver(preset="medium", seed=node),
                store_path=tmp_path / f"host-{node}.db", name=f"h{node}", tick_s=0.2,
                heartbeat_s=0.5)
            running.append(host)
            hosts.append(host.service)
        assert {b.nc.connected_url.port for b in buses} == {s.port for s in servers}
        seen: dict[str, list[int]] = {"alloc": [], "bank.settled": []}

        async def watch(msg: Message) -> None:
            if msg.kind in seen:
                seen[msg.kind].append(time.time_ns())

        # the watcher is given the cluster as one comma-separated URL (as --nats takes it)
        watcher = await open_bus(",".join(urls), Identity.generate())
        buses.append(watcher)
        await watcher.subscribe(subjects.ALL, watch)
        await eventually(lambda: _true(len(sls.registry.live_hosts(time.time_ns())) == 3))
        op = BankClient(await bus_on(2, operator), bank_id.public_key)

        async def user(node: int, amount: int) -> Bus:
            bus = await bus_on(node)
            await BankClient(bus, bank_id.public_key).open()
            await op.mint(bus.identity.public_key, amount)
            return bus

        budgets = [10 * MICRO, 20 * MICRO]
        agents = [Agent(await user(2, 50 * MICRO), bank_id.public_key,
                        agent_config(b, 14.0), tmp_path / f"agent-{i}.db")
                  for i, b in enumerate(budgets)]
        runs = [asyncio.create_task(a.run()) for a in agents]
        rival = await user(1, 100 * MICRO)
        await eventually(lambda: _true(all(a.plan is not None for a in agents)))
        await asyncio.sleep(1.0)

        servers[0].kill()  # SIGKILL the bank's node (and host 0's)
        killed = time.time_ns()
        # settling and allocating go on through the two other nodes: a new user pays
        # host 0 (which was on the dead node), funds an account there and bids
        receipt = await _retry(lambda: BankClient(rival, bank_id.public_key, timeout=1).transfer(
            host_ids[0].public_key, 5 * MICRO, transfer_id="rival-1"))  # one id: pays once
        client = AuctioneerClient(rival, host_id(host_ids[0].public_key), timeout=1)
        await _retry(lambda: client.fund(receipt), ok=("already_redeemed",))
        await _retry(lambda: client.bid("cpu:1,0,1", "30s"))
        await eventually(lambda: _true(any(t > killed for t in seen["alloc"])
                                       and any(t > killed for t in seen["bank.settled"])))
        assert bank.bus.nc.connected_url.port != servers[0].port
        summaries = await asyncio.wait_for(asyncio.gather(*runs), 60)
        for summary, budget in zip(summaries, budgets, strict=True):
            assert 0 < summary.paid_out <= budget
        for agent in agents:
            for service in hosts:
                account = service.market.accounts.get(agent.bus.identity.public_key)
                assert account is None or account.balance == 0
    finally:
        for part in reversed(running):
            await part.stop()
        for bus in buses:
            await bus.close()
        for server in servers:
            await server.stop()
    check_bank(tmp_path / "bank.db")
    for node, ident in enumerate(host_ids):
        check_host_store(tmp_path / f"host-{node}.db", ident.public_key, tmp_path / "bank.db")
    for i, (agent, budget) in enumerate(zip(agents, budgets, strict=True)):
        check_journal(tmp_path / f"agent-{i}.db", agent.bus.identity.public_key,
                      tmp_path / "bank.db", budget)


async def _retry(call, attempts: int = 20, ok: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """Retry an idempotent call across a failover (a request in flight on the dead node
    is lost); a refusal in ``ok`` means an earlier attempt went through."""
    from tycoon.errors import Rejected

    for attempt in range(attempts):
        try:
            return await call()
        except Rejected as error:
            if attempt and error.code in ok:
                return None
            if error.code not in ("timeout", "unavailable") or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.25)
    return None
