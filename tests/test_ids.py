"""Ids and names on the wire (issue 18, point 3), pure: one validator, one written form;
receipts known by (payer, transfer id); SETTLEMENTS Msg-Ids derived from the receipt."""

from __future__ import annotations

import itertools
import unicodedata
from pathlib import Path

import pytest
from faults_kit import split_key
from hypothesis import given, settings
from hypothesis import strategies as st

from tycoon.auctioneer.market import Market, refund_id
from tycoon.bank.ledger import Ledger
from tycoon.bank.receipt import make_receipt, verify_receipt
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bus.keys import Identity
from tycoon.bus.schema import ID_CHARS, check_id, check_name
from tycoon.errors import Rejected
from tycoon.resources import Capacity
from tycoon.sls.query import host_request
from tycoon.sls.update import parse_update
from tycoon.streams.settlements import is_msg_id_of, msg_id

BANK, OPERATOR, HOST = Identity.generate(), Identity.generate(), Identity.generate()
ALICE, MALLORY = Identity.generate().public_key, Identity.generate().public_key


def malformed(fn, *args, **kw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Rejected) as refused:
        fn(*args, **kw)
    assert refused.value.code == "malformed"


# -- the validators ---------------------------------------------------------------------


@pytest.mark.parametrize("good", ["t1", "refund-0a1b", "agent.3.h0.f", "a:b@c+d=e_f", "x" * 128,
                                  "9f2c" * 8])
def test_ids_of_the_charset_pass(good: str) -> None:
    assert check_id(good) == good


LOOK_ALIKE_IDS = [
    "t1 ", " t1", "t\u00a01", "t\t1", "t\n1", "t\u200b1", "t\u20281", "\u0661", "t\uff11",
    unicodedata.normalize("NFC", "caf\u00e9"), unicodedata.normalize("NFD", "caf\u00e9"),
    "t/1", "t\\1", "t*1", "t>1", "", "x" * 129, "t\x001",
]


@pytest.mark.parametrize("bad", LOOK_ALIKE_IDS)
def test_look_alike_ids_are_malformed(bad: str) -> None:
    malformed(check_id, bad)


@pytest.mark.parametrize("bad", [None, 5, b"t1", ["t1"]])
def test_ids_are_strings(bad: object) -> None:
    malformed(check_id, bad)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_an_accepted_id_is_ascii_of_the_charset_and_its_own_normal_forms(text: str) -> None:
    try:
        check_id(text)
    except Rejected as error:
        assert error.code == "malformed"
        return
    assert text.isascii() and set(text) <= ID_CHARS and text == text.strip()
    for form in ("NFC", "NFD", "NFKC", "NFKD"):
        assert unicodedata.normalize(form, text) == text


@pytest.mark.parametrize("good", ["", "host h0", "k0", "bank: opening fees", "A-b_c.d"])
def test_names_pass(good: str) -> None:
    assert check_name(good) == good


@pytest.mark.parametrize("bad", [" h0", "h0 ", "host  h0", "h\u00a00", "caf\u00e9", "h\t0",
                                 "h\n0", "\u0127ost", "x" * 65])
def test_look_alike_names_are_malformed(bad: str) -> None:
    malformed(check_name, bad)


# -- where ids and names enter -----------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    clock = itertools.count(1_700_000_000_000_000_000, 1000)
    led = Ledger(SqliteStore(tmp_path / "bank.db"), BANK, operator=OPERATOR.public_key,
                 clock=lambda: next(clock))
    yield led
    led.store.close()


@pytest.mark.parametrize("name", [" alice", "alice ", "al  ice", "\u0430lice", "al\u00a0ice"])
def test_account_names_are_malformed_at_the_ledger(ledger: Ledger, name: str) -> None:
    with pytest.raises(Rejected) as refused:
        ledger.apply(lambda b: b.open(ALICE, name))
    assert refused.value.code == "malformed" and ALICE not in ledger.accounts


