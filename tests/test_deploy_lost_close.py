"""A close lost with a restored backup (pure ledger core): the operator re-enters it, and only
that. Closing another key's account is the operator's alone, only while receipts wait in
``pending`` (maintenance), only at zero balance, only at the seq before them; the bank then
re-enters the rest. The bank on a real server: tests/test_deploy_restore.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tycoon.bank.audit import audit
from tycoon.bank.ledger import Ledger
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bus.keys import Identity
from tycoon.errors import Rejected

BANK, OPERATOR = Identity.generate(), Identity.generate()
A, B, C = (Identity.generate().public_key for _ in range(3))


def ledger(path: Path) -> Ledger:
    return Ledger(SqliteStore(path), BANK, operator=OPERATOR.public_key)


def test_only_the_owner_closes_outside_maintenance(tmp_path: Path) -> None:
    led = ledger(tmp_path / "bank.db")
    for who in (A, C):
        led.apply(lambda b, w=who: b.open(w))
    for sender in (A, OPERATOR.public_key):  # attack: another user, then the operator
        with pytest.raises(Rejected) as refused:
            led.apply(lambda b, s=sender: b.close(s, C))
        assert refused.value.code == "forbidden"
    assert not led.accounts[C].closed
    assert led.apply(lambda b: b.close(C))["account"] == C


def test_the_operator_re_enters_a_lost_close_and_the_rest_follows(tmp_path: Path) -> None:
    live = ledger(tmp_path / "bank.db")
    for who in (A, B, C):
        live.apply(lambda b, w=who: b.open(w))
    live.apply(lambda b: b.mint(OPERATOR.public_key, A, 10, "m1"))
    backup_seq = live.seq
    live.store.close()
    (tmp_path / "backup.db").write_bytes((tmp_path / "bank.db").read_bytes())
    live = ledger(tmp_path / "bank.db")
    live.apply(lambda b: b.close(C))  # lost with the restore: no receipt anywhere
    after = live.apply(lambda b: b.transfer(A, B, 3, "after"))  # its receipt is in the log
    live.store.close()

    restored = ledger(tmp_path / "backup.db")
    assert restored.seq == backup_seq
    with pytest.raises(Rejected, match="does not follow"):
        restored.apply(lambda b: b.reenter(after.raw))
    restored.pending = {after.seq: after.raw}  # maintenance: what bank serve does
    # attacks in maintenance: a user closing another's account; the operator closing an
    # account that holds money (it would not be a close the bank could have made)
    with pytest.raises(Rejected) as refused:
        restored.apply(lambda b: b.close(B, C))
    assert refused.value.code == "forbidden"
    with pytest.raises(Rejected) as refused:
        restored.apply(lambda b: b.close(OPERATOR.public_key, A))
    assert refused.value.code == "not_empty"
    assert restored.seq == backup_seq  # nothing taken
    closed = restored.apply(lambda b: b.close(OPERATOR.public_key, C))
    assert (closed["account"], closed["seq"]) == (C, backup_seq + 1)
    assert restored.apply(lambda b: b.reenter(after.raw)).seq == after.seq
    restored.pending.clear()
    assert restored.accounts[C].closed and restored.seq == after.seq
    report = audit(restored.store)
    assert report.ok, report.problems
