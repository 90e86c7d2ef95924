"""Every message kind the system knows. Decoding refuses any other (``unknown_kind``).

Each kind's body is a class of :mod:`tycoon.messages` (``MESSAGES[kind]``); a test checks
that the two lists agree and that docs/protocol.md §6 documents every kind and field.
"""

from __future__ import annotations

KINDS: set[str] = {
    # replies
    "reply",
    "error",
    # bank
    "bank.open",
    "bank.mint",
    "bank.transfer",
    "bank.balance",
    "bank.history",
    "bank.close",
    "bank.settled",
    "bank.receipt",
    "bank.info",
    # auctioneer
    "host.account",
    "host.fund",
    "host.bid",
    "host.refund",
    "host.status",
    "price",
    "alloc",
    # jobs (docs/jobs.md)
    "host.exec",
    "host.signal",
    "host.jobs",
    "job.output",
    "job.exit",
    # bundles (docs/jobs.md, served by the hosts)
    "bundle.put",
    "bundle.get",
    # sls
    "sls.query",
    "sls.host",
    "sls.history",
    "sls.snapshot",
    # agents and brokers
    "agent.plan",
    "agent.rebid",
    "agent.settled",
    "agent.warning",
    "agent.done",
    "broker.enroll",
    "broker.status",
    # the bus's own demo and liveness exchange
    "demo.echo",
}
