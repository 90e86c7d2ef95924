"""Red-team attacks on the market core (pure, no server): strategies a user with an
ordinary key could play against the charging, reservation and account rules."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_market import BANK, CAP, HOST, NS, T0, USERS, market, receipt

from tycoon.auctioneer.bidparse import parse_bid
from tycoon.auctioneer.events import AccountClosed, RefundDue
from tycoon.auctioneer.market import Market
from tycoon.errors import Rejected
from tycoon.money import MICRO
from tycoon.resources import Usage

MS = NS // 1000


def reserved_victim() -> tuple[Market, str, str, float]:
    """A victim holding a 0.4 CPU reservation, and a rich attacker account."""
    m = market()
    victim, attacker = USERS[0], USERS[1]
    m.fund(receipt(victim, 3600 * MICRO, "v"), T0)
    m.place_bid(victim, parse_bid("1h cpu:1,0.4"), T0)
    m.fund(receipt(attacker, 10**6 * MICRO, "a"), T0)
    return m, victim, attacker, float(m.rates[0, m.book.slot[victim]])


@pytest.mark.parametrize("rebid", [False, True], ids=["one-bid", "rebid-each-tick"])
def test_an_idle_outbidder_cannot_drain_a_reservation_for_free(rebid: bool) -> None:
    """The attacker bids ~280x the victim's rate on the CPU and uses none of its share:
    an idle share costs it nothing (a share is charged at its use), yet its rate made the
    victim's minimum bind at lo/(1 − lo) × that rate — 185 credits/s, the victim's 3,600
    credits gone in 20 s, the attacker's million refunded whole. Re-bidding each tick
    (a fresh bid after each expiry) must not restore the price either."""
    m, victim, attacker, victim_rate = reserved_victim()
    m.place_bid(attacker, parse_bid("1s cpu:1" if rebid else "1h cpu:1"), T0)
    # before its first reading a bid's use is unknown: it prices the minimum as used, and
    # pays for its share as used — raising a reservation's price is not free
    m.tick(T0 + NS, {victim: Usage(cpu=0.4)})
    first, paid = m.accounts[victim].spent, m.accounts[attacker].spent
    assert paid >= 0.8 * first and m.conserved()
    for s in range(2, 12):  # the victim uses its reservation, the attacker nothing
        if rebid and m.accounts[attacker].balance > 0:
            m.place_bid(attacker, parse_bid("1s cpu:1"), T0 + (s - 1) * NS + 1)
        m.tick(T0 + s * NS, {victim: Usage(cpu=0.4)})
        assert m.conserved()
    assert m.accounts[attacker].spent - paid <= 10
    later = m.accounts[victim].spent - first
    # what the victim's own bid pays for 10 s (within a µcredit per reading), not 1,850
    assert later <= 10 * victim_rate + 10, (later, victim_rate)
    if not rebid:  # a 1 s bid of a million credits outprices the victim's whole balance
        assert m.shares_map()[victim].cpu >= 0.4 - 1e-9  # (and cost the attacker all of it)


def test_an_outbidder_that_uses_its_share_still_sets_the_price() -> None:
    """The fix must not let reservations hold cheaply against rivals that use their
    share: once the rival is read using all of it, the minimum pays the market price."""
    m, victim, attacker, victim_rate = reserved_victim()
    m.place_bid(attacker, parse_bid("1h cpu:1"), T0)
    price = 0.4 / 0.6 * float(m.rates[0, m.book.slot[attacker]])
    m.tick(T0 + NS, {victim: Usage(cpu=0.4), attacker: Usage(cpu=0.6)})
    first = m.accounts[victim].spent
    m.tick(T0 + 2 * NS, {victim: Usage(cpu=0.4), attacker: Usage(cpu=0.6)})
    assert m.accounts[victim].spent - first == pytest.approx(price, rel=1e-6)
    assert price > 100 * victim_rate


def test_an_idle_bidder_does_not_keep_reservations_out_for_free() -> None:
    """A rich bid left idle (read using nothing) made every reservation `not_admitted` at
    no cost to its owner. Admission prices a minimum as its charge does: against the
    rates of the others at the share they use."""
    m = market()
    victim, attacker = USERS[0], USERS[1]
    m.fund(receipt(attacker, 10**6 * MICRO, "a"), T0)
    m.place_bid(attacker, parse_bid("1h cpu:1"), T0)
    m.tick(T0 + NS, {})  # read: it uses nothing
    m.fund(receipt(victim, 3600 * MICRO, "v"), T0 + NS)
    m.place_bid(victim, parse_bid("1h cpu:1,0.4"), T0 + NS)
    assert m.shares_map()[victim].cpu >= 0.4 - 1e-9
    assert m.accounts[attacker].spent == 0 and m.conserved()


# ---------------------------------------------------------------- random hostile schedules

BIDS = ["1s cpu:1", "0 cpu:1,0.3", "2s cpu:1,0.5 memory:1", "1h cpu:5 net:1,0.2",
        "100y cpu:1,1.0,1.0", "1s tcpv4port,8080:1", "3s cpu:1 tcpv4port,8080:3",
        "0 cpu:2", "1s ipv4address,10.0.0.5:1 cpu:1,0.9"]
FUND = st.tuples(st.just("fund"), st.integers(0, 2), st.integers(1, 3000))
BID = st.tuples(st.just("bid"), st.integers(0, 2), st.sampled_from(BIDS))
REFUND = st.tuples(st.just("refund"), st.integers(0, 2), st.just(0))
TICK = st.tuples(st.just("tick"), st.integers(0, 2), st.floats(0.0, 3.0))
WAIT = st.tuples(st.just("wait"), st.integers(0, 2), st.integers(0, 1500))
OPS = st.one_of(FUND, FUND, BID, BID, REFUND, TICK, TICK, WAIT, WAIT)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=80))
def test_random_schedules_conserve_money_and_never_reuse_a_refund_id(ops: list) -> None:
    """Any sequence of fundings (some below the deposit), bids (duration-0 re-bids,
    whole-resource locks, ports), refunds, readings claiming up to 3x the share, and waits
    of up to 1.5 s with an idle sweep after 1 s: money is conserved after every call, no
    balance goes negative, nobody pays more than it funded, and no refund id is ever
    issued twice (accounts removed and opened again included)."""
    m = Market(host_key=HOST.public_key, bank_key=BANK.public_key, capacity=CAP,
               deposit=100, idle_s=1.0)
    now, seq, issued, closed = T0, 0, {}, 0
    for op, who, arg in ops:
        user = USERS[who]
        events: list = []
        try:
            if op == "fund":
                seq += 1
                events = m.fund(receipt(user, arg, f"t{seq}", seq=seq), now)
            elif op == "bid":
                events = m.place_bid(user, parse_bid(arg, now_ns=now), now)
            elif op == "refund":
                events = m.refund(user, now)
            elif op == "tick":
                events = m.tick(now, {a: Usage(cpu=min(arg * s.cpu, 1.0), memory=s.memory)
                                      for a, s in m.shares_map().items()})
            else:
                now += arg * MS
        except Rejected:
            pass
        closed += sum(isinstance(e, AccountClosed) for e in events)
        for e in events:
            if isinstance(e, RefundDue) and e.refund.refund_id in m.pending:
                r = e.refund
                assert issued.setdefault(r.refund_id, (r.account, r.amount)) == (
                    r.account, r.amount), "a refund id was issued twice"
                m.refund_paid(r.refund_id, receipt(HOST.public_key, r.amount, r.refund_id,
                                                   payee=r.account))
        assert m.conserved()
        for a in m.accounts.values():
            assert a.balance >= 0 and a.spent <= a.funded
    STATS["refunds"] += len(issued)
    STATS["closed"] += closed


STATS = {"refunds": 0, "closed": 0}


def test_an_account_removed_and_opened_again_at_the_same_clock_reading_gets_new_refund_ids(
) -> None:
    """Refund ids count from the account's creation time; an account removed (idle time 0)
    and funded again within one clock reading — or after the clock stepped back — must not
    get the ids of its earlier refunds (the bank would hand back the old receipt and the
    new refund would never be paid)."""
    m = Market(host_key=HOST.public_key, bank_key=BANK.public_key, capacity=CAP,
               deposit=100, idle_s=0.0)
    user, ids = USERS[0], []
    for round_, now in enumerate([T0, T0, T0 - NS]):
        m.fund(receipt(user, 500, f"t{round_}", seq=round_ + 1), now)
        refund = next(e.refund for e in m.refund(user, now) if isinstance(e, RefundDue))
        ids.append(refund.refund_id)
        m.refund_paid(refund.refund_id, receipt(HOST.public_key, 500, refund.refund_id,
                                                payee=user))
        later = max(now, T0)  # a sweep waits for the clock to pass its last one
        events = m.tick(later, {}) + m.tick(later, {})
        assert AccountClosed(user) in events and user not in m.accounts
    assert len(set(ids)) == len(ids), ids


def test_a_refund_before_the_first_reading_does_not_launder_an_unread_bid() -> None:
    """A bid never read counts as used in a minimum's price and pays as used. Refunding it
    1 ns after placing it and bidding again must not turn it into a bid that still counts
    as used but pays only for its (idle) use."""
    m, victim, attacker, victim_rate = reserved_victim()
    m.tick(T0 + NS, {victim: Usage(cpu=0.4)})
    first = m.accounts[victim].spent
    now = T0 + NS + 1
    m.place_bid(attacker, parse_bid("1h cpu:1"), now)
    m.refund(attacker, now + 1)
    m.fund(receipt(attacker, 10**6 * MICRO, "a2", seq=2), now + 2)
    m.place_bid(attacker, parse_bid("1h cpu:1"), now + 3)
    before = m.accounts[attacker].spent
    m.tick(T0 + 2 * NS, {victim: Usage(cpu=0.4)})
    lost, paid = m.accounts[victim].spent - first, m.accounts[attacker].spent - before
    assert lost <= victim_rate + 10 or paid >= 0.8 * lost, (lost, paid)
    assert m.conserved()


def test_an_outbidder_left_with_no_share_does_not_price_minimums_forever() -> None:
    """Two rich reservations of 0.5 take the whole CPU; the attacker's rich bid gets no
    share at all, so there is nothing to read of its use — it must not keep counting as
    fully used (making both minimums bind at its rate) while paying for nothing."""
    m = market()
    a, b, attacker = USERS[0], USERS[1], USERS[2]
    for i, user in enumerate((a, b)):
        m.fund(receipt(user, 10**5 * MICRO, f"r{i}"), T0)
        m.place_bid(user, parse_bid("1h cpu:1,0.5"), T0)
    own = float(m.rates[0, m.book.slot[a]])
    m.fund(receipt(attacker, 10**6 * MICRO, "x"), T0)
    m.place_bid(attacker, parse_bid("1h cpu:1"), T0)
    m.tick(T0 + NS, {a: Usage(cpu=0.5), b: Usage(cpu=0.5)})
    first = m.accounts[a].spent
    for s in range(2, 12):
        m.tick(T0 + s * NS, {a: Usage(cpu=0.5), b: Usage(cpu=0.5)})
    later = m.accounts[a].spent - first
    assert later <= 10 * 2 * own + 10, (later, own)  # against b's rate, not the attacker's
    assert m.conserved()
