"""Audit a bank store: replay the event log and check it against the balances.

Checks: sequence numbers run 1..n without gaps; every event was legal when it
happened (open accounts only, no overdraft, close at zero); every transfer's
stored receipt verifies with the bank key and matches its row; the replayed
balances equal the stored ones; and Σ balances = Σ minted (conservation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tycoon.bank.receipt import verify_receipt
from tycoon.bank.store import Store
from tycoon.errors import Rejected

MAX_PROBLEMS = 100


@dataclass
class AuditReport:
    """What an audit found; ``ok`` when there are no problems."""

    accounts: int = 0
    events: int = 0
    transfers: int = 0
    total_balances: int = 0
    total_minted: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "accounts": self.accounts,
            "events": self.events,
            "transfers": self.transfers,
            "total_balances": self.total_balances,
            "total_minted": self.total_minted,
            "problems": self.problems,
        }


def audit(store: Store) -> AuditReport:
    """Replay ``store``'s event log and check every invariant."""
    report = AuditReport()

    def problem(text: str) -> None:
        if len(report.problems) < MAX_PROBLEMS:
            report.problems.append(text)

    bank_key = store.get_meta("bank_key")
    if bank_key is None and store.last_seq() > 0:
        problem("the ledger has events but no bank key")
    balances: dict[str, int] = {}
    closed: dict[str, bool] = {}
    expected = 1
    for event in store.events():
        report.events += 1
        where = f"seq {event.seq} ({event.kind})"
        if event.seq != expected:
            problem(f"{where}: expected seq {expected}")
        expected = event.seq + 1
        if event.kind == "open":
            who = event.payee or ""
            if who in balances and not closed[who]:
                problem(f"{where}: {who} opened twice")
            balances[who], closed[who] = 0, False
        elif event.kind == "mint":
            who = event.payee or ""
            if who not in balances or closed[who]:
                problem(f"{where}: mint into an account that is not open")
            balances[who] = balances.get(who, 0) + event.amount
            report.total_minted += event.amount
        elif event.kind == "transfer":
            report.transfers += 1
            payer, payee = event.payer or "", event.payee or ""
            for who in (payer, payee):
                if who not in balances or closed[who]:
                    problem(f"{where}: {who} has no open account")
            if balances.get(payer, 0) < event.amount:
                problem(f"{where}: overdraft of {payer}")
            balances[payer] = balances.get(payer, 0) - event.amount
            balances[payee] = balances.get(payee, 0) + event.amount
            _check_receipt(event, bank_key, where, problem)
        elif event.kind == "close":
            who = event.payer or ""
            if balances.get(who, 0) != 0:
                problem(f"{where}: {who} closed with a non-zero balance")
            closed[who] = True
        else:
            problem(f"{where}: unknown event kind")
    stored = store.load_accounts()
    report.accounts = len(stored)
    report.total_balances = sum(row.balance for row in stored.values())
    for who in set(stored) | set(balances):
        row = stored.get(who)
        replayed = balances.get(who)
        if row is None or replayed is None:
            problem(f"{who}: in {'history' if row is None else 'accounts'} only")
        elif row.balance != replayed or row.closed != closed[who]:
            problem(f"{who}: stored balance {row.balance} (closed={row.closed}) but history "
                    f"replays to {replayed} (closed={closed[who]})")
        elif row.balance < 0:
            problem(f"{who}: negative balance")
    if report.total_balances != report.total_minted:
        problem(f"conservation: Σ balances {report.total_balances} != Σ minted "
                f"{report.total_minted}")
    return report


def _check_receipt(event: Any, bank_key: str | None, where: str, problem: Any) -> None:
    if event.receipt is None or bank_key is None:
        problem(f"{where}: no receipt stored")
        return
    try:
        receipt = verify_receipt(event.receipt, bank_key)
    except Rejected as error:
        problem(f"{where}: receipt does not verify ({error.message})")
        return
    fields = (event.op_id, event.payer, event.payee, event.amount, event.memo, event.seq,
              event.ts_ns)
    if (receipt.transfer_id, receipt.payer, receipt.payee, receipt.amount, receipt.memo,
            receipt.seq, receipt.settled_ns) != fields:
        problem(f"{where}: receipt does not match the ledger row")
