"""The ledger core over a real SQLite store: unit cases and a stateful model test."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tycoon.bank.audit import audit
from tycoon.bank.ledger import Batch, Ledger
from tycoon.bank.receipt import Receipt, verify_receipt
from tycoon.bank.sqlite_store import SqliteStore, StoreLocked
from tycoon.bank.store import AccountRow, EventRow
from tycoon.bus.keys import Identity
from tycoon.errors import Rejected
from tycoon.money import MAX_AMOUNT

BANK = Identity.generate()
OPERATOR = Identity.generate()
KEYS = [Identity.generate().public_key for _ in range(4)]


class FailingStore(SqliteStore):
    """A real SQLite store whose next write fails half-way (duplicate seq in the batch)."""

    fail_next = False

    def write(self, events: list[EventRow], accounts: list[AccountRow]) -> None:
        if self.fail_next:
            self.fail_next = False
            super().write(events + events[:1], accounts)
        super().write(events, accounts)


def make_ledger(path: Path, *, store_cls: type[SqliteStore] = SqliteStore) -> Ledger:
    counter = itertools.count(1_700_000_000_000_000_000, 1000)
    return Ledger(store_cls(path), BANK, operator=OPERATOR.public_key,
                  clock=lambda: next(counter))


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = make_ledger(tmp_path / "bank.db")
    for key in KEYS[:3]:
        led.apply(lambda b, k=key: b.open(k, "n"))
    led.apply(lambda b: b.mint(OPERATOR.public_key, KEYS[0], 1000, "m0"))
    yield led
    led.store.close()


def code_of(ledger: Ledger, op) -> str:  # type: ignore[no-untyped-def]
    before = (dict(ledger.accounts), ledger.seq, ledger.minted)
    with pytest.raises(Rejected) as info:
        ledger.apply(op)
    assert (dict(ledger.accounts), ledger.seq, ledger.minted) == before
    return info.value.code


def test_transfer_returns_a_verifiable_receipt_and_retry_returns_it_again(ledger: Ledger) -> None:
    receipt = ledger.apply(lambda b: b.transfer(KEYS[0], KEYS[1], 250, "t1", "rent"))
    assert verify_receipt(receipt.raw, BANK.public_key) == receipt
    assert ledger.accounts[KEYS[0]].balance == 750
    again = ledger.apply(lambda b: b.transfer(KEYS[0], KEYS[1], 250, "t1", "rent"))
    assert again == receipt and again.raw == receipt.raw
    assert ledger.accounts[KEYS[0]].balance == 750


@pytest.mark.parametrize(
    ("payer", "payee", "amount", "tid", "memo", "code"),
    [
        (0, 1, 250, "t1", "other memo", "conflict"),
        (0, 1, 251, "t1", "rent", "conflict"),
        (0, 2, 250, "t1", "rent", "conflict"),
        (0, 1, 0, "t2", "", "bad_amount"),
        (0, 1, -5, "t2", "", "bad_amount"),
        (0, 1, MAX_AMOUNT + 1, "t2", "", "bad_amount"),
        (0, 1, 1001, "t2", "", "overdraft"),
        (0, 0, 5, "t2", "", "self_transfer"),
        (0, 3, 5, "t2", "", "unknown_account"),
        (3, 0, 5, "t2", "", "unknown_account"),
        (0, 1, 5, "", "", "malformed"),
        (0, 1, 5, "x" * 129, "", "malformed"),
        (0, 1, 5, "t2", "\x00", "malformed"),
    ],
)
def test_bad_transfers_are_refused_and_change_nothing(
    ledger: Ledger, payer: int, payee: int, amount: int, tid: str, memo: str, code: str
) -> None:
    ledger.apply(lambda b: b.transfer(KEYS[0], KEYS[1], 250, "t1", "rent"))
    assert code_of(ledger, lambda b: b.transfer(KEYS[payer], KEYS[payee], amount, tid,
                                                memo)) == code


def test_bad_amount_types(ledger: Ledger) -> None:
    for amount in (1.0, True, "5", None):
        assert code_of(ledger, lambda b, a=amount: b.transfer(KEYS[0], KEYS[1], a, "t",
                                                              "")) == "bad_amount"
    assert code_of(ledger, lambda b: b.transfer(KEYS[0], "nobody", 5, "t", "")) == (
        "unknown_account")


def test_mint_rules(ledger: Ledger) -> None:
    assert code_of(ledger, lambda b: b.mint(KEYS[0], KEYS[0], 5, "m1")) == "forbidden"
    assert code_of(ledger, lambda b: b.mint(OPERATOR.public_key, KEYS[3], 5, "m1")) == (
        "unknown_account")
    assert code_of(ledger, lambda b: b.mint(OPERATOR.public_key, KEYS[0], 6, "m0")) == (
        "conflict")
    same = ledger.apply(lambda b: b.mint(OPERATOR.public_key, KEYS[0], 1000, "m0"))
    assert same["seq"] == 4 and ledger.minted == 1000
    assert code_of(ledger, lambda b: b.mint(OPERATOR.public_key, KEYS[1], MAX_AMOUNT, "m9")) == (
        "bad_amount")


def test_open_close_reopen(ledger: Ledger) -> None:
    assert code_of(ledger, lambda b: b.open(KEYS[1])) == "account_exists"
    assert code_of(ledger, lambda b: b.close(KEYS[0])) == "not_empty"
    assert code_of(ledger, lambda b: b.close(KEYS[3])) == "unknown_account"
    assert code_of(ledger, lambda b: b.open(KEYS[3], "x" * 65)) == "malformed"
    ledger.apply(lambda b: b.close(KEYS[1]))
    assert code_of(ledger, lambda b: b.transfer(KEYS[0], KEYS[1], 5, "t9", "")) == (
        "unknown_account")
    assert code_of(ledger, lambda b: b.close(KEYS[1])) == "unknown_account"
    ledger.apply(lambda b: b.open(KEYS[1], "again"))
    ledger.apply(lambda b: b.transfer(KEYS[0], KEYS[1], 5, "t9", ""))
    assert ledger.accounts[KEYS[1]].balance == 5
    assert audit(ledger.store).ok


def test_reads_are_owner_only(ledger: Ledger) -> None:
    with pytest.raises(Rejected) as info:
        ledger.balance(KEYS[1], KEYS[0])
    assert info.value.code == "forbidden"
    with pytest.raises(Rejected) as info:
        ledger.history(KEYS[1], KEYS[0])
    assert info.value.code == "forbidden"
    assert ledger.balance(OPERATOR.public_key, KEYS[0]).balance == 1000
    assert ledger.balance(BANK.public_key, KEYS[0]).balance == 1000
    assert [e["kind"] for e in ledger.history(KEYS[0], KEYS[0])] == ["open", "mint"]


def test_history_pages_and_signs_entries(ledger: Ledger) -> None:
    for i in range(5):
        ledger.apply(lambda b, i=i: b.transfer(KEYS[0], KEYS[1], 10 + i, f"p{i}", ""))
    page = ledger.history(KEYS[1], KEYS[1], offset=1, limit=3)
    assert [e["amount"] for e in page] == [10, 11, 12]
    assert all(e["counterparty"] == KEYS[0] for e in page)
    assert [e["amount"] for e in ledger.history(KEYS[0], KEYS[0], 2, 2)] == [-10, -11]


def test_batch_is_all_or_nothing_when_the_write_fails(tmp_path: Path) -> None:
    led = make_ledger(tmp_path / "bank.db", store_cls=FailingStore)
    led.apply(lambda b: b.open(KEYS[0]))
    led.apply(lambda b: b.open(KEYS[1]))
    led.apply(lambda b: b.mint(OPERATOR.public_key, KEYS[0], 100, "m"))
    batch = led.batch()
    batch.transfer(KEYS[0], KEYS[1], 10, "a", "")
    batch.transfer(KEYS[0], KEYS[1], 20, "b", "")
    before = (dict(led.accounts), led.seq, led.minted)
    led.store.fail_next = True  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="UNIQUE"):
        led.commit(batch)
    assert (dict(led.accounts), led.seq, led.minted) == before
    assert led.store.find_op("transfer", "a") is None
    led.store.close()
    reopened = make_ledger(tmp_path / "bank.db")
    assert reopened.seq == before[1] and reopened.accounts == before[0]
    assert audit(reopened.store).ok
    reopened.store.close()


def test_prefetched_ids_keep_idempotency_and_conflicts(ledger: Ledger) -> None:
    first = ledger.apply(lambda b: b.transfer(KEYS[0], KEYS[1], 5, "t1", ""))
    ids = ["t1", "t2", "t3"] + [f"x{i}" for i in range(600)]  # more than one IN chunk
    found = ledger.store.find_ops("transfer", ids)
    assert set(found) == {("t1", KEYS[0])} and found[("t1", KEYS[0])].receipt == first.raw
    batch = ledger.batch()
    batch.prefetch("transfer", ids)
    again = batch.transfer(KEYS[0], KEYS[1], 5, "t1", "")
    assert again.raw == first.raw  # the committed receipt, found by the batch's look-up
    with pytest.raises(Rejected) as refused:
        batch.transfer(KEYS[0], KEYS[1], 6, "t1", "")
    assert refused.value.code == "conflict"
    fresh = batch.transfer(KEYS[0], KEYS[1], 7, "t2", "")
    assert batch.transfer(KEYS[0], KEYS[1], 7, "t2", "").raw == fresh.raw  # same batch
    with pytest.raises(Rejected) as refused:
        batch.transfer(KEYS[0], KEYS[1], 8, "t2", "")
    assert refused.value.code == "conflict"
    ledger.commit(batch)
    assert ledger.accounts[KEYS[1]].balance == 12
    assert audit(ledger.store).ok


def test_one_writer_and_bank_key_is_pinned(tmp_path: Path) -> None:
    led = make_ledger(tmp_path / "bank.db")
    with pytest.raises(StoreLocked):
        SqliteStore(tmp_path / "bank.db")
    with SqliteStore(tmp_path / "bank.db", readonly=True) as ro:
        assert audit(ro).ok
    led.store.close()
    with pytest.raises(ValueError, match="belongs to bank key"):
        Ledger(SqliteStore(tmp_path / "bank.db"), Identity.generate(),
               operator=OPERATOR.public_key)


# -- the stateful model test -----------------------------------------------------------

amounts = st.one_of(st.integers(-3, 400), st.sampled_from([0, MAX_AMOUNT, MAX_AMOUNT + 1]))
who = st.integers(0, len(KEYS) - 1)
ids = st.sampled_from([f"t{i}" for i in range(8)])
memos = st.sampled_from(["", "rent", "fee"])


class LedgerMachine(RuleBasedStateMachine):
    """Drives the ledger and a plain model side by side; close/reopen the store at will."""

    @initialize()
    def setup(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bank-sm-"))
        self.ledger = make_ledger(self.dir / "bank.db")
        self.balances: dict[str, int] = {}  # open accounts only
        self.minted = 0
        self.mints: dict[str, tuple[str, int]] = {}
        # (payer, transfer id) -> ...: a transfer id is unique per payer
        self.transfers: dict[tuple[str, str], tuple[str, str, int, str]] = {}
        self.receipts: dict[tuple[str, str], Receipt] = {}
        for i in range(3):  # start with three open accounts, one of them funded
            self.open(i)
        self.mint(0, 500, "m0")

    def teardown(self) -> None:
        if hasattr(self, "ledger"):
            self.ledger.store.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def expect(self, code: str | None, op) -> object:  # type: ignore[no-untyped-def]
        before = (dict(self.ledger.accounts), self.ledger.seq)
        try:
            result = self.ledger.apply(op)
        except Rejected as error:
            assert error.code == code, (error, code)
            assert (dict(self.ledger.accounts), self.ledger.seq) == before
            return None
        assert code is None, f"expected {code}, got {result}"
        return result

    @rule(i=who)
    def open(self, i: int) -> None:
        key = KEYS[i]
        code = "account_exists" if key in self.balances else None
        if self.expect(code, lambda b: b.open(key, f"k{i}")) is not None:
            self.balances[key] = 0

    @rule(i=who, amount=amounts, mint_id=st.sampled_from(["m0", "m1", "m2", "m3"]))
    def mint(self, i: int, amount: int, mint_id: str) -> None:
        key = KEYS[i]
        if not 1 <= amount <= MAX_AMOUNT:
            code: str | None = "bad_amount"
        elif mint_id in self.mints:
            code = None if self.mints[mint_id] == (key, amount) else "conflict"
        elif key not in self.balances:
            code = "unknown_account"
        elif self.minted + amount > MAX_AMOUNT:
            code = "bad_amount"
        else:
            code = None
        fresh = code is None and mint_id not in self.mints
        self.expect(code, lambda b: b.mint(OPERATOR.public_key, key, amount, mint_id))
        if fresh:
            self.mints[mint_id] = (key, amount)
            self.balances[key] += amount
            self.minted += amount

    def transfer_code(self, payer: str, payee: str, amount: int, tid: str, memo: str) -> str | None:
        if not 1 <= amount <= MAX_AMOUNT:
            return "bad_amount"
        if payer == payee:
            return "self_transfer"
        if (payer, tid) in self.transfers:
            same = self.transfers[(payer, tid)] == (payer, payee, amount, memo)
            return None if same else "conflict"
        if payer not in self.balances or payee not in self.balances:
            return "unknown_account"
        if self.balances[payer] < amount:
            return "overdraft"
        return None

    def record(self, receipt: Receipt, payer: str, payee: str, amount: int, memo: str) -> None:
        key = (payer, receipt.transfer_id)
        if key in self.receipts:
            assert receipt.raw == self.receipts[key].raw
            return
        assert verify_receipt(receipt.raw, BANK.public_key) == receipt
        self.transfers[key] = (payer, payee, amount, memo)
        self.receipts[key] = receipt
        self.balances[payer] -= amount
        self.balances[payee] += amount

    @rule(i=who, j=who, amount=amounts, tid=ids, memo=memos)
    def transfer(self, i: int, j: int, amount: int, tid: str, memo: str) -> None:
        payer, payee = KEYS[i], KEYS[j]
        code = self.transfer_code(payer, payee, amount, tid, memo)
        receipt = self.expect(code, lambda b: b.transfer(payer, payee, amount, tid, memo))
        if isinstance(receipt, Receipt):
            self.record(receipt, payer, payee, amount, memo)

    @rule(i=who, j=who, extra=st.sampled_from([-1, 0, 1]), tid=ids)
    def drain(self, i: int, j: int, extra: int, tid: str) -> None:
        """Transfer right at the edge of the payer's balance (overdraft boundary)."""
        self.transfer(i, j, self.balances.get(KEYS[i], 0) + extra, tid, "")

    @precondition(lambda self: self.transfers)
    @rule(data=st.data(), conflicting=st.booleans())
    def retry(self, data: st.DataObject, conflicting: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.transfers)))
        payer, payee, amount, memo = self.transfers[key]
        tid = key[1]
        amount += int(conflicting)
        receipt = self.expect("conflict" if conflicting else None,
                              lambda b: b.transfer(payer, payee, amount, tid, memo))
        if receipt is not None:
            assert receipt == self.receipts[key]

    @rule(ops=st.lists(st.tuples(who, who, st.integers(1, 150), ids), min_size=2, max_size=6))
    def group(self, ops: list[tuple[int, int, int, str]]) -> None:
        """Several transfers in one batch (one commit), as the service group-commits them."""
        batch: Batch = self.ledger.batch()
        for i, j, amount, tid in ops:
            payer, payee = KEYS[i], KEYS[j]
            code = self.transfer_code(payer, payee, amount, tid, "")
            try:
                receipt = batch.transfer(payer, payee, amount, tid, "")
            except Rejected as error:
                assert error.code == code
                continue
            assert code is None
            self.record(receipt, payer, payee, amount, "")  # the model follows the batch
        self.ledger.commit(batch)

    @rule(i=who)
    def close(self, i: int) -> None:
        key = KEYS[i]
        if key not in self.balances:
            code: str | None = "unknown_account"
        else:
            code = "not_empty" if self.balances[key] else None
        if self.expect(code, lambda b: b.close(key)) is not None:
            del self.balances[key]

    @rule()
    def reopen_store(self) -> None:
        self.ledger.store.close()
        self.ledger = make_ledger(self.dir / "bank.db")

    @invariant()
    def balances_match(self) -> None:
        if not hasattr(self, "ledger"):
            return
        live = {k: r.balance for k, r in self.ledger.accounts.items() if not r.closed}
        assert live == self.balances
        assert all(b >= 0 for b in live.values())
        assert self.ledger.total_balances() == self.ledger.minted == self.minted

    @invariant()
    def receipts_are_in_history(self) -> None:
        if not hasattr(self, "ledger"):
            return
        for (payer, tid), receipt in self.receipts.items():
            event = self.ledger.store.find_op("transfer", tid, payer)
            assert event is not None and event.receipt == receipt.raw
            assert event.seq == receipt.seq

    @rule()
    def audit_replays(self) -> None:
        report = audit(self.ledger.store)
        assert report.ok, report.problems


LedgerMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerMachine = LedgerMachine.TestCase


def test_audit_after_random_run(tmp_path: Path) -> None:
    led = make_ledger(tmp_path / "bank.db")
    for key in KEYS:
        led.apply(lambda b, k=key: b.open(k))
    led.apply(lambda b: b.mint(OPERATOR.public_key, KEYS[0], 10_000, "m"))
    for n in range(40):
        i, j = n % 4, (n * 3 + 1) % 4
        if i != j:
            try:
                led.apply(lambda b, i=i, j=j, n=n: b.transfer(KEYS[i], KEYS[j], 7 * n + 1, f"x{n}",
                                                              ""))
            except Rejected as error:
                assert error.code == "overdraft"
    report = audit(led.store)
    assert report.ok, report.problems
    assert report.total_minted == report.total_balances == 10_000
    led.store.close()


# -- ids no one else can claim (issue 18) ------------------------------------------------


def test_another_payer_cannot_squat_a_transfer_id(ledger: Ledger) -> None:
    """The attack: pay 1 µcredit under the id the victim will use next. A transfer id is
    unique per payer, so the squatter's transfer is its own and the victim's goes through."""
    ledger.apply(lambda b: b.mint(OPERATOR.public_key, KEYS[2], 10, "m-squat"))
    squat = ledger.apply(lambda b: b.transfer(KEYS[2], KEYS[1], 1, "refund-abc", ""))
    mine = ledger.apply(lambda b: b.transfer(KEYS[0], KEYS[1], 500, "refund-abc", "refund"))
    assert (squat.payer, mine.payer) == (KEYS[2], KEYS[0]) and mine.amount == 500
    assert mine.seq != squat.seq
    again = ledger.apply(lambda b: b.transfer(KEYS[0], KEYS[1], 500, "refund-abc", "refund"))
    assert again.raw == mine.raw  # the victim's retry still returns its own receipt
    assert ledger.store.find_op("transfer", "refund-abc", KEYS[0]).receipt == mine.raw
    assert ledger.store.find_op("transfer", "refund-abc", KEYS[2]).receipt == squat.raw
    # in one batch, with the ids looked up ahead as the service does
    batch = ledger.batch()
    batch.prefetch("transfer", ["refund-abc", "next"])
    assert batch.transfer(KEYS[0], KEYS[1], 500, "refund-abc", "refund").raw == mine.raw
    assert batch.transfer(KEYS[2], KEYS[1], 1, "refund-abc", "").raw == squat.raw
    assert batch.transfer(KEYS[2], KEYS[1], 1, "next", "").payer == KEYS[2]
    assert batch.transfer(KEYS[0], KEYS[1], 1, "next", "").payer == KEYS[0]
    ledger.commit(batch)
    assert audit(ledger.store).ok


