"""The broker: an agent that runs the bidding loop for users who pay it a fee.

A user enrolls by presenting one bank receipt that pays the broker ``budget + fee``
(``tycoon.broker.<id>.enroll``). The broker verifies it offline, redeems it once, opens
a fresh account for the job (its own key pair, kept in the broker's state directory),
moves the budget there and runs an :class:`~tycoon.agent.agent.Agent` as that account, so
every job has its own host accounts and its own journal. At the deadline what the job
did not spend goes back to the user; the fee stays with the broker. Every money move has
a transfer id derived from the enrolling receipt, so a restarted broker repeats none.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from tycoon.agent.agent import Agent, AgentConfig
from tycoon.auctioneer.bidparse import parse_duration
from tycoon.bank.client import BankClient
from tycoon.bank.receipt import Receipt, verify_receipt
from tycoon.bus import subjects
from tycoon.bus.connection import Bus
from tycoon.bus.envelope import Message
from tycoon.bus.keys import KeyStore, subject_id
from tycoon.bus.service import Endpoint, Service
from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.messages.agent import BrokerEnroll, BrokerEnrollReply, BrokerStatusReply
from tycoon.money import check_amount
from tycoon.resources import RESOURCES

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    transfer_id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    key_name TEXT NOT NULL,
    budget INTEGER NOT NULL,
    fee INTEGER NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    refunded INTEGER NOT NULL DEFAULT 0
);
"""

STOP_SETTLE_S = 5.0
"""How long a stopping broker lets its jobs settle before interrupting them."""
RESETTLE_S = 30.0
"""A job whose money is not all home at the end of its grace period settles again after
this long, until it is."""


