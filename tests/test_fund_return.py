"""A receipt paid to a host that the host refuses to credit (below the deposit, over the
largest amount) is consumed and paid back to its payer: money paid to a host always comes
home, once (docs/auctioneer.md, "Refused fundings are paid back"). Pure: the market core and
its store; the service over the bus is in tests/test_auctioneer_service.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_market import BANK, CAP, HOST, T0, USERS, receipt

from tycoon.auctioneer.events import Funded, Returned
from tycoon.auctioneer.market import Market, return_id
from tycoon.auctioneer.store import MarketStore
from tycoon.bank.receipt import make_receipt, verify_receipt
from tycoon.bus.keys import Identity
from tycoon.errors import Rejected
from tycoon.money import MAX_AMOUNT


def market(deposit: int = 1000) -> Market:
    return Market(host_key=HOST.public_key, bank_key=BANK.public_key, capacity=CAP,
                  deposit=deposit)  # fmt: skip


def bank_pays(m: Market, returned: Returned) -> bytes:
    """The bank's receipt of the return transfer (the host pays it to the payer)."""
    r = returned.refund
    raw = make_receipt(BANK, transfer_id=r.refund_id, payer=HOST.public_key, payee=r.account,
                       amount=r.amount, memo="", seq=2, settled_ns=T0)  # fmt: skip
    m.refund_paid(r.refund_id, raw)
    return raw


def state(m: Market) -> tuple[object, ...]:
    return (dict(m.accounts), set(m.redeemed), dict(m.pending), dict(m.returns),
            m.funded, m.refunded, m.earnings)  # fmt: skip


def test_below_the_deposit_is_consumed_and_owed_back_once() -> None:
    m = market()
    small = receipt(USERS[0], 999, "small")
    (event,) = m.fund(small, T0)
    assert isinstance(event, Returned) and event.code == "bad_amount"
    key = verify_receipt(small, BANK.public_key).key
    assert event.refund.refund_id == return_id(HOST.public_key, key)
    assert (event.refund.account, event.refund.amount) == (USERS[0], 999)
    assert not m.accounts and key in m.redeemed and m.conserved()
    assert list(m.pending) == [event.refund.refund_id]
    # retried before the bank paid: the same pending return, nothing new
    before = state(m)
    assert m.fund(small, T0) == [event] and state(m) == before
    raw = bank_pays(m, event)
    assert not m.pending and m.returns[event.refund.refund_id].receipt == raw
    # replayed after the return: the same answer with the same receipt, no money moves
    before = state(m)
    (again,) = m.fund(small, T0)
    assert isinstance(again, Returned) and again.refund.receipt == raw and state(m) == before
    # the deposit opens the account; the small receipt can never be credited now
    m.fund(receipt(USERS[0], 1000, "deposit"), T0)
    before = state(m)
    (third,) = m.fund(small, T0)
    assert isinstance(third, Returned) and state(m) == before
    assert m.accounts[USERS[0]].balance == 1000 and m.conserved()


def test_over_the_largest_amount_is_paid_back() -> None:
    m = market(deposit=1)
    m.fund(receipt(USERS[1], MAX_AMOUNT, "full"), T0)
    (event,) = m.fund(receipt(USERS[1], 5, "more"), T0)
    assert isinstance(event, Returned) and event.refund.amount == 5
    assert m.accounts[USERS[1]].balance == MAX_AMOUNT and m.conserved()


def test_a_receipt_paid_to_another_host_moves_nothing() -> None:
    m = market()
    other = Identity.generate().public_key
    before = state(m)
    with pytest.raises(Rejected) as info:
        m.fund(receipt(USERS[0], 5, "x", payee=other), T0)
    assert info.value.code == "wrong_host" and state(m) == before and not m.take_changes()


def test_a_credited_receipt_is_never_paid_back() -> None:
    """A receipt already credited stays already_redeemed: no return for it, ever."""
    m = market()
    raw = receipt(USERS[2], 5000, "ok")
    assert any(isinstance(e, Funded) for e in m.fund(raw, T0))
    with pytest.raises(Rejected, match="already_redeemed"):
        m.fund(raw, T0)
    assert not m.pending and not m.returns


def test_a_crash_before_or_after_the_return_transfer_pays_once(tmp_path: Path) -> None:
    """The return is on disk (receipt consumed, refund pending) before any transfer; after a
    restart the same transfer id is retried (the bank pays an id once) and once paid, a
    retried fund gets the stored return receipt."""
    m, store = market(), MarketStore(tmp_path / "h.db")
    store.load(m, T0)
    small = receipt(USERS[3], 10, "s")
    (event,) = m.fund(small, T0)
    store.commit(m, m.take_changes())
    store.close()  # crash: the transfer may or may not have happened at the bank
    m2, store2 = market(), MarketStore(tmp_path / "h.db")
    store2.load(m2, T0)
    assert m2.pending == {event.refund.refund_id: event.refund}
    assert m2.fund(small, T0) == [event]  # the same transfer id: the bank pays it once
    raw = bank_pays(m2, event)
    store2.commit(m2, m2.take_changes())
    audit = store2.audit()
    assert audit["funded"] == audit["redeemed"] == 10 == audit["refunded"] == audit["refunds"]
    store2.close()
    m3, store3 = market(), MarketStore(tmp_path / "h.db")
    store3.load(m3, T0)
    (again,) = m3.fund(small, T0)
    assert not m3.pending and again.refund.receipt == raw and m3.conserved()
    store3.close()
