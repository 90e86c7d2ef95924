"""``AuctioneerClient``: talk to one host's auctioneer, signed by the bus's identity.

Every reply must come from the host itself: a host id is derived from the host's
public key, so the client checks ``subject_id(reply.sender) == host``.
"""

from __future__ import annotations

from typing import Any

from tycoon.auctioneer.bidparse import BidSpec
from tycoon.bank.receipt import Receipt
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.keys import subject_id
from tycoon.errors import Rejected


class AuctioneerClient:
    """The account, fund, bid, refund and status requests of one host."""

    def __init__(self, bus: Bus, host: str, *, timeout: float = 5.0) -> None:
        self.bus = bus
        self.host = subjects.token(host)
        self.timeout = timeout
        self._host_key: str | None = None

    async def _call(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self.bus.request(
            subjects.host_op(self.host, op), f"host.{op}", body, timeout=self.timeout
        )
        if subject_id(reply.sender) != self.host:
            raise Rejected("wrong_reply", "the reply is not signed by this host's key")
        if not isinstance(reply.body, dict):
            raise Rejected("malformed", "reply body is not a map")
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
        return await self._call("account", {})

    async def fund(self, receipt: bytes | Receipt) -> dict[str, Any]:
        """Redeem a bank receipt payable to this host; returns the credited balance."""
        raw = receipt.raw if isinstance(receipt, Receipt) else bytes(receipt)
        return await self._call("fund", {"receipt": raw})

    async def bid(
        self, spec: str | dict[str, Any] | BidSpec, duration: str | int | None = None
    ) -> dict[str, Any]:
        """Place a bid: ``"1h cpu:1,0.1,1 memory:1,512MB"``, resources text plus ``duration``,
        a structured body (see docs/auctioneer.md) or a :class:`BidSpec`."""
        body: dict[str, Any]
        if isinstance(spec, BidSpec):
            body = {"duration": spec.duration_ns // 1_000_000_000, "resources": spec.text()}
            if spec.duration_ns % 1_000_000_000:
                raise Rejected("bad_bid", "a BidSpec duration is sent in whole seconds")
        elif isinstance(spec, dict):
            body = dict(spec)
            if duration is not None:
                body["duration"] = duration
        elif duration is None:
            head, _, rest = spec.strip().partition(" ")
            body = {"duration": head, "resources": rest}
        else:
            body = {"duration": duration, "resources": spec}
        return await self._call("bid", body)

    async def refund(self) -> dict[str, Any]:
        """Return the unspent balance to this key's bank account (retry-safe)."""
        return await self._call("refund", {})

    async def status(self, account: str | None = None) -> dict[str, Any]:
        """The host's market summary, with this key's account details if it has one."""
        return await self._call("status", {} if account is None else {"account": account})
