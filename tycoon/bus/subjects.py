"""Every subject of the system, built in one place (lowercase, broad to narrow)."""

from __future__ import annotations

import re

PREFIX = "tycoon"
ALL = "tycoon.>"
PRICES_ALL = "tycoon.price.*"
ALLOCS_ALL = "tycoon.alloc.*"
BANK_SETTLED = "tycoon.bank.settled"
BANK_RECEIPT = "tycoon.bank.receipt"
SLS_SNAPSHOT = "tycoon.sls.snapshot"
AGENTS_ALL = "tycoon.agent.>"
SETTLEMENT_PREFIX = "tycoon.settlement"
SETTLEMENTS_ALL = "tycoon.settlement.>"
"""The SETTLEMENTS stream: one bank receipt per message (durable tokens, not live events)."""

_TOKEN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def token(value: str) -> str:
    """Check that ``value`` is one safe subject token (no dots, wildcards or spaces)."""
    if not _TOKEN.match(value):
        raise ValueError(f"not a subject token: {value!r}")
    return value


def price(host: str) -> str:
    """Price updates of one host."""
    return f"{PREFIX}.price.{token(host)}"


def alloc(host: str) -> str:
    """Allocation changes of one host."""
    return f"{PREFIX}.alloc.{token(host)}"


def host_op(host: str, op: str) -> str:
    """A request to one host's auctioneer (account, fund, bid, refund, status)."""
    return f"{PREFIX}.host.{token(host)}.{token(op)}"


def host_all(host: str) -> str:
    """Every request subject of one host."""
    return f"{PREFIX}.host.{token(host)}.>"


JOBS_ALL = f"{PREFIX}.job.>"


def job(account_id: str, job_id: str, event: str) -> str:
    """A job's output (``out``) or end (``exit``): ``tycoon.job.<account id>.<job id>.<event>``
    (the account's subject id first, so ``tycoon.job.<own id>.>`` is all its jobs)."""
    return f"{PREFIX}.job.{token(account_id)}.{token(job_id)}.{token(event)}"


def job_all(account_id: str) -> str:
    """Every job subject of one account."""
    return f"{PREFIX}.job.{token(account_id)}.>"


def bank(op: str) -> str:
    """A request to the bank (open, mint, transfer, balance, history, close)."""
    return f"{PREFIX}.bank.{token(op)}"


def sls(op: str) -> str:
    """A query to the SLS (query, host)."""
    return f"{PREFIX}.sls.{token(op)}"


def agent(agent_id: str, event: str) -> str:
    """What one agent decides (plan, rebid, warning, done)."""
    return f"{PREFIX}.agent.{token(agent_id)}.{token(event)}"


def agent_all(agent_id: str) -> str:
    """Every event subject of one agent."""
    return f"{PREFIX}.agent.{token(agent_id)}.>"


def broker(broker_id: str, op: str) -> str:
    """A request to one broker (enroll, status)."""
    return f"{PREFIX}.broker.{token(broker_id)}.{token(op)}"


def settlement(payer_id: str, payee_id: str) -> str:
    """Where the bank logs one receipt: ``tycoon.settlement.<payer id>.<payee id>``."""
    return f"{SETTLEMENT_PREFIX}.{token(payer_id)}.{token(payee_id)}"


def is_settlement(subject: str) -> bool:
    """True for a subject of the SETTLEMENTS stream."""
    return subject.startswith(SETTLEMENT_PREFIX + ".")


LIVE_FEEDS = (PRICES_ALL, ALLOCS_ALL, BANK_SETTLED, SLS_SNAPSHOT, AGENTS_ALL)
"""The live event feeds (everything an operator's view follows; no requests, no stream)."""


def host_of(subject: str) -> str | None:
    """The host token of a price, alloc or host subject, else None."""
    parts = subject.split(".")
    if len(parts) >= 3 and parts[0] == PREFIX and parts[1] in ("price", "alloc", "host"):
        return parts[2]
    return None


DEMO_ECHO = f"{PREFIX}.demo.echo"
