"""Bodies of an auctioneer's requests, replies and events (docs/auctioneer.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tycoon.messages.base import Body, meta


@dataclass(frozen=True, slots=True)
class Alloc(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("alloc",)
    SUMMARY: ClassVar[str] = "who holds what on a host (the 1000 largest), signed by the host"
    host: str = field(metadata=meta(max_len=64))
    seq: int
    accounts: dict[str, Any] = field(metadata=meta(
        doc="account → {`cpu`|`memory`|`disk`|`net`: share, `rate`: {resource: µcredits/s}}"))
    ports: dict[str, Any] = field(metadata=meta(doc="\"<port>\" → account"))
    ips: dict[str, Any] = field(metadata=meta(doc="\"<address>\" → account"))
    truncated: int | None = field(default=None, metadata=meta(doc="accounts not listed"))


@dataclass(frozen=True, slots=True)
class HostAccount(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("host.account",)
    SUMMARY: ClassVar[str] = "the sender's account details at this host (creates nothing)"


@dataclass(frozen=True, slots=True)
class HostAccountReply(Body):
    account: str
    open: bool
    balance: int
    funded: int
    spent: int
    refunded: int
    balance_text: str
    bid: dict[str, Any] | None = field(
        default=None, metadata=meta("{`resources`, `placed_ns`, `expires_ns`}"))
    allocation: dict[str, Any] | None = field(default=None)
    ports: list[int] | None = field(default=None)
    pending_refunds: list[Any] | None = field(
        default=None, metadata=meta(doc="[{`refund_id`, `amount`}]"))


@dataclass(frozen=True, slots=True)
class HostFund(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("host.fund",)
    SUMMARY: ClassVar[str] = "credit a bank receipt paying this host to the sender's account"
    receipt: bytes = field(metadata=meta(max_len=4096))


@dataclass(frozen=True, slots=True)
class HostFundReply(Body):
    account: str
    transfer_id: str
    amount: int
    balance: int


@dataclass(frozen=True, slots=True)
class HostBid(Body):
    """Checked by the bid grammar (:func:`tycoon.auctioneer.bidparse.bid_from_body`)."""

    KINDS: ClassVar[tuple[str, ...]] = ("host.bid",)
    SUMMARY: ClassVar[str] = ("place or replace the sender's bid (text or structured form; "
                              "refused with `bad_bid`)")
    duration: Any = field(
        metadata=meta(wire="str or int", doc="`1h`, or seconds; 0 keeps the expiry"))
    resources: Any = field(
        metadata=meta(wire="str or map", doc="`cpu:1,0.1,1.0 …` or {resource: {…}}"))
    ports: dict[str, Any] | None = field(
        default=None, metadata=meta(doc="{\"8080\": weight or {…}}"))
    ips: dict[str, Any] | None = field(default=None, metadata=meta(doc="{\"10.0.0.5\": weight}"))


@dataclass(frozen=True, slots=True)
class HostBidReply(Body):
    account: str
    resources: str = field(metadata=meta(doc="the canonical bid text"))
    expires_ns: int
    allocation: dict[str, Any]
    prices: dict[str, Any] = field(metadata=meta(doc="resource → float, as in `price`"))


@dataclass(frozen=True, slots=True)
class HostRefund(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("host.refund",)
    SUMMARY: ClassVar[str] = "pay the sender's balance back through the bank"


@dataclass(frozen=True, slots=True)
class HostRefundReply(Body):
    account: str
    refunds: list[Any] = field(metadata=meta(doc="[{`refund_id`, `amount`, `receipt`}]"))
    balance: int


@dataclass(frozen=True, slots=True)
class HostStatus(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("host.status",)
    SUMMARY: ClassVar[str] = "the host's market summary (+ the sender's own account)"
    account: str | None = field(default=None, metadata=meta(max_len=64, doc="only one's own"))


@dataclass(frozen=True, slots=True)
class HostStatusReply(Body):
    host: str
    name: str
    driver: str
    resources: dict[str, Any] = field(metadata=meta(doc="as in `price`"))
    accounts: int
    bids: int
    funded: int
    earnings: int
    refunded: int
    balances: int
    pending_refunds: int
    floor_price: float
    deposit: int
    idle_s: float
    seq: int | None = field(default=None)
    heartbeat_s: float | None = field(default=None)
    tick_s: float | None = field(default=None)
    account: dict[str, Any] | None = field(
        default=None, metadata=meta(doc="as `host.account`'s reply"))


REPLIES: dict[str, type[Body]] = {
    "host.account": HostAccountReply, "host.fund": HostFundReply, "host.bid": HostBidReply,
    "host.refund": HostRefundReply, "host.status": HostStatusReply,
}
