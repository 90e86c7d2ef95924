"""Bodies of agents' events and of a broker's requests and replies (docs/agent.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tycoon.messages.base import Body, meta


@dataclass(frozen=True, slots=True)
class AgentPlan(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("agent.plan",)
    SUMMARY: ClassVar[str] = "an agent's new plan (informational)"
    epoch: int
    summary: str
    reason: str
    utility: float
    spend_rate: float
    cushion: int = field(metadata=meta("µcredits kept to hold the shares with `probability`"))
    hosts: dict[str, Any] = field(metadata=meta("host → {`balance`, `rate`, `share`}"))
    probability: float | None = field(
        default=None, metadata=meta("the agent's share-keeping probability, if set"))


@dataclass(frozen=True, slots=True)
class AgentRebid(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("agent.rebid",)
    SUMMARY: ClassVar[str] = "a plan's bids placed"
    epoch: int
    reason: str
    summary: str
    funded: dict[str, int] = field(metadata=meta("host → µcredits paid in"))
    refunded: dict[str, int] = field(metadata=meta("host → µcredits brought home"))
    errors: dict[str, str] = field(metadata=meta("host → what failed"))
    latency_ms: float | None = field(default=None, metadata=meta("price move → bids placed"))
    answer_ms: float | None = field(default=None, metadata=meta("price move → parks too"))


@dataclass(frozen=True, slots=True)
class AgentSettled(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("agent.settled",)
    SUMMARY: ClassVar[str] = "the money moves of a plan, done"
    epoch: int
    funded: dict[str, int] = field(metadata=meta("host → µcredits paid in"))
    refunded: dict[str, int] = field(metadata=meta("host → µcredits brought home"))
    errors: dict[str, str] = field(metadata=meta("host → what failed"))
    superseded: bool


@dataclass(frozen=True, slots=True)
class AgentWarning(Body):
    """``detail`` travels as fields of the body itself, beside ``message``."""

    KINDS: ClassVar[tuple[str, ...]] = ("agent.warning",)
    SUMMARY: ClassVar[str] = "something the owner should know (+ detail fields)"
    message: str = field(metadata=meta(max_len=1024))
    detail: dict[str, Any] = field(default_factory=dict, metadata=meta(
        "not a field: the body's other fields (host, code, …)", wire="fields"))

    def to_body(self) -> dict[str, Any]:
        return {"message": self.message, **self.detail}

    @classmethod
    def from_body(cls, body: Any) -> AgentWarning:
        plain = _Message.from_body(body)
        return cls(plain.message, {k: v for k, v in body.items() if k != "message"})


@dataclass(frozen=True, slots=True)
class _Message(Body):
    message: str = field(metadata=meta(max_len=1024))


@dataclass(frozen=True, slots=True)
class AgentDone(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("agent.done",)
    SUMMARY: ClassVar[str] = "the agent's final report"
    summary: str
    spent: int
    refunded: int
    funded: int
    outstanding: list[Any] = field(metadata=meta("[{`host`, `what`, `amount`}]: money away"))
    plans: int
    tasks: dict[str, Any] | None = field(
        default=None, metadata=meta("a bag of tasks' progress: done, failed, running, queued"))


@dataclass(frozen=True, slots=True)
class BrokerEnroll(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("broker.enroll",)
    SUMMARY: ClassVar[str] = "start a job paid by a receipt to the broker (payer = sender)"
    receipt: bytes = field(metadata=meta("a `bank.receipt` paying the broker", max_len=4096))
    deadline: str = field(metadata=meta("a duration, e.g. `2h`", max_len=32))
    resource: str | None = field(default=None, metadata=meta("`cpu` (default) …", max_len=16))
    max_hosts: int | None = field(default=None, metadata=meta("≥ 1"))


@dataclass(frozen=True, slots=True)
class BrokerEnrollReply(Body):
    job: str = field(metadata=meta("the job's public key"))
    budget: int
    fee: int
    deadline_s: float


@dataclass(frozen=True, slots=True)
class BrokerStatus(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("broker.status",)
    SUMMARY: ClassVar[str] = "the sender's jobs at this broker"


@dataclass(frozen=True, slots=True)
class BrokerStatusReply(Body):
    jobs: list[Any] = field(metadata=meta(
        "[{`transfer_id`, `job`, `budget`, `fee`, `status`, `refunded`}]"))


REPLIES: dict[str, type[Body]] = {
    "broker.enroll": BrokerEnrollReply, "broker.status": BrokerStatusReply,
}