def test_sls_host_query_and_price_update_names() -> None:
    assert host_request({"host": "abcdefgh23456723"}) == "abcdefgh23456723"
    for bad in ("abcdefgh23456723 ", "abcdefgh2345672\u0663", ""):
        malformed(host_request, {"host": bad})
    body = {"host": "h", "seq": 1, "heartbeat_s": 5.0, "name": "h0", "driver": "simulated",
            "resources": {}}
    assert parse_update(body)[3] == "h0"  # (host, seq, heartbeat_s, name, driver, offers)
    for field, bad in (("name", "h0 "), ("name", "h\u04270"), ("driver", "sim\u00a0")):
        malformed(parse_update, {**body, field: bad})


# -- receipts are known by (payer, transfer id) ----------------------------------------


def receipt(payer: str, tid: str, amount: int, seq: int) -> bytes:
    return make_receipt(BANK, transfer_id=tid, payer=payer, payee=HOST.public_key,
                        amount=amount, memo="", seq=seq, settled_ns=1_000 + seq)


def market() -> Market:
    return Market(host_key=HOST.public_key, bank_key=BANK.public_key,
                  capacity=Capacity(cpu=1000, memory=1 << 30, disk=1 << 30, net=10**9))


def test_a_host_redeems_by_payer_and_id_so_nobody_redeems_first_under_yours() -> None:
    m = market()
    m.fund(receipt(MALLORY, "agent.1.h0.f", 1, 1), 0)  # Mallory, first, under Alice's id
    m.fund(receipt(ALICE, "agent.1.h0.f", 5_000_000, 2), 0)
    assert m.accounts[ALICE].balance == 5_000_000
    with pytest.raises(Rejected) as refused:
        m.fund(receipt(ALICE, "agent.1.h0.f", 5_000_000, 2), 0)
    assert refused.value.code == "already_redeemed"


def test_a_bare_id_redeemed_before_ids_were_scoped_still_counts() -> None:
    m = market()
    m.redeemed = {"old-1"}  # as loaded from a store written by the previous version
    with pytest.raises(Rejected) as refused:
        m.fund(receipt(ALICE, "old-1", 5, 1), 0)
    assert refused.value.code == "already_redeemed"


def test_receipt_key_round_trips() -> None:
    r = verify_receipt(receipt(ALICE, "a:b", 5, 1), BANK.public_key)
    assert r.key == f"{ALICE}:a:b" and split_key(r.key) == (ALICE, "a:b")  # faults_kit's reader
    assert split_key("a:b") == (None, "a:b")


def test_refund_ids_are_deterministic_and_of_the_charset() -> None:
    rid = refund_id(HOST.public_key, ALICE, 7)
    assert rid == refund_id(HOST.public_key, ALICE, 7) and check_id(rid) == rid
    assert rid != refund_id(HOST.public_key, ALICE, 8) != refund_id(HOST.public_key, MALLORY, 7)


# -- SETTLEMENTS Msg-Ids come from the receipt ------------------------------------------


def test_msg_ids_are_the_receipts_digest_never_user_text() -> None:
    mine = receipt(ALICE, "refund-1", 5, 1)
    squat = receipt(MALLORY, "refund-1", 1, 2)  # same transfer id, another payer
    padded = make_receipt(BANK, transfer_id="refund-1 ", payer=MALLORY, payee=HOST.public_key,
                          amount=1, memo="", seq=3, settled_ns=1)
    ids = {msg_id(mine), msg_id(squat), msg_id(padded)}
    assert len(ids) == 3 and all(len(i) == 64 and i.strip() == i for i in ids)
    assert msg_id(mine) == msg_id(bytes(mine))  # deterministic: a re-send is stored once
    assert is_msg_id_of(msg_id(mine), mine) and is_msg_id_of(msg_id(mine, 123), mine)
    for bad in ("refund-1", msg_id(squat), msg_id(mine) + ".x", msg_id(mine) + " ", None):
        assert not is_msg_id_of(bad, mine)
