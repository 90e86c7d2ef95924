"""``BankClient``: the async client of the bank, signed by the bus's identity.

Every reply must be signed by the bank's key (given by the caller, never learnt
from the wire) and answer this very request. A transfer's receipt is verified
offline and checked against what was asked. Idempotent operations (transfer,
mint, balance, history) are retried on ``timeout``/``unavailable`` with the same
transfer or mint id, so a retry never pays twice.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from tycoon.bank.receipt import Receipt, verify_receipt
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.keys import decode_public_key
from tycoon.errors import Rejected
from tycoon.messages.bank import (
    BankBalance,
    BankBalanceReply,
    BankClose,
    BankCloseReply,
    BankHistory,
    BankHistoryReply,
    BankInfo,
    BankInfoReply,
    BankMint,
    BankMintReply,
    BankOpen,
    BankOpenReply,
    BankTransfer,
    BankTransferReply,
)

RETRYABLE = ("timeout", "unavailable")


def new_id() -> str:
    """A fresh random transfer or mint id (128 bits, hex)."""
    return os.urandom(16).hex()


class BankClient:
    """Talks to the bank whose public key is ``bank_key``, as the bus's identity."""

    def __init__(self, bus: Bus, bank_key: str, *, timeout: float = 5.0, retries: int = 2,
                 retry_wait: float = 0.2) -> None:
        self.bus = bus
        self.bank_key = bank_key
        self.timeout = timeout
        self.retries = retries
        self.retry_wait = retry_wait
        self._bank_raw = decode_public_key(bank_key)

    @property
    def account(self) -> str:
        """This client's own account id (its public key)."""
        return self.bus.identity.public_key

    async def _call_once(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self.bus.request(subjects.bank(op), f"bank.{op}", body,
                                       timeout=self.timeout, signer=self._bank_raw)
        return dict(reply.body)

    async def _call(self, op: str, body: dict[str, Any], *, retry: bool) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return await self._call_once(op, body)
            except Rejected as error:
                # "unavailable" (no responders) and "rate_limited" (refused before any work)
                # mean nothing was done, so any operation may be sent again; after a
                # timeout only idempotent ones may.
                undelivered = error.code in ("unavailable", "rate_limited")
                if attempt >= self.retries or not (
                    undelivered or (retry and error.code in RETRYABLE)
                ):
                    raise
            attempt += 1
            await asyncio.sleep(self.retry_wait * attempt)

    async def open(self, name: str | None = None, *, exist_ok: bool = False,
                   account: str | None = None) -> dict[str, Any]:
        """Open this key's account (or, as its sponsor, ``account``'s: the operator, or
        anyone paying the bank's opening fee); ``exist_ok`` accepts an already open one."""
        body = BankOpen(name, account).to_body()
        try:
            reply = await self._call("open", body, retry=False)
            BankOpenReply.from_body(reply)
            return reply
        except Rejected as error:
            if exist_ok and error.code == "account_exists":
                return {"account": account or self.account, "name": name or "", "seq": None}
            raise

    async def mint(self, account: str, amount: int, mint_id: str | None = None, *,
                   memo: str = "") -> dict[str, Any]:
        """Credit ``account`` with ``amount`` micro-credits (operator key only)."""
        body = BankMint(account, amount, mint_id or new_id(), memo).to_body()
        reply = await self._call("mint", body, retry=True)
        BankMintReply.from_body(reply)
        return reply

    async def transfer(self, payee: str, amount: int, *, transfer_id: str | None = None,
                       memo: str = "") -> Receipt:
        """Pay ``amount`` to ``payee``; returns the verified receipt (same id -> same receipt)."""
        tid = transfer_id or new_id()
        body = BankTransfer(payee, amount, tid, memo).to_body()
        reply = BankTransferReply.from_body(await self._call("transfer", body, retry=True))
        receipt = verify_receipt(reply.receipt, self.bank_key)
        if (receipt.transfer_id, receipt.payer, receipt.payee, receipt.amount,
                receipt.memo) != (tid, self.account, payee, amount, memo):
            raise Rejected("bad_receipt", "the receipt does not match the transfer asked for")
        return receipt

    async def balance(self, account: str | None = None) -> int:
        """The balance of ``account`` (default: this client's own) in micro-credits."""
        body = BankBalance(account).to_body()
        reply = await self._call("balance", body, retry=True)
        return BankBalanceReply.from_body(reply).balance

    async def history(self, offset: int = 0, limit: int = 100, *,
                      account: str | None = None) -> list[dict[str, Any]]:
        """One page of the account's history, oldest first."""
        body = BankHistory(account, offset, limit).to_body()
        reply = await self._call("history", body, retry=True)
        return BankHistoryReply.from_body(reply).entries

    async def close(self, account: str | None = None) -> dict[str, Any]:
        """Close this key's account (only with a zero balance); ``account``: the operator
        re-entering a close a restored ledger lost (maintenance only)."""
        reply = await self._call("close", BankClose(account).to_body(), retry=False)
        BankCloseReply.from_body(reply)
        return reply

    async def info(self) -> dict[str, Any]:
        """The bank's public key, operator key, ledger sequence and account count."""
        reply = await self._call("info", BankInfo().to_body(), retry=True)
        BankInfoReply.from_body(reply)
        return reply