class Broker:
    """Runs one agent per enrolled job; serves enroll and status."""

    def __init__(self, bus: Bus, bank_key: str, state: Path, *, fee_percent: int = 5,
                 min_fee: int = 0) -> None:
        self.bus = bus
        self.bank_key = bank_key
        self.bank = BankClient(bus, bank_key)
        self.state = Path(state)
        self.state.mkdir(parents=True, exist_ok=True)
        self.keys = KeyStore(self.state)
        self.fee_percent = fee_percent
        self.min_fee = min_fee
        self.id = subject_id(bus.identity.public_key)
        self.db = sqlite3.connect(self.state / "broker.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.log = get_logger("broker", broker=self.id)
        self.service = Service(bus, "tycoon-broker", [
            Endpoint(subjects.broker(self.id, "enroll"), "broker.enroll", self.enroll),
            Endpoint(subjects.broker(self.id, "status"), "broker.status", self.status),
        ], metadata={"broker": self.id})

    def fee_for(self, amount: int) -> int:
        """The broker's fee out of a payment of ``amount``: a percentage, at least min_fee."""
        return max(self.min_fee, amount * self.fee_percent // 100)

    async def start(self) -> None:
        await self.bank.open(exist_ok=True)
        await self.service.start()
        for (transfer_id,) in self.db.execute(
                "SELECT transfer_id FROM jobs WHERE status != 'done'").fetchall():
            self._launch(transfer_id)

    async def stop(self) -> None:
        """Stop taking requests; each running job settles for up to ``STOP_SETTLE_S``, and
        is then interrupted (its journal resumes the settling when the broker restarts)."""
        await self.service.stop()
        tasks = [t for t in self.tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()  # an agent's run settles its money home on the way out...
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_SETTLE_S)
            for task in late:
                task.cancel()  # ...but a stop is not held for the agent's whole grace
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
        self.db.close()

    async def enroll(self, msg: Message) -> dict[str, Any]:
        req = BrokerEnroll.from_body(msg.body)
        receipt = verify_receipt(req.receipt, self.bank_key)
        if receipt.payee != self.bus.identity.public_key:
            raise Rejected("wrong_host", "the receipt does not pay this broker")
        if receipt.payer != msg.sender:
            raise Rejected("forbidden", "only the payer of the receipt may enroll with it")
        deadline, resource, max_hosts = req.deadline, req.resource or "cpu", req.max_hosts
        if resource not in RESOURCES:
            raise Rejected("bad_bid", f"resource must be one of {', '.join(RESOURCES)}")
        if max_hosts is not None and max_hosts < 1:
            raise Rejected("bad_bid", "max_hosts must be a positive integer")
        seconds = parse_duration(deadline) / 1e9
        if seconds <= 0:
            raise Rejected("bad_bid", "the deadline must be in the future")
        fee = self.fee_for(receipt.amount)
        budget = receipt.amount - fee
        check_amount(budget)
        config = {"deadline_s": seconds, "resource": resource, "max_hosts": max_hosts}
        # A transfer id is unique per payer only: a job is known by a digest of (payer, id),
        # so nobody can take another's id first. A row keyed by the bare id of this payer was
        # enrolled before ids were scoped (column transfer_id holds the job id since).
        job_id = hashlib.sha256(receipt.key.encode()).hexdigest()[:40]
        legacy = self.db.execute("SELECT user FROM jobs WHERE transfer_id = ?",
                                 (receipt.transfer_id,)).fetchone()
        if legacy is not None and legacy[0] == receipt.payer:
            raise Rejected("already_redeemed", "this receipt already enrolled a job")
        key_name = f"job-{job_id}"
        cur = self.db.execute(
            "INSERT OR IGNORE INTO jobs (transfer_id, user, key_name, budget, fee, config, "
            "status) VALUES (?, ?, ?, ?, ?, ?, 'new')",
            (job_id, receipt.payer, key_name, budget, fee, json.dumps(config)))
        if cur.rowcount == 0:
            raise Rejected("already_redeemed", "this receipt already enrolled a job")
        job = self.keys.load_or_create(key_name)
        self._launch(job_id)
        return BrokerEnrollReply(job.public_key, budget, fee, seconds).to_body()

    async def status(self, msg: Message) -> dict[str, Any]:
        rows = self.db.execute(
            "SELECT transfer_id, key_name, budget, fee, status, refunded FROM jobs "
            "WHERE user = ?", (msg.sender,)).fetchall()
        return BrokerStatusReply([
            {"transfer_id": t, "job": self.keys.load(k).public_key, "budget": b, "fee": f,
             "status": s, "refunded": r} for t, k, b, f, s, r in rows]).to_body()

    def _launch(self, transfer_id: str) -> None:
        if transfer_id not in self.tasks or self.tasks[transfer_id].done():
            self.tasks[transfer_id] = asyncio.create_task(self._run_job(transfer_id))

    async def _run_job(self, transfer_id: str) -> None:
        user, key_name, budget, config_text = self.db.execute(
            "SELECT user, key_name, budget, config FROM jobs WHERE transfer_id = ?",
            (transfer_id,)).fetchone()
        config = json.loads(config_text)
        job = self.keys.load_or_create(key_name)
        job_bus = Bus(self.bus.nc, job)  # same connection, the job's own signature
        job_bank = BankClient(job_bus, self.bank_key)
        try:
            await job_bank.open(exist_ok=True)
            await self.bank.transfer(job.public_key, budget, transfer_id=f"{transfer_id}.budget",
                                     memo="broker job budget")
            self.db.execute("UPDATE jobs SET status = 'running' WHERE transfer_id = ?",
                            (transfer_id,))
            agent_config = AgentConfig(
                budget=budget, deadline_s=float(config["deadline_s"]),
                resource=str(config["resource"]), max_hosts=config.get("max_hosts"))
            summary = await Agent(job_bus, self.bank_key, agent_config,
                                  self.state / f"{key_name}.db").run()
            while summary.outstanding:
                # money still away (a host or the bank down past the grace period): the
                # user is paid back only once it is home; a rerun past the deadline only
                # settles
                self.log.warning("job money still away; settling again", job=key_name,
                                 outstanding=summary.outstanding)
                await asyncio.sleep(RESETTLE_S)
                summary = await Agent(job_bus, self.bank_key, agent_config,
                                      self.state / f"{key_name}.db").run()
            left = await job_bank.balance()
            if left > 0:
                await job_bank.transfer(user, left, transfer_id=f"{transfer_id}.return",
                                        memo="unspent budget")
            self.db.execute("UPDATE jobs SET status = 'done', refunded = ? WHERE "
                            "transfer_id = ?", (left, transfer_id))
        except Rejected as error:
            self.log.warning("job failed; it resumes on restart", job=key_name,
                             code=error.code, reason=error.message)


async def enroll(bus: Bus, bank_key: str, broker_key: str, amount: int, deadline: str, *,
                 resource: str = "cpu", transfer_id: str | None = None) -> dict[str, Any]:
    """Pay a broker ``amount`` (budget plus its fee) and enroll the job (the user's side)."""
    bank = BankClient(bus, bank_key)
    receipt: Receipt = await bank.transfer(broker_key, amount, transfer_id=transfer_id,
                                           memo="broker enrollment")
    reply = await bus.request(subjects.broker(subject_id(broker_key), "enroll"),
                              "broker.enroll", BrokerEnroll(receipt.raw, deadline,
                                                            resource).to_body())
    BrokerEnrollReply.from_body(reply.body)
    return dict(reply.body)


