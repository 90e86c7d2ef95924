"""The auctioneer's NATS adapter: one host's market on ``tycoon.host.<host>.<op>``.

Thin: it verifies requests (the bus does), calls the market core with the wall clock,
commits what changed to the store BEFORE replying, then acts on the core's events —
creates sandboxes, applies shares to the driver, publishes ``tycoon.price.<host>``
and ``tycoon.alloc.<host>``, pays refunds through the bank. A tick loop charges for
measured usage; a heartbeat republishes the price when nothing else has for a whole
``heartbeat_s`` (so a busy host sends no extra updates). The market core and the store
are synchronous, so each request's mutate-and-commit runs without interleaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from tycoon.auctioneer import views
from tycoon.auctioneer.bidparse import bid_from_body
from tycoon.auctioneer.events import (
    AccountClosed,
    AccountOpened,
    BidEnded,
    Event,
    Funded,
    PricesChanged,
    Refund,
    RefundDue,
    Returned,
    SharesChanged,
)
from tycoon.auctioneer.jobhost import JobConfig, JobHost
from tycoon.auctioneer.market import Market
from tycoon.auctioneer.store import MarketStore
from tycoon.bank.client import BankClient
from tycoon.bus import ratelimit, subjects
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import is_public_key
from tycoon.bus.service import Endpoint, Service
from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.messages.market import (
    HostBidReply,
    HostFund,
    HostFundReply,
    HostRefundReply,
    HostStatus,
    HostStatusReply,
)
from tycoon.vmm.driver import Driver
from tycoon.waiting import wait_set

OPS = ("account", "fund", "bid", "refund", "status")
REFUND_RETRY_S = (0.25, 2.0)
"""Pending refunds are retried from the first to the second wait, doubling: the retry is
also the probe that sees the bank again, so the cap bounds how long a refund waits once
the bank is back."""


class AuctioneerService:
    """Serves one host's market; an async context manager."""

    def __init__(
        self,
        bus: Bus,
        market: Market,
        store: MarketStore,
        driver: Driver,
        bank: BankClient,
        *,
        tick_s: float = 1.0,
        heartbeat_s: float = 5.0,
        alloc_every_s: float = 0.25,
        clock: Callable[[], int] = time.time_ns,
        jobs: JobConfig | None = None,
    ) -> None:
        """``jobs``: run users' processes (``host.exec``, docs/jobs.md); None: no jobs here."""
        if bus.identity.public_key != market.host_key:
            raise ValueError("the bus must be signed by the host's own key")
        self.bus, self.market, self.store, self.driver, self.bank = bus, market, store, driver, bank
        self.tick_s, self.heartbeat_s, self.clock = tick_s, heartbeat_s, clock
        self.alloc_every_s = alloc_every_s
        self.host = market.host_id
        self.log = get_logger("auctioneer", host=self.host)
        handlers = {
            "account": self._account,
            "fund": self._fund,
            "bid": self._bid,
            "refund": self._refund,
            "status": self._status,
        }
        endpoints = [
            Endpoint(subjects.host_op(self.host, op), f"host.{op}", handlers[op]) for op in OPS
        ]
        self.jobs = JobHost(bus, market, driver, jobs, clock=clock) if jobs else None
        if self.jobs is not None:
            endpoints += self.jobs.endpoints()
        self.service = Service(
            bus, "tycoon-auctioneer", endpoints, queue=f"auctioneer-{self.host}",
            description=f"Tycoon auctioneer of host {market.name}",
            metadata={"host": self.host, "driver": market.driver_name},
            rate_limit=ratelimit.AUCTIONEER,
        )  # fmt: skip
        self._tasks: list[asyncio.Task[None]] = []
        self._apply_pending = False
        self._refund_lock = asyncio.Lock()
        self._refunds_due = asyncio.Event()
        """Set when a refund became pending: the payer loop (see _pay_all) wakes at once."""
        self._price_sent = 0.0  # time.monotonic() of the last price update
        self._read_at = 0.0  # time.monotonic() of the last usage reading
        self._alloc_due: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AuctioneerService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Load the store, re-create sandboxes, start serving, ticking and heartbeats."""
        events = self.store.load(self.market, self.clock())
        self._commit()
        for account in self.market.accounts:
            self.driver.create(account)
        if self.jobs is not None:
            await self.jobs.adopt()  # jobs a previous run left running (docs/jobs.md)
        self._apply_pending = True
        await self._act(events)
        await self.service.start()
        await self._publish_price()
        self._tasks = [
            asyncio.create_task(self._loop(self.tick_s, self.tick), name="auctioneer-tick"),
            asyncio.create_task(self._heartbeat(), name="hb"),
        ]
        self._tasks.append(asyncio.create_task(self._open_bank_account(), name="bank-open"))
        self._tasks.append(asyncio.create_task(self._pay_all(), name="auctioneer-refunds"))
        self.log.info("auctioneer started", accounts=len(self.market.accounts))

    async def stop(self) -> None:
        """Stop taking requests (in-flight ones finish), then stop the loops."""
        await self.service.stop()
        if self.jobs is not None:
            await self.jobs.stop()
        tasks = [*self._tasks, *([self._alloc_due] if self._alloc_due else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    # ------------------------------------------------------------------ loops

    async def _loop(self, period: float, step: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await step()
            except Exception:
                self.log.exception("periodic step failed", step=getattr(step, "__name__", "?"))

    async def tick(self) -> None:
        """Read the driver's usage, charge for it, commit, act on what changed."""
        self._read_at = time.monotonic()
        usage = self.driver.usage()
        events = self.market.tick(self.clock(), usage)
        # Charges alone need no fsync of their own: the next synced commit covers them.
        self._commit(sync=False)
        await self._act(events)

    def _commit(self, *, sync: bool = True) -> None:
        """Write what changed; on failure keep it for the next commit and fail the request."""
        changes = self.market.take_changes()
        try:
            self.store.commit(self.market, changes, sync=sync)
        except Exception:
            self.market.untake_changes(changes)
            self.log.exception("store commit failed; changes kept for the next commit")
            raise

    async def _act(self, events: list[Event]) -> None:
        """Create sandboxes, apply shares, publish — after the changes are on disk."""
        publish_alloc = publish_price = False
        for event in events:
            if isinstance(event, AccountOpened):
                self.driver.create(event.account)
            elif isinstance(event, AccountClosed):  # empty and idle: swept by the tick
                if self.jobs is not None:
                    await self.jobs.account_gone(event.account)
                self.driver.destroy(event.account)
            elif isinstance(event, SharesChanged):
                self._apply_pending = publish_alloc = True
            elif isinstance(event, PricesChanged):
                publish_price = True
            elif isinstance(event, BidEnded):
                self.log.info("bid ended", account=event.account, reason=event.reason)
        if self._apply_pending:
            try:
                self.driver.apply(self.market.shares_map())
                self._apply_pending = False
                if self.jobs is not None:  # a zero CPU share freezes the jobs, funds thaw them
                    self.jobs.enforce(self.market.shares_map())
            except Exception:
                self.log.exception("driver apply failed; retried on the next tick")
        if publish_price:
            await self._publish_price()
        if publish_alloc and self._alloc_due is None:
            self._alloc_due = asyncio.create_task(self._publish_alloc(), name="alloc")

    async def _publish_alloc(self) -> None:
        """Publish the allocation ``alloc_every_s`` after the first change since the last
        one: every change in between goes out in that one message. The bidder has its own
        allocation in the reply; the stream is for everyone else (and a burst of bids would
        otherwise sign and send one allocation per bid before any reply goes out)."""
        try:
            await asyncio.sleep(self.alloc_every_s)
        finally:
            self._alloc_due = None
        try:
            seq = self.market.next_seq(self.clock())
            await self.bus.publish(subjects.alloc(self.host), "alloc",
                                   views.alloc_body(self.market, seq))
        except Exception:
            self.log.exception("allocation update failed")

    async def _heartbeat(self) -> None:
        """Publish the price whenever ``heartbeat_s`` passed without a price update."""
        while True:
            wait = self._price_sent + self.heartbeat_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self._publish_price()
            except Exception:
                self.log.exception("heartbeat failed")
                await asyncio.sleep(self.heartbeat_s)

    async def _publish_price(self) -> None:
        seq = self.market.next_seq(self.clock())
        body = views.price_body(self.market, seq, self.heartbeat_s)
        self._price_sent = time.monotonic()
        await self.bus.publish(subjects.price(self.host), "price", body)

    # ------------------------------------------------------------------ handlers

    async def _account(self, msg: Message) -> dict[str, Any]:
        # An account opens on its first funding (at least the deposit): asking creates
        # nothing, so self-made keys cannot fill the host with accounts and sandboxes.
        return views.account_detail(self.market, msg.sender)

    async def _fund(self, msg: Message) -> dict[str, Any]:
        raw = HostFund.from_body(msg.body).receipt  # ≤ 4096 bytes (HostFund)
        events = self.market.fund(raw, self.clock())
        self._commit()  # redemption and credit in one transaction, before the reply
        returned = next((e for e in events if isinstance(e, Returned)), None)
        if returned is not None:  # refused, the receipt consumed: its money goes back
            await self._return(returned)
        funded = next(e for e in events if isinstance(e, Funded))
        await self._act(events)
        return HostFundReply(funded.account, funded.transfer_id, funded.amount,
                             funded.balance).to_body()

    async def _return(self, returned: Returned) -> None:
        """Pay a refused receipt back to its payer (the pending return is on disk, its
        transfer id derived from the receipt: a retry or the payer loop pays it once) and
        refuse with the return receipt; while the bank does not pay, ``unavailable``."""
        refund = returned.refund
        if not refund.receipt:
            try:
                await self._pay(refund)
            except Rejected:
                self._refunds_due.set()  # the payer loop pays it; a retried fund answers
                raise
            refund = self.market.returns[refund.refund_id]  # paid (here or meanwhile)
        raise Rejected(returned.code, f"not credited (a host account opens with a first"
                       f" funding of at least {self.market.deposit} µcredits, and holds at"
                       f" most the largest amount): {refund.amount} µcredits paid back to the"
                       f" payer, transfer {refund.refund_id}", returned=refund.receipt)

    async def _bid(self, msg: Message) -> dict[str, Any]:
        now = self.clock()
        spec = bid_from_body(msg.body, now_ns=now)
        events = self.market.place_bid(msg.sender, spec, now)
        self._commit(sync=False)  # a bid moves no money: see the store's docstring
        await self._act(events)  # shares are applied to the driver before the reply
        account = self.market.accounts[msg.sender]
        assert account.bid is not None
        return HostBidReply(msg.sender, account.bid.text, account.bid.expires_ns,
                            views.account_view(self.market, msg.sender),
                            views.prices(self.market)).to_body()

    async def _refund(self, msg: Message) -> dict[str, Any]:
        account = self.market.accounts.get(msg.sender)
        # a usage reading first (what the refund pays since it is then measured), only for
        # an account with something to refund and at most every tick_s / 10: every reading
        # is a whole tick's work, which refunds must not let anyone order at will (the
        # time since the last reading is then charged as used: a tenth of a tick at most)
        if account is not None and (account.balance > 0 or account.bid is not None) \
                and time.monotonic() - self._read_at >= self.tick_s / 10:
            try:
                await self.tick()
            except Exception:
                self.log.exception("usage reading before a refund failed")
        events = self.market.refund(msg.sender, self.clock())
        self._commit()  # the pending refund is on disk before any bank transfer
        await self._act(events)
        if self.jobs is not None:
            self.jobs.refunded(msg.sender)  # nothing left: its jobs end (TERM, grace, KILL)
        try:
            paid = [await self._pay(e.refund) for e in events if isinstance(e, RefundDue)]
        finally:
            if self.market.pending:
                self._refunds_due.set()  # the payer loop retries until the bank pays it
        return HostRefundReply(
            msg.sender,
            [{"refund_id": r.refund_id, "amount": r.amount, "receipt": r.receipt} for r in paid],
            self.market.accounts[msg.sender].balance,
        ).to_body()

    async def _pay(self, refund: Refund, *, quiet: bool = False) -> Refund:
        """Pay one refund by a bank transfer whose id is the refund id (a retry pays once).
        ``quiet``: a failure is not logged (the payer loop logs its retries itself)."""
        async with self._refund_lock:
            if refund.refund_id not in self.market.pending:
                return refund  # paid meanwhile
            try:
                receipt = await self.bank.transfer(
                    refund.account, refund.amount, transfer_id=refund.refund_id,
                    memo=f"refund from host {self.host}",
                )  # fmt: skip
            except Rejected as error:
                if not quiet:
                    self.log.warning("refund not paid yet", refund=refund.refund_id,
                                     code=error.code)
                raise Rejected(
                    "unavailable", f"refund {refund.refund_id} is pending ({error.code}); retry"
                ) from error
            paid = self.market.refund_paid(refund.refund_id, receipt.raw) or refund
            self._commit()
            self.log.info("refund paid", refund=refund.refund_id, amount=refund.amount)
            return paid

    async def _open_bank_account(self) -> None:
        """Make sure the host's own bank account exists (users pay into it); retry until so."""
        delay = 0.5
        while True:
            try:
                await self.bank.open(f"host {self.market.name}", exist_ok=True)
                return
            except Rejected as error:
                self.log.warning("cannot open the host's bank account yet", code=error.code)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _pay_all(self) -> None:
        """Pay every pending refund until paid, for as long as the service runs.

        Wakes when a refund becomes pending; while the bank does not pay, retries with
        backoff (``REFUND_RETRY_S``), so a refund is paid at most one cap's wait after the
        bank is back. A refund is never dropped: it leaves ``pending`` only when paid."""
        first, cap = REFUND_RETRY_S
        delay = first
        retries = 0
        while True:
            if not self.market.pending:
                if retries:
                    self.log.info("pending refunds paid", retries=retries)
                delay, retries = first, 0
                await self._refunds_due.wait()
                self._refunds_due.clear()
                continue
            for refund in list(self.market.pending.values()):
                try:
                    await self._pay(refund, quiet=True)
                except Rejected as error:
                    cause = error.__cause__
                    code = cause.code if isinstance(cause, Rejected) else error.code
                    if retries % 30 == 0:  # about once a minute while it lasts
                        self.log.warning("refund not paid yet; retrying", code=code,
                                         refund=refund.refund_id, pending=len(self.market.pending))
                    if code in ("unavailable", "timeout"):
                        break  # the bank is not answering: wait, then try them all again
                    # refused for this refund alone: the others are not held up behind it
                except Exception:
                    self.log.exception("refund payment failed", refund=refund.refund_id)
                    break
            retries += 1
            if self.market.pending:
                await wait_set(self._refunds_due, delay)
                self._refunds_due.clear()
                delay = min(delay * 2, cap)

    async def _status(self, msg: Message) -> dict[str, Any]:
        account = HostStatus.from_body(msg.body).account
        if account is not None and not is_public_key(account):  # e.g. the key plus a space
            raise Rejected("malformed", "an account id is a user public key")
        if account is not None and account != msg.sender:
            raise Rejected("forbidden", "only the owner may see a host account's details")
        if account is None and msg.sender in self.market.accounts:
            account = msg.sender
        summary = HostStatusReply.from_body(views.status(self.market, account))
        return dataclasses.replace(summary, seq=self.market.seq, heartbeat_s=self.heartbeat_s,
                                   tick_s=self.tick_s).to_body()
