"""``AuctioneerClient``: talk to one host's auctioneer, signed by the bus's identity.

Every reply must come from the host itself: a host id is derived from the host's
public key, so the client checks ``subject_id(reply.sender) == host``. Paying a host and
funding an account there (:func:`pay_and_fund`) keeps the receipt until the host took
it; :func:`settle_receipts` presents every receipt a host has not redeemed yet.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tycoon.auctioneer.bidparse import BidSpec
from tycoon.bank.client import BankClient, new_id
from tycoon.bank.receipt import Receipt, verify_receipt
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.keys import subject_id
from tycoon.errors import Rejected
from tycoon.messages import REPLIES
from tycoon.messages.market import HostAccount, HostBid, HostFund, HostRefund, HostStatus


class AuctioneerClient:
    """The account, fund, bid, refund and status requests of one host."""

    def __init__(self, bus: Bus, host: str, *, timeout: float = 5.0) -> None:
        self.bus = bus
        self.host = subjects.token(host)
        self.timeout = timeout
        self._host_key: str | None = None

    async def _call(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send ``body`` (a ``host.<op>`` body's ``to_body()``); the reply, checked against
        its message class (``malformed`` naming the bad field), as the host sent it."""
        reply = await self.bus.request(
            subjects.host_op(self.host, op), f"host.{op}", body, timeout=self.timeout
        )
        if subject_id(reply.sender) != self.host:
            raise Rejected("wrong_reply", "the reply is not signed by this host's key")
        REPLIES[f"host.{op}"].from_body(reply.body)
        self._host_key = reply.sender
        return dict(reply.body)

    async def host_key(self) -> str:
        """The host's public key (its bank account), learnt from a signed reply of the host."""
        if self._host_key is None:
            await self.status()
        assert self._host_key is not None
        return self._host_key

    async def account(self) -> dict[str, Any]:
        """Open (idempotently) this key's host account; returns its details."""
        return await self._call("account", HostAccount().to_body())

    async def fund(self, receipt: bytes | Receipt) -> dict[str, Any]:
        """Redeem a bank receipt payable to this host; returns the credited balance."""
        raw = receipt.raw if isinstance(receipt, Receipt) else bytes(receipt)
        return await self._call("fund", HostFund(raw).to_body())

    async def bid(
        self, spec: str | dict[str, Any] | BidSpec, duration: str | int | None = None
    ) -> dict[str, Any]:
        """Place a bid: ``"1h cpu:1,0.1,1 memory:1,512MB"``, resources text plus ``duration``,
        a structured body (see docs/auctioneer.md) or a :class:`BidSpec`."""
        bid: HostBid
        if isinstance(spec, BidSpec):
            bid = HostBid(spec.duration_ns // 1_000_000_000, spec.text())
            if spec.duration_ns % 1_000_000_000:
                raise Rejected("bad_bid", "a BidSpec duration is sent in whole seconds")
        elif isinstance(spec, dict):
            fields = spec if duration is None else {**spec, "duration": duration}
            bid = HostBid(fields.get("duration"), fields.get("resources"),
                          fields.get("ports"), fields.get("ips"))  # the host checks them
        elif duration is None:
            head, _, rest = spec.strip().partition(" ")
            bid = HostBid(head, rest)
        else:
            bid = HostBid(duration, spec)
        return await self._call("bid", bid.to_body())

    async def refund(self) -> dict[str, Any]:
        """Return the unspent balance to this key's bank account (retry-safe)."""
        return await self._call("refund", HostRefund().to_body())

    async def status(self, account: str | None = None) -> dict[str, Any]:
        """The host's market summary, with this key's account details if it has one."""
        return await self._call("status", HostStatus(account).to_body())


# -- paying a host, and redeeming what was paid -----------------------------------------

FUND_MEMO = "fund host "
"""Memo of a payment made to fund a host account (the agent's read ``fund <host>``)."""


def wallet_dir(home: Path, account: str) -> Path:
    """Where the receipts of ``account``'s payments to hosts wait until redeemed."""
    return home / "receipts" / subject_id(account)


async def pay_and_fund(client: AuctioneerClient, bank: BankClient, amount: int, *,
                       wallet: Path) -> dict[str, Any]:
    """Pay the host ``amount`` and redeem the receipt into our host account there.

    The receipt is written to ``wallet`` before it is presented and removed once the host
    took it: a host that is down at that moment keeps nothing of ours hidden (``tycoon
    host settle`` presents it again; the bank's history has it too)."""
    host_key = await client.host_key()
    tid = new_id()
    receipt = await bank.transfer(host_key, amount, transfer_id=tid,
                                  memo=f"{FUND_MEMO}{client.host}")
    wallet.mkdir(parents=True, exist_ok=True, mode=0o700)
    kept = wallet / f"{tid}.receipt"
    kept.write_bytes(receipt.raw)
    try:
        reply = await client.fund(receipt)
    except Rejected as error:
        if error.code == "already_redeemed":
            kept.unlink(missing_ok=True)
            raise
        raise Rejected(error.code, f"{error.message}; paid {amount} µc to host {client.host}"
                       f", not yet redeemed: receipt kept at {kept}; `tycoon host settle` "
                       "redeems it when the host answers") from error
    kept.unlink(missing_ok=True)
    return reply


@dataclass(frozen=True)
class Unredeemed:
    """One payment to a host and what presenting its receipt did."""

    host: str
    transfer_id: str
    amount: int
    result: str
    """``redeemed`` (now), ``done`` (the host had it already), or why it still waits."""


async def _present(client: AuctioneerClient, raw: bytes, attempts: int = 5) -> str:
    """Redeem one receipt: ``redeemed``, ``done`` (the host had it) or the refusal's code
    (a rate limit is waited out a few times: a key may hold many receipts at one host)."""
    for attempt in range(1, attempts + 1):
        try:
            await client.fund(raw)
            return "redeemed"
        except Rejected as error:
            if error.code == "already_redeemed":
                return "done"
            if error.code != "rate_limited" or attempt == attempts:
                return error.code
        await asyncio.sleep(0.2 * attempt)
    return "rate_limited"


async def settle_receipts(bus: Bus, bank: BankClient, *, wallet: Path | None = None,
                          every_payment: bool = False,
                          timeout: float = 5.0) -> list[Unredeemed]:
    """Present every receipt of our payments to hosts that no host has redeemed yet.

    The payments come from the bank's history (those whose memo says they fund a host,
    or all with ``every_payment``) and the receipts kept in ``wallet``; the host tells
    which it has (``already_redeemed`` means done)."""
    found: dict[str, bytes] = {}
    if wallet is not None and wallet.is_dir():
        for path in sorted(wallet.glob("*.receipt")):
            found[path.stem] = path.read_bytes()
    offset = 0
    while True:
        page = await bank.history(offset, 1000)
        offset += len(page)
        for entry in page:
            amount, memo, raw = entry.get("amount"), entry.get("memo", ""), entry.get("receipt")
            if entry.get("kind") != "transfer" or not isinstance(amount, int) or amount >= 0 \
                    or not isinstance(raw, bytes):
                continue
            if every_payment or str(memo).startswith("fund"):
                found.setdefault(str(entry.get("id")), raw)
        if len(page) < 1000:
            break
    results = []
    for tid, raw in found.items():
        try:
            receipt = verify_receipt(raw, bank.bank_key)
        except Rejected:
            continue
        if receipt.payer != bank.account:
            continue
        host = subject_id(receipt.payee)
        result = await _present(AuctioneerClient(bus, host, timeout=timeout), raw)
        if result in ("redeemed", "done") and wallet is not None:
            (wallet / f"{tid}.receipt").unlink(missing_ok=True)
        results.append(Unredeemed(host, tid, receipt.amount, result))
    return results
