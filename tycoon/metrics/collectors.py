"""Custom Prometheus collectors: they read the services' own counters and state at scrape
time, so nothing is counted twice and the hot path carries no Prometheus objects.

Every service gets :class:`CommonCollector` (requests, handler latency, refusals, queues,
event-loop lag) and one domain collector. Label values are bounded: ``service`` is one of
four names, ``kind`` one of the service's endpoint kinds, ``code`` and ``outcome`` keys of
:data:`tycoon.errors.CODES` (plus ``ok``, ``accepted``, ``out_of_order``), ``resource``
one of :data:`tycoon.resources.RESOURCES`, ``host`` the auctioneer's own host id (one
process serves one host). No account, key or agent id is ever a label value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tycoon.auctioneer.views import prices
from tycoon.bus.histogram import Histogram
from tycoon.log import get_logger
from tycoon.resources import RESOURCES
from tycoon.units import NS

if TYPE_CHECKING:
    from tycoon.agent.agent import Agent
    from tycoon.auctioneer.service import AuctioneerService
    from tycoon.bank.service import BankService
    from tycoon.bus.connection import Bus
    from tycoon.bus.service import Service
    from tycoon.sls.service import SLSService

log = get_logger("metrics")


def histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels, unit="")


def add_histogram(family: HistogramMetricFamily, values: list[str], hist: Histogram) -> None:
    family.add_metric(values, hist.cumulative(), sum_value=hist.total)


def nats_pending(bus: Bus) -> int:
    """Messages delivered to this connection's subscriptions and not yet handled."""
    subs = getattr(bus.nc, "_subs", {})  # nats-py keeps no public list of subscriptions
    return sum(sub.pending_msgs for sub in list(subs.values()))


class CommonCollector(Collector):
    """What every service has: requests by kind and outcome, handler latency, refusals by
    code, requests in flight, NATS messages pending, event-loop lag."""

    def __init__(self, name: str, bus: Bus, service: Service | None, lag: Histogram) -> None:
        self.name, self.bus, self.service, self.lag = name, bus, service, lag

    def collect(self) -> Iterator[Metric]:
        svc, label = self.service, [self.name]
        requests = CounterMetricFamily(
            "tycoon_requests", "Requests by endpoint kind and outcome (ok or a refusal code).",
            labels=["service", "kind", "code"])
        latency = histogram("tycoon_request_handler_seconds",
                            "Time in a request's handler (after verification), by kind.",
                            ["service", "kind"])
        dropped = CounterMetricFamily(
            "tycoon_requests_dropped", "Requests refused without any reply (rate limits).",
            labels=["service"])
        in_flight = GaugeMetricFamily("tycoon_requests_in_flight",
                                      "Requests taken and not yet answered.", labels=["service"])
        if svc is not None:
            for (kind, code), n in sorted(svc.stats.outcomes.items()):
                requests.add_metric([self.name, kind, code], n)
            for kind, hist in sorted(svc.stats.latency.items()):
                add_histogram(latency, [self.name, kind], hist)
            dropped.add_metric(label, svc.stats.unanswered)
            in_flight.add_metric(label, svc.in_flight)
        yield from (requests, latency, dropped, in_flight)
        refused = CounterMetricFamily(
            "tycoon_verification_failures",
            "Envelopes refused by the bus's checks (signature, binding, freshness, replay, "
            "kind, reply subject, rate limit), by code.", labels=["service", "code"])
        for code, n in sorted(self.bus.rejected.items()):
            refused.add_metric([self.name, code], n)
        yield refused
        yield self._pending(label)
        lag = histogram("tycoon_event_loop_lag_seconds",
                        "How late the event loop woke a 0.25 s sleep.", ["service"])
        add_histogram(lag, label, self.lag)
        yield lag

    def _pending(self, label: list[str]) -> GaugeMetricFamily:
        family = GaugeMetricFamily("tycoon_nats_pending_messages",
                                   "Messages received from NATS and not yet handled.",
                                   labels=["service"])
        family.add_metric(label, nats_pending(self.bus))
        return family


