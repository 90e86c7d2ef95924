"""Bodies of the bank's requests, replies and events (docs/bank.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tycoon.messages.base import Body, meta
from tycoon.money import check_amount

ID = 128
"""Transfer and mint ids: at most 128 characters of the id charset (docs/protocol.md §6)."""


@dataclass(frozen=True, slots=True)
class BankOpen(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("bank.open",)
    SUMMARY: ClassVar[str] = "open the sender's account (or, `account`, another key's)"
    name: str | None = field(default=None, metadata=meta(max_len=64, doc="display name"))
    account: str | None = field(
        default=None, metadata=meta(max_len=64, doc="account id; default: sender"))


@dataclass(frozen=True, slots=True)
class BankOpenReply(Body):
    account: str
    name: str
    seq: int
    fee: int | None = field(default=None, metadata=meta(doc="µcredits paid by a sponsor"))
    receipt: bytes | None = field(default=None, metadata=meta(doc="the fee's receipt"))


@dataclass(frozen=True, slots=True)
class BankMint(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("bank.mint",)
    SUMMARY: ClassVar[str] = "create money (operator key only)"
    account: str = field(metadata=meta(max_len=64))
    amount: int = field(metadata=meta(doc="µcredits, 1..2^63-1 (else `bad_amount`)",
                                      check=check_amount))
    mint_id: str = field(metadata=meta(max_len=ID))
    memo: str | None = field(default=None, metadata=meta(max_len=256))


@dataclass(frozen=True, slots=True)
class BankMintReply(Body):
    mint_id: str
    account: str
    amount: int
    seq: int


@dataclass(frozen=True, slots=True)
class BankTransfer(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("bank.transfer",)
    SUMMARY: ClassVar[str] = "pay `payee` from the sender's account; idempotent by transfer id"
    payee: str = field(metadata=meta(max_len=64))
    amount: int = field(metadata=meta(doc="µcredits, 1..2^63-1 (else `bad_amount`)",
                                      check=check_amount))
    transfer_id: str = field(metadata=meta(max_len=ID, doc="unique per payer"))
    memo: str | None = field(default=None, metadata=meta(max_len=256))


@dataclass(frozen=True, slots=True)
class BankTransferReply(Body):
    receipt: bytes = field(metadata=meta(doc="a `bank.receipt` envelope (§7)"))


@dataclass(frozen=True, slots=True)
class BankBalance(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("bank.balance",)
    SUMMARY: ClassVar[str] = "an account's balance (owner, bank, operator)"
    account: str | None = field(default=None, metadata=meta(max_len=64, doc="default: sender"))


@dataclass(frozen=True, slots=True)
class BankBalanceReply(Body):
    account: str
    name: str
    balance: int


@dataclass(frozen=True, slots=True)
class BankHistory(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("bank.history",)
    SUMMARY: ClassVar[str] = "an account's entries, oldest first, paged"
    account: str | None = field(default=None, metadata=meta(max_len=64, doc="default: sender"))
    offset: int | None = field(default=None, metadata=meta(doc="≥ 0 (0)"))
    limit: int | None = field(default=None, metadata=meta(doc="1..1000 (100)"))


@dataclass(frozen=True, slots=True)
class BankHistoryReply(Body):
    account: str
    offset: int
    entries: list[Any] = field(metadata=meta(doc="[BankEntry]: `seq`, `kind`, `ts_ns`, "
                                                 "`amount`, `counterparty`, `id`, `memo`, "
                                                 "`receipt`?"))
    more: bool


@dataclass(frozen=True, slots=True)
class BankEntry(Body):
    """One entry of a ``bank.history`` reply: a ledger event as its account sees it."""

    seq: int
    kind: str = field(metadata=meta(doc="`open`, `mint`, `transfer` or `close`"))
    ts_ns: int
    amount: int = field(metadata=meta(doc="signed µcredits: + received, - paid, 0"))
    counterparty: str = field(metadata=meta(doc="the other account (a mint: the operator)"))
    id: str = field(metadata=meta(doc="the transfer or mint id"))
    memo: str
    receipt: bytes | None = field(default=None, metadata=meta(doc="a transfer's receipt"))


@dataclass(frozen=True, slots=True)
class BankClose(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("bank.close",)
    SUMMARY: ClassVar[str] = "close the sender's account (balance 0)"
    account: str | None = field(
        default=None, metadata=meta(max_len=64, doc="default: sender; another key's: the "
                                                    "operator, re-entering a lost close in "
                                                    "maintenance"))


@dataclass(frozen=True, slots=True)
class BankCloseReply(Body):
    account: str
    seq: int


@dataclass(frozen=True, slots=True)
class BankInfo(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("bank.info",)
    SUMMARY: ClassVar[str] = "the bank's key, operator and counts (anyone)"


@dataclass(frozen=True, slots=True)
class BankInfoReply(Body):
    bank: str = field(metadata=meta(doc="the bank's public key"))
    operator: str
    seq: int
    accounts: int
    open_fee: int


@dataclass(frozen=True, slots=True)
class BankSettled(Body):
    KINDS: ClassVar[tuple[str, ...]] = ("bank.settled",)
    SUMMARY: ClassVar[str] = "the receipts of one committed batch (live event)"
    receipts: list[bytes] = field(metadata=meta(doc="`bank.receipt` envelopes"))


@dataclass(frozen=True, slots=True)
class BankReceipt(Body):
    """The body of a receipt; :class:`tycoon.bank.receipt.Receipt` is its verified form."""

    KINDS: ClassVar[tuple[str, ...]] = ("bank.receipt",)
    SUMMARY: ClassVar[str] = ("durable token on `tycoon.bank.receipt`, ts_ns = settled_ns, "
                              "nonce derived (§7)")
    transfer_id: str = field(metadata=meta(max_len=ID))
    payer: str
    payee: str
    amount: int
    memo: str = field(metadata=meta(max_len=256))
    seq: int
    settled_ns: int


REPLIES: dict[str, type[Body]] = {
    "bank.open": BankOpenReply, "bank.mint": BankMintReply,
    "bank.transfer": BankTransferReply, "bank.balance": BankBalanceReply,
    "bank.history": BankHistoryReply, "bank.close": BankCloseReply,
    "bank.info": BankInfoReply,
}
