"""Red-team attacks on money coming home (pure): a hostile user trying to make an agent or
a host believe a refund was paid when it was not."""

from __future__ import annotations

from typing import Any

import pytest
from test_market import BANK, CAP, HOST, NS, T0, USERS, market, receipt

from tycoon.agent.bankview import BankHistory
from tycoon.auctioneer.events import RefundDue
from tycoon.auctioneer.market import Market
from tycoon.errors import Rejected


class FakeBank:
    """A bank's history of the agent's account (what the signed reply would say)."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries

    async def history(self, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        return self.entries[offset:offset + limit]


async def test_a_users_payment_under_the_hosts_refund_id_is_not_a_refund() -> None:
    """Mallory pays the victim 1 µcredit with the transfer id of the host's pending refund
    (anyone can compute it): the agent's view of the host's refunds must not include it,
    and the host's own payment under the same id (ids are per payer) is still seen."""
    host, mallory = HOST.public_key, USERS[5]
    rid = "refund-" + "ab" * 20
    bank = FakeBank([{"kind": "transfer", "amount": 1, "counterparty": mallory, "id": rid}])
    history = BankHistory(bank)
    assert await history.refunds_from(host) == []
    bank.entries.append({"kind": "transfer", "amount": 500, "counterparty": host, "id": rid})
    assert await history.refunds_from(host) == [(rid, 500, None)]
    assert await history.payment(rid) is None  # money in is never taken for our payment


def test_a_host_takes_no_receipt_for_its_refund_but_its_own_payment() -> None:
    """A receipt under the refund's id paid by someone else (or to someone else, or of
    another amount) does not mark the refund paid: it stays pending and is retried."""
    m = market()
    victim, mallory = USERS[0], USERS[1]
    m.fund(receipt(victim, 500, "v"), T0)
    refund = next(e.refund for e in m.refund(victim, T0) if isinstance(e, RefundDue))
    rid = refund.refund_id
    for fake in (receipt(mallory, 500, rid, payee=victim),
                 receipt(HOST.public_key, 499, rid, payee=victim),
                 receipt(HOST.public_key, 500, rid, payee=mallory)):
        with pytest.raises(Rejected) as info:
            m.refund_paid(rid, fake)
        assert info.value.code == "bad_receipt"
        assert rid in m.pending
    assert m.refund_paid(rid, receipt(HOST.public_key, 500, rid, payee=victim)) is not None
    assert rid not in m.pending and m.conserved()


def test_a_receipt_cannot_be_redeemed_twice_across_account_removal() -> None:
    """Fund, refund, get removed when idle, then present the same receipt again: the host
    remembers redemptions by (payer, id) beyond the account's life."""
    m = Market(host_key=HOST.public_key, bank_key=BANK.public_key, capacity=CAP,
               deposit=100, idle_s=1.0)
    user = USERS[2]
    raw = receipt(user, 500, "once")
    m.fund(raw, T0)
    refund = next(e.refund for e in m.refund(user, T0) if isinstance(e, RefundDue))
    m.refund_paid(refund.refund_id, receipt(HOST.public_key, 500, refund.refund_id,
                                            payee=user))
    for s in range(4):
        m.tick(T0 + s * NS, {})
    assert user not in m.accounts
    with pytest.raises(Rejected) as info:
        m.fund(raw, T0 + 5 * NS)
    assert info.value.code == "already_redeemed" and m.conserved()