@pytest.mark.parametrize("tid", ["t1 ", " t1", "t\u00a01", "caf\u00e9", "cafe\u0301", "\u0661",
                                 "a/b", "", "x" * 129, "t\n1"])
def test_transfer_and_mint_ids_outside_the_charset_are_malformed(ledger: Ledger,
                                                                 tid: str) -> None:
    before = (dict(ledger.accounts), ledger.seq)
    for op in (lambda b: b.transfer(KEYS[0], KEYS[1], 5, tid, ""),
               lambda b: b.mint(OPERATOR.public_key, KEYS[0], 5, tid)):
        with pytest.raises(Rejected) as refused:
            ledger.apply(op)
        assert refused.value.code == "malformed"
    assert (dict(ledger.accounts), ledger.seq) == before


_V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE accounts (id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '',
    balance INTEGER NOT NULL CHECK (balance >= 0),
    closed INTEGER NOT NULL DEFAULT 0 CHECK (closed IN (0, 1)),
    opened_seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE events (seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('open', 'mint', 'transfer', 'close')),
    ts_ns INTEGER NOT NULL, actor TEXT NOT NULL, op_id TEXT, payer TEXT, payee TEXT,
    amount INTEGER NOT NULL DEFAULT 0 CHECK (amount >= 0), memo TEXT NOT NULL DEFAULT '',
    receipt BLOB);
