"""The message model: one frozen dataclass per body kind on the wire.

``MESSAGES[kind]`` is the body class of every kind in :data:`tycoon.bus.kinds.KINDS`;
``REPLIES[kind]`` the body of a ``reply`` to a request of that kind. Each class reads a
received body with ``from_body`` (``malformed`` naming the bad field) and writes one with
``to_body``. docs/protocol.md §6 lists them all (``python -m tycoon.messages`` prints the
table; tests/test_protocol_doc.py fails when a kind or field is missing there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from tycoon.messages import agent, bank, bundles, jobs, market, sls
from tycoon.messages.base import Body, meta
from tycoon.messages.price import Offer, PriceUpdate


@dataclass(frozen=True, slots=True)
class Reply(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("reply",)
    SUMMARY: ClassVar[str] = "the result of a request: the body listed with its request kind"


@dataclass(frozen=True, slots=True)
class Error(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("error",)
    SUMMARY: ClassVar[str] = "a refused request (§4)"
    code: str = field(metadata=meta("stable code (§4)", max_len=64))
    message: str = field(metadata=meta("human text", max_len=1024))
    returned: bytes | None = field(default=None, metadata=meta(
        "a refused `host.fund`: the bank receipt paying the amount back (docs/auctioneer.md)",
        max_len=4096))


@dataclass(frozen=True, slots=True)
class DemoEcho(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("demo.echo",)
    SUMMARY: ClassVar[str] = "the wire-protocol demo (`tycoon demo`)"
    text: str = field(metadata=meta("non-empty", max_len=1024))


@dataclass(frozen=True, slots=True)
class DemoEchoReply(Body):
    text: str
    from_: str = field(metadata=meta("the sender's subject id", wire="str"))
    length: int


def _registry(*classes: type[Body]) -> dict[str, type[Body]]:
    out: dict[str, type[Body]] = {}
    for cls in classes:
        for kind in cls.KINDS:
            if kind in out:
                raise ValueError(f"two bodies for {kind!r}")
            out[kind] = cls
    return out


MESSAGES: dict[str, type[Body]] = _registry(
    Reply, Error, DemoEcho, PriceUpdate,
    market.Alloc, market.HostAccount, market.HostFund, market.HostBid, market.HostRefund,
    market.HostStatus,
    bank.BankOpen, bank.BankMint, bank.BankTransfer, bank.BankBalance, bank.BankHistory,
    bank.BankClose, bank.BankInfo, bank.BankSettled, bank.BankReceipt,
    sls.SlsQuery, sls.SlsHost, sls.SlsHistory, sls.SlsSnapshot,
    agent.AgentPlan, agent.AgentRebid, agent.AgentSettled, agent.AgentWarning,
    agent.AgentDone, agent.BrokerEnroll, agent.BrokerStatus,
    jobs.HostExec, jobs.HostSignal, jobs.HostJobs, jobs.JobOutput, jobs.JobExit,
    bundles.BundlePut, bundles.BundleGet,
)
"""kind → its body class."""

REPLIES: dict[str, type[Body]] = {
    **market.REPLIES, **jobs.REPLIES, **bank.REPLIES, **sls.REPLIES, **agent.REPLIES,
    **bundles.REPLIES,
    "demo.echo": DemoEchoReply,
}
"""request kind → the body of its ``reply``."""


def _fields(cls: type[Body]) -> str:
    parts = [f"+ any other fields (`{s.name}`)" if s.wire == "fields"
             else f"`{s.name}`{'?' if s.optional else ''}: {s.wire}" for s in cls.specs()]
    return ", ".join(parts) if parts else "`{}`"


def doc_table() -> str:
    """The table of docs/protocol.md §6: every kind, its fields and its reply's."""
    rows = ["| kind | what | body fields (`?`: optional) | reply fields |",
            "|---|---|---|---|"]
    for kind, cls in sorted(MESSAGES.items()):
        reply = REPLIES.get(kind)
        rows.append(f"| `{kind}` | {cls.SUMMARY} | {_fields(cls)} | "
                    f"{_fields(reply) if reply else ''} |")
    return "\n".join(rows)


__all__ = ["MESSAGES", "REPLIES", "Body", "DemoEcho", "DemoEchoReply", "Error", "Offer",
           "PriceUpdate", "doc_table"]
