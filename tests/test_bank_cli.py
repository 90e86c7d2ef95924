"""``tycoon bank …``: the client commands against a live bank, key, and audit exit codes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from tycoon.bank.launch import launch as launch_bank
from tycoon.bank.ledger import Ledger
from tycoon.bank.receipt import verify_receipt
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bus.keys import KeyStore
from tycoon.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def arun(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def make_ledger(home: Path, db: Path) -> Ledger:
    keys = KeyStore(home)
    return Ledger(SqliteStore(db), keys.load_or_create("bank"),
                  operator=keys.load_or_create("operator").public_key)


def test_key_and_audit_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path)
    code, _, err = run(capsys, "--home", home, "bank", "key")  # never minted unasked
    assert code == 1 and "bank key --create" in err and not KeyStore(tmp_path).exists("bank")
    code, out, _ = run(capsys, "--home", home, "bank", "key", "--create")
    assert code == 0 and out.strip() == KeyStore(tmp_path).load("bank").public_key
    code, _, err = run(capsys, "--home", home, "bank", "audit")
    assert code == 1 and "no bank database" in err
    ledger = make_ledger(tmp_path, tmp_path / "bank.db")
    alice, bob = KeyStore(tmp_path).create("alice"), KeyStore(tmp_path).create("bob")
    ledger.apply(lambda b: b.open(alice.public_key))
    ledger.apply(lambda b: b.open(bob.public_key))
    ledger.apply(lambda b: b.mint(ledger.operator, alice.public_key, 5_000_000, "m"))
    ledger.apply(lambda b: b.transfer(alice.public_key, bob.public_key, 1_500_000, "t", ""))
    code, out, _ = run(capsys, "--home", home, "bank", "audit", "--state", home, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["total_minted"] == 5_000_000
    ledger.store.close()
    with sqlite3.connect(tmp_path / "bank.db") as db:  # money from nowhere
        db.execute("UPDATE accounts SET balance = balance + 1 WHERE id = ?", (bob.public_key,))
    code, out, _ = run(capsys, "--home", home, "bank", "audit", "--db", str(tmp_path / "bank.db"))
    assert code == 1 and "conservation" in out and "FAILED" in out


@pytest.mark.nats
async def test_client_commands(nats_url: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path)
    keys = KeyStore(tmp_path)
    base = ("--nats", nats_url, "--home", home)
    async with launch_bank(nats_url, keys.load_or_create("bank"), db=tmp_path / "bank.db",
                           operator=keys.load_or_create("operator").public_key) as bank:
        ledger = bank.ledger
        for who in ("alice", "bob"):
            code, out, err = await arun(capsys, *base, "--as", who, "bank", "open", "--name", who)
            assert code == 0, err
        code, out, err = await arun(capsys, *base, "--as", "operator", "bank", "mint", "alice",
                                    "12.5", "--id", "m1")
        assert code == 0 and "minted 12.5" in out, err
        receipt_file = tmp_path / "r.bin"
        code, out, err = await arun(capsys, *base, "--as", "alice", "bank", "transfer", "bob",
                                    "2.25", "--memo", "tea", "--id", "t1", "--json",
                                    "--receipt", str(receipt_file))
        assert code == 0, err
        body = json.loads(out)
        assert body["amount"] == 2_250_000 and body["memo"] == "tea"
        receipt = verify_receipt(receipt_file.read_bytes(), ledger.bank.public_key)
        assert receipt.raw.hex() == body["receipt"]
        code, out, _ = await arun(capsys, *base, "--as", "alice", "bank", "balance")
        assert (code, out.strip()) == (0, "10.25")
        code, out, _ = await arun(capsys, *base, "--as", "bob", "bank", "history", "--json")
        entries = json.loads(out)["entries"]
        assert [e["kind"] for e in entries] == ["open", "transfer"]
        code, _, err = await arun(capsys, *base, "--as", "bob", "bank", "balance", "alice")
        assert code == 1 and "forbidden" in err
        code, _, err = await arun(capsys, *base, "--as", "alice", "bank", "transfer", "bob",
                                  "1.0000001")
        assert code == 1 and "bad_amount" in err
        code, _, err = await arun(capsys, *base, "--as", "alice", "bank", "transfer", "bob", "99")
        assert code == 1 and "overdraft" in err