CREATE UNIQUE INDEX events_op ON events (kind, op_id) WHERE op_id IS NOT NULL;
CREATE INDEX events_payer ON events (payer) WHERE payer IS NOT NULL;
CREATE INDEX events_payee ON events (payee) WHERE payee IS NOT NULL;
"""


def test_a_version_1_database_opens_and_is_migrated(tmp_path: Path) -> None:
    """A bank.db of the previous version (ids unique per ledger) opens, keeps its data,
    and from then on scopes ids per payer."""
    import sqlite3

    path = tmp_path / "bank.db"
    led = make_ledger(path)
    for key in KEYS[:3]:
        led.apply(lambda b, k=key: b.open(k))
    led.apply(lambda b: b.mint(OPERATOR.public_key, KEYS[0], 100, "m0"))
    led.apply(lambda b: b.mint(OPERATOR.public_key, KEYS[2], 100, "m1"))
    first = led.apply(lambda b: b.transfer(KEYS[0], KEYS[1], 30, "t1", ""))
    led.store.close()
    # rewrite the file as version 1 wrote it: its schema, the same rows
    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    db.executescript(_V1_SCHEMA)
    db.execute(f"ATTACH '{path}' AS new")
    for table in ("meta", "accounts", "events"):
        db.execute(f"INSERT INTO main.{table} SELECT * FROM new.{table}")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    db.commit()
    db.close()
    migrated = make_ledger(old)
    assert migrated.store.get_meta("schema") == "2"
    assert migrated.accounts[KEYS[1]].balance == 30 and audit(migrated.store).ok
    again = migrated.apply(lambda b: b.transfer(KEYS[0], KEYS[1], 30, "t1", ""))
    assert again.raw == first.raw
    other = migrated.apply(lambda b: b.transfer(KEYS[2], KEYS[1], 5, "t1", ""))
    assert other.payer == KEYS[2] and migrated.accounts[KEYS[1]].balance == 35
    with pytest.raises(Rejected) as refused:
        migrated.apply(lambda b: b.mint(OPERATOR.public_key, KEYS[1], 1, "m0"))
    assert refused.value.code == "conflict"  # mint ids stay unique per ledger
    migrated.store.close()
    reopened = make_ledger(old)
    assert reopened.seq == migrated.seq and audit(reopened.store).ok
    indexes = {r[0] for r in reopened.store._db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "events_op" not in indexes and "events_op_payer" in indexes
    reopened.store.close()
