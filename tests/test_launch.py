"""The services' launches (tycoon/<service>/launch.py): what a failed start leaves behind,
and the context form stopping what it started. Pure: no server is reached."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tycoon.bank.launch import start_bank
from tycoon.bank.sqlite_store import SqliteStore, StoreLocked
from tycoon.bus.keys import Identity
from tycoon.bus.launch import as_context

NOWHERE = "nats://127.0.0.1:1"
"""No server: a launch that got this far would hang connecting, so these tests show that it
refuses before it connects."""


async def test_a_second_bank_on_a_held_database_is_refused_before_it_connects(
        tmp_path: Path) -> None:
    bank, operator = Identity.generate(), Identity.generate()
    held = SqliteStore(tmp_path / "bank.db")  # the running bank's hold (flock)
    try:
        with pytest.raises(StoreLocked):
            await start_bank(NOWHERE, bank, db=tmp_path / "bank.db",
                             operator=operator.public_key)
    finally:
        held.close()
    again = SqliteStore(tmp_path / "bank.db")  # the refused start kept nothing open
    again.close()


async def test_another_banks_database_is_refused_and_released(tmp_path: Path) -> None:
    from tycoon.bank.ledger import Ledger

    operator = Identity.generate()
    store = SqliteStore(tmp_path / "bank.db")
    Ledger(store, Identity.generate(), operator=operator.public_key)  # owned by this key
    store.close()
    with pytest.raises(ValueError, match="belongs to bank key"):
        await start_bank(NOWHERE, Identity.generate(), db=tmp_path / "bank.db",
                         operator=operator.public_key)
    SqliteStore(tmp_path / "bank.db").close()  # its lock was released


@dataclass
class Running:
    events: list[str] = field(default_factory=list)

    async def stop(self) -> None:
        self.events.append("stopped")


async def test_the_context_form_stops_the_service_even_when_the_body_fails() -> None:
    made: list[Running] = []

    async def start_thing(name: str) -> Running:
        made.append(Running([f"started {name}"]))
        return made[-1]

    launch = as_context(start_thing)
    with pytest.raises(RuntimeError, match="body"):
        async with launch("x") as running:
            assert running.events == ["started x"]
            raise RuntimeError("body")
    assert made[0].events == ["started x", "stopped"]
