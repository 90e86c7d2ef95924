"""What the market core returns to its adapter, and the records it keeps (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tycoon.auctioneer.bidparse import BidSpec


@dataclass(frozen=True)
class AccountOpened:
    """A host account now exists: the adapter creates its sandbox."""

    account: str


@dataclass(frozen=True)
class AccountClosed:
    """An empty, idle host account was removed: the adapter destroys its sandbox."""

    account: str


@dataclass(frozen=True)
class Funded:
    """A bank receipt was redeemed into a host account."""

    account: str
    transfer_id: str
    amount: int
    balance: int


@dataclass(frozen=True)
class BidPlaced:
    """A bid was admitted (it replaces the account's previous bid)."""

    account: str
    expires_ns: int


@dataclass(frozen=True)
class BidEnded:
    """A bid stopped: ``reason`` is ``expired``, ``empty`` (no balance left) or ``refund``."""

    account: str
    reason: str


@dataclass(frozen=True)
class Charged:
    """One tick's charges: ``amount`` micro-credits moved from ``accounts`` balances to earnings."""

    amount: int
    accounts: int


@dataclass(frozen=True)
class RefundDue:
    """A refund waits to be paid by a bank transfer from the host (id = ``refund_id``)."""

    refund: Refund


@dataclass(frozen=True)
class Returned:
    """A receipt paid to this host was refused (``code``) and is paid back to its payer:
    ``refund`` (id from :func:`~tycoon.auctioneer.market.return_id`; ``receipt`` once paid)."""

    refund: Refund
    code: str


@dataclass(frozen=True)
class SharesChanged:
    """The allocation changed: apply it to the driver and publish it."""

    accounts: int


@dataclass(frozen=True)
class PricesChanged:
    """The prices changed (or the bid set did): publish a price update."""


Event = (
    AccountOpened
    | AccountClosed
    | Funded
    | BidPlaced
    | BidEnded
    | Charged
    | RefundDue
    | Returned
    | SharesChanged
    | PricesChanged
)


@dataclass(frozen=True)
class Refund:
    """The unspent balance of an account going back to its owner's bank account.

    ``refund_id`` is also the bank transfer id; it is derived from the host key, the
    account and the account's refund counter, so retrying the payment cannot pay twice.
    ``receipt`` holds the bank's receipt once paid (empty while pending).
    """

    refund_id: str
    account: str
    amount: int
    created_ns: int
    receipt: bytes = b""

    @property
    def paid(self) -> bool:
        return bool(self.receipt)


@dataclass(frozen=True)
class Bid:
    """An admitted bid, resolved against the host's capacity.

    Per resource (in ``RESOURCES`` order): ``weights`` is the weight's fraction of the
    bid's total weight, ``lo``/``hi`` the min/max as fractions of capacity. ``unique``
    lists ``(kind, key, weight fraction, target)`` for ports and addresses.
    """

    spec: BidSpec
    placed_ns: int
    expires_ns: int
    weights: tuple[float, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    unique: tuple[tuple[str, str, float, int], ...] = ()

    @property
    def text(self) -> str:
        return self.spec.text()


@dataclass
class Account:
    """A host account: the owner's key is its id; money in integer micro-credits.

    ``refunds`` is the refund counter (it names refund ids; new accounts start it at their
    creation time); ``idle_since_ns`` (not stored) is when it was last seen empty and idle.
    """

    account: str
    balance: int = 0
    funded: int = 0
    spent: int = 0
    refunded: int = 0
    refunds: int = 0
    created_ns: int = 0
    bid: Bid | None = None
    idle_since_ns: int = 0


@dataclass
class Changes:
    """What changed since the last :meth:`Market.take_changes`, for the store to persist."""

    accounts: set[str] = field(default_factory=set)
    redeemed: list[tuple[str, str, int, int]] = field(default_factory=list)
    refunds: dict[str, Refund] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.accounts or self.redeemed or self.refunds or self.closed)
