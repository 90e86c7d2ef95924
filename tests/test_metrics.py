"""Prometheus metrics: each service's /metrics, scraped over HTTP and parsed with the
client's own text-format parser, moves with the market (docs/operations.md#metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bank_kit import funded_user
from hostile_kit import forged
from polling import until as poll_until
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tycoon.agent.agent import Agent, AgentConfig
from tycoon.auctioneer.client import AuctioneerClient
from tycoon.auctioneer.launch import RunningAuctioneer, start_auctioneer
from tycoon.bank.client import BankClient
from tycoon.bank.launch import start_bank
from tycoon.bank.service import BankService
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.keys import Identity, subject_id
from tycoon.metrics.server import MetricsServer
from tycoon.money import MICRO
from tycoon.sls.launch import start_sls
from tycoon.sls.service import SLSConfig, SLSService
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def fetch(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


async def scrape(server: MetricsServer) -> Samples:
    """Every sample of one scrape, by (name, sorted labels)."""
    status, text = await asyncio.to_thread(fetch, server.url)
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def until(server: MetricsServer, check: Callable[[Samples], bool],
                timeout: float = 10.0) -> Samples:
    async def moved() -> Samples | None:
        samples = await scrape(server)
        return samples if check(samples) else None

    found: Samples = await poll_until(moved, timeout=timeout, what="the metric's move")
    return found


@dataclass
class Market:
    url: str
    bank_id: Identity
    operator: Identity
    host_id: Identity
    bank: BankService
    auctioneer: RunningAuctioneer
    sls: SLSService
    metrics: dict[str, MetricsServer]
    buses: list[Bus] = field(default_factory=list)

    async def user(self, credits: int = 100) -> tuple[Bus, BankClient]:
        _, bus, bank = await funded_user(self.url, self.bank_id.public_key, self.operator,
                                         self.buses, credits)
        return bus, bank


@pytest.fixture
async def market(nats_url: str, tmp_path: Path) -> AsyncIterator[Market]:
    bank_id, operator, host_id = Identity.generate(), Identity.generate(), Identity.generate()
    running_bank = await start_bank(nats_url, bank_id, db=tmp_path / "bank.db",
                                    operator=operator.public_key)
    running_sls = await start_sls(nats_url, None, SLSConfig(sweep_s=0.05, snapshot_s=0.5,
                                                            warm_start_s=0))
    bank, sls = running_bank.service, running_sls.service
    auctioneer = await start_auctioneer(
        nats_url, host_id, bank_key=bank_id.public_key, driver=SimulatedDriver(preset="small"),
        store_path=tmp_path / "host.db", name="h1", tick_s=0.1, heartbeat_s=0.2)
    await BankClient(auctioneer.bus, bank_id.public_key).open(exist_ok=True)
    metrics = {"bank": MetricsServer(bank), "sls": MetricsServer(sls),
               "auctioneer": MetricsServer(auctioneer.service)}
    for server in metrics.values():
        await server.start()
    state = Market(nats_url, bank_id, operator, host_id, bank, auctioneer, sls, metrics)
    yield state
    for server in metrics.values():
        await server.stop()
    for bus in state.buses:
        await bus.close()
    with contextlib.suppress(Exception):
        await auctioneer.stop()
    await running_sls.stop()
    await running_bank.stop()


async def test_a_transfer_moves_the_banks_metrics(market: Market) -> None:
    server = market.metrics["bank"]
    before = await scrape(server)
    _, alice = await market.user(100)
    await alice.transfer(market.host_id.public_key, 7 * MICRO)
    after = await scrape(server)
    assert value(after, "tycoon_bank_transfers_total") == \
        value(before, "tycoon_bank_transfers_total") + 1
    assert value(after, "tycoon_bank_ledger_events_total", kind="mint") == \
        value(before, "tycoon_bank_ledger_events_total", kind="mint") + 1
    assert value(after, "tycoon_bank_accounts", state="open") == \
        value(before, "tycoon_bank_accounts", state="open") + 1
    minted = value(after, "tycoon_bank_minted_microcredits")
    assert minted == value(before, "tycoon_bank_minted_microcredits") + 100 * MICRO
    assert value(after, "tycoon_bank_balances_microcredits") == minted
    assert value(after, "tycoon_bank_audit_drift_microcredits") == 0
    ok = {"service": "bank", "kind": "bank.transfer", "code": "ok"}
    assert value(after, "tycoon_requests_total", **ok) == \
        value(before, "tycoon_requests_total", **ok) + 1
    count = "tycoon_request_handler_seconds_count"
    assert value(after, count, service="bank", kind="bank.transfer") >= 1
    assert value(after, "tycoon_request_handler_seconds_bucket", service="bank",
                 kind="bank.transfer", le="+Inf") == value(after, count, service="bank",
                                                           kind="bank.transfer")
    # a refusal counts under its code
    with contextlib.suppress(Exception):
        await alice.transfer(market.host_id.public_key, 10_000 * MICRO)
    refused = await scrape(server)
    assert value(refused, "tycoon_requests_total", service="bank", kind="bank.transfer",
                 code="overdraft") == 1


async def test_a_bid_moves_the_auctioneers_price(market: Market) -> None:
    server = market.metrics["auctioneer"]
    host = subject_id(market.host_id.public_key)
    cpu = {"host": host, "resource": "cpu"}
    before = await scrape(server)
    assert value(before, "tycoon_auctioneer_bidders", **cpu) == 0
    bus, bank = await market.user(100)
    client = AuctioneerClient(bus, host, timeout=3.0)
    receipt = await bank.transfer(market.host_id.public_key, 50 * MICRO)
    await client.fund(receipt.raw)
    await client.bid("1h cpu:2,0.1,1.0")
    after = await scrape(server)
    price = "tycoon_auctioneer_price_microcredits_per_second"
    assert value(after, price, **cpu) > value(before, price, **cpu)
    assert value(after, "tycoon_auctioneer_bidders", **cpu) == 1
    assert value(after, "tycoon_auctioneer_accounts", host=host) == 1
    assert value(after, "tycoon_auctioneer_funded_microcredits_total", host=host) == 50 * MICRO
    assert value(after, "tycoon_auctioneer_conserved", host=host) == 1
    assert value(after, "tycoon_requests_total", service="auctioneer", kind="host.bid",
                 code="ok") == 1
    # ticks charge the bid: earnings rise, and stay conserved
    charged = await until(server, lambda s: value(
        s, "tycoon_auctioneer_earnings_microcredits_total", host=host) > 0)
    assert value(charged, "tycoon_auctioneer_conserved", host=host) == 1
    # no account key is ever a label value (labels are bounded; docs/operations.md)
    keys = {bank.account, market.host_id.public_key}
    assert not any(v in keys for _, labels in charged for _, v in labels)


async def test_a_refused_envelope_counts_as_a_verification_failure(market: Market) -> None:
    server = market.metrics["bank"]
    bus, _ = await market.user(10)
    raw = forged(Identity.generate(), Identity.generate(), "bank.balance", {},
                 subjects.bank("balance"))
    before = value(await scrape(server), "tycoon_verification_failures_total",
                   service="bank", code="bad_signature")
    await bus.nc.publish(subjects.bank("balance"), raw, reply=f"{bus.inbox_prefix}.x")
    after = await until(server, lambda s: value(
        s, "tycoon_verification_failures_total", service="bank", code="bad_signature") > before)
    assert value(after, "tycoon_requests_total", service="bank", kind="bank.balance",
                 code="bad_signature") >= 1
    # $SRV.STATS tells the same numbers
    reply = await bus.nc.request("$SRV.STATS.tycoon-bank", b"", timeout=3)
    data = json.loads(reply.data)["endpoints"][0]["data"]
    assert data["refused"]["bad_signature"] == value(
        after, "tycoon_verification_failures_total", service="bank", code="bad_signature")
    assert data["outcomes"]["bank.balance bad_signature"] == value(
        after, "tycoon_requests_total", service="bank", kind="bank.balance",
        code="bad_signature")


async def test_the_sls_counts_hosts_and_updates(market: Market) -> None:
    server = market.metrics["sls"]
    samples = await until(server, lambda s: value(s, "tycoon_sls_hosts", state="live") == 1
                          and value(s, "tycoon_sls_price_updates_total", outcome="accepted") > 1)
    first = value(samples, "tycoon_sls_price_updates_total", outcome="accepted")
    assert value(samples, "tycoon_sls_staleness_seconds") < 60  # heartbeats every 0.2 s
    await until(server, lambda s: value(
        s, "tycoon_sls_price_updates_total", outcome="accepted") > first)
    assert value(samples, "tycoon_event_loop_lag_seconds_count", service="sls") >= 0
    assert value(samples, "tycoon_nats_pending_messages", service="sls") >= 0
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)


async def test_agent_metrics(market: Market, tmp_path: Path) -> None:
    bus, _ = await market.user(10)
    config = AgentConfig(budget=5 * MICRO, deadline_s=60)
    agent = Agent(bus, market.bank_id.public_key, config, tmp_path / "agent.db")
    async with MetricsServer(agent) as server:
        samples = await scrape(server)
    assert value(samples, "tycoon_agent_budget_microcredits") == 5 * MICRO
    assert value(samples, "tycoon_agent_paid_out_microcredits") == 0
    assert value(samples, "tycoon_agent_hosts_held") == 0
    assert value(samples, "tycoon_agent_rebids_total") == 0
    assert 0 < value(samples, "tycoon_agent_seconds_left") <= 60
    assert value(samples, "tycoon_verification_failures_total", service="agent",
                 code="bad_signature") == 0


async def test_services_keep_their_own_registries_and_http_is_minimal(market: Market) -> None:
    bank, sls = market.metrics["bank"], market.metrics["sls"]
    assert bank.port != sls.port
    bank_names = {name for name, _ in await scrape(bank)}
    sls_names = {name for name, _ in await scrape(sls)}
    assert "tycoon_bank_transfers_total" in bank_names - sls_names
    assert "tycoon_sls_staleness_seconds" in sls_names - bank_names
    assert not any(name.startswith("tycoon_") for name in REGISTRY._names_to_collectors)
    base = bank.url.removesuffix("/metrics")
    assert (await asyncio.to_thread(fetch, base + "/nope"))[0] == 404
    assert (await asyncio.to_thread(fetch, bank.url, "POST"))[0] == 405
    assert (await asyncio.to_thread(fetch, bank.url, "HEAD")) == (200, "")


async def test_rules_dashboard_and_docs_name_only_real_metrics(market: Market,
                                                              tmp_path: Path) -> None:
    """Every tycoon_* name in the alert rules, the Grafana dashboard and the docs' metric
    list is one the services expose, and the docs list every one they expose."""
    bus, _ = await market.user(10)
    agent = Agent(bus, market.bank_id.public_key, AgentConfig(budget=MICRO, deadline_s=60),
                  tmp_path / "agent.db")
    families: dict[str, str] = {}
    async with MetricsServer(agent) as agent_server:
        for server in [*market.metrics.values(), agent_server]:
            _, text = await asyncio.to_thread(fetch, server.url)
            families.update((f.name, f.type) for f in text_string_to_metric_families(text)
                            if f.name.startswith("tycoon_"))
    exposed = set(families)
    for name, kind in families.items():
        exposed |= {f"{name}_total"} if kind == "counter" else set()
        exposed |= {f"{name}_{s}" for s in ("bucket", "sum", "count")} if kind == "histogram" \
            else set()
    root = Path(__file__).resolve().parent.parent
    name = re.compile(r"\btycoon_[a-z_]+[a-z]")
    docs = (root / "docs" / "operations.md").read_text().split("\n## Metrics\n", 1)[1]
    for path, text in [("rules", (root / "deploy/prometheus/tycoon-rules.yml").read_text()),
                       ("dashboard", (root / "deploy/grafana/tycoon.json").read_text()),
                       ("docs", docs)]:
        unknown = set(name.findall(text)) - exposed
        assert not unknown, f"{path} names metrics nobody exposes: {sorted(unknown)}"
    documented = set(name.findall(docs))
    missing = {n for n, kind in families.items()
               if (f"{n}_total" if kind == "counter" else n) not in documented}
    assert not missing, f"docs/operations.md#metrics lacks {sorted(missing)}"