class DomainCollector(Collector):
    """Calls ``read`` at scrape time; a failure is logged and its metrics left out, so a
    scrape never fails for one domain reading."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        try:
            metrics = list(self.read())
        except Exception:
            log.exception("domain metrics failed")
            return
        yield from metrics


def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = CounterMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def bank_metrics(bank: BankService) -> Iterator[Metric]:
    """Accounts, committed events, Σ balances, Σ minted and their difference."""
    ledger = bank.ledger
    rows = list(ledger.accounts.values())
    accounts = GaugeMetricFamily("tycoon_bank_accounts", "Accounts in the ledger.",
                                 labels=["state"])
    closed = sum(1 for row in rows if row.closed)
    accounts.add_metric(["open"], len(rows) - closed)
    accounts.add_metric(["closed"], closed)
    yield accounts
    events = CounterMetricFamily("tycoon_bank_ledger_events",
                                 "Ledger events committed by this process, by kind.",
                                 labels=["kind"])
    for kind in ("open", "mint", "transfer", "close"):
        events.add_metric([kind], bank.committed[kind])
    yield events
    yield counter("tycoon_bank_transfers", "Transfers committed by this process.",
                  bank.committed["transfer"])
    balances = sum(row.balance for row in rows)  # exact ints; floats only on the way out
    yield gauge("tycoon_bank_balances_microcredits", "Σ of every account's balance.", balances)
    yield gauge("tycoon_bank_minted_microcredits", "Σ ever minted.", ledger.minted)
    yield gauge("tycoon_bank_audit_drift_microcredits",
                "Σ balances − Σ minted (exact); anything but 0 is a bug.", balances - ledger.minted)
    yield gauge("tycoon_bank_ledger_seq", "The ledger's last event sequence number.", ledger.seq)
    yield counter("tycoon_bank_commit_batches", "Batches committed (one fsync each).",
                  bank.committer.batches)
    yield gauge("tycoon_bank_commit_queued_operations",
                "Operations waiting for the next commit.", bank.committer.queued)


def auctioneer_metrics(svc: AuctioneerService) -> Iterator[Metric]:
    """One host's prices, utilisation, bidders, accounts and money totals."""
    market, host = svc.market, {"host": svc.host}
    labels = ["host", "resource"]
    price = GaugeMetricFamily("tycoon_auctioneer_price_microcredits_per_second",
                              "Price of a resource: Σ of every bid's rate.", labels=labels)
    util = GaugeMetricFamily("tycoon_auctioneer_utilization_ratio",
                             "Measured use of a resource over its capacity.", labels=labels)
    bidders = GaugeMetricFamily("tycoon_auctioneer_bidders", "Bids with a rate on a resource.",
                                labels=labels)
    totals = prices(market)
    counts = (market.rates > 0).sum(axis=1).tolist()
    used = np.asarray(market.utilization).tolist()
    for j, resource in enumerate(RESOURCES):
        price.add_metric([svc.host, resource], totals[resource])
        util.add_metric([svc.host, resource], used[j])
        bidders.add_metric([svc.host, resource], counts[j])
    yield from (price, util, bidders)
    balances = sum(a.balance for a in market.accounts.values())
    yield gauge("tycoon_auctioneer_accounts", "Accounts on this host.", len(market.accounts),
                host)
    yield counter("tycoon_auctioneer_earnings_microcredits", "Charged to bids, ever.",
                  market.earnings, host)
    yield counter("tycoon_auctioneer_funded_microcredits", "Paid in by accounts, ever.",
                  market.funded, host)
    yield counter("tycoon_auctioneer_refunded_microcredits", "Refunded (paid or due), ever.",
                  market.refunded, host)
    yield gauge("tycoon_auctioneer_balances_microcredits", "Σ of the accounts' balances.",
                balances, host)
    yield gauge("tycoon_auctioneer_conserved",
                "1 while funded = earnings + Σ balances + refunded, else 0.",
                int(market.funded == market.earnings + balances + market.refunded), host)
    yield gauge("tycoon_auctioneer_pending_refunds", "Refunds due and not yet paid.",
                len(market.pending), host)


def sls_metrics(sls: SLSService) -> Iterator[Metric]:
    """Hosts known and live, price updates by outcome, staleness, backlog."""
    registry = sls.registry
    registry.flush()
    now = time.time_ns()
    cols = registry.cols
    live = cols.live_until > now
    hosts = GaugeMetricFamily("tycoon_sls_hosts", "Hosts the SLS knows.", labels=["state"])
    n_live = int(np.count_nonzero(live))
    hosts.add_metric(["live"], n_live)
    hosts.add_metric(["dormant"], len(registry) - n_live)
    yield hosts
    updates = CounterMetricFamily("tycoon_sls_price_updates",
                                  "Price updates ingested, by outcome (accepted, out_of_order, "
                                  "or a refusal code).", labels=["outcome"])
    for outcome, n in sorted(sls.ingest.counters.items()):
        updates.add_metric([outcome], n)
    yield updates
    oldest = int(cols.last_seen[live].min()) if n_live else now
    yield gauge("tycoon_sls_staleness_seconds",
                "Age of the oldest live host's latest update (by its signed time).",
                max(0, now - oldest) / NS)
    yield counter("tycoon_sls_hosts_expired", "Hosts that went silent, ever.",
                  registry.counters["expired"])
    yield gauge("tycoon_sls_ingest_backlog", "Price updates received, not yet applied.",
                sls.backlog)


def agent_metrics(agent: Agent) -> Iterator[Metric]:
    """Budget, what went to hosts, hosts held, plans and rebids (no agent id label: one
    agent per process, the scrape target tells which)."""
    summary = agent.summary
    plan = agent.plan
    yield gauge("tycoon_agent_budget_microcredits", "The job's budget.", agent.config.budget)
    yield gauge("tycoon_agent_paid_out_microcredits",
                "Net paid to hosts (funded − refunded): the budget committed so far.",
                agent.journal.net_paid_out())
    yield gauge("tycoon_agent_hosts_held", "Hosts the current plan funds.",
                len(plan.hosts) if plan is not None else 0)
    yield counter("tycoon_agent_plans", "Plans made.", summary.plans)
    yield counter("tycoon_agent_rebids", "Plans that changed the bids.", summary.rebids)
    yield gauge("tycoon_agent_seconds_left", "Seconds to the job's deadline.",
                max(0.0, agent.seconds_left))


def describe(target: Any) -> tuple[str, Bus, Service | None, Callable[[], Iterable[Metric]]]:
    """(service label, bus, request service, domain reader) of a bank, auctioneer, SLS or
    agent."""
    from tycoon.agent.agent import Agent
    from tycoon.auctioneer.service import AuctioneerService
    from tycoon.bank.service import BankService
    from tycoon.sls.service import SLSService

    if isinstance(target, BankService):
        return "bank", target.bus, target.service, lambda: bank_metrics(target)
    if isinstance(target, AuctioneerService):
        return "auctioneer", target.bus, target.service, lambda: auctioneer_metrics(target)
    if isinstance(target, SLSService):
        return "sls", target.bus, target.service, lambda: sls_metrics(target)
    if isinstance(target, Agent):
        return "agent", target.bus, None, lambda: agent_metrics(target)
    raise TypeError(f"no metrics for {type(target).__name__}")
