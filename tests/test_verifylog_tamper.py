"""verify-log tells a purge from a limit; republish and restore-from-log close the gaps.

A real nats-server with JetStream and the per-role permissions; the operator key holds the
JetStream admin capability (the "admin connection" a purge needs). The CLI runs as it
would on the bank's machine: the bank's and the operator's keys in its key store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hostile_kit import Cast

from tycoon.bank.audit import audit
from tycoon.bank.client import BankClient
from tycoon.bank.launch import RunningBank, start_bank
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import Identity, KeyStore
from tycoon.cli.main import main
from tycoon.errors import Rejected
from tycoon.log import configure_logging
from tycoon.natsconf import Principal, render_principals
from tycoon.natsserver import NatsServer, free_port
from tycoon.streams.config import SETTLEMENTS, SETTLEMENTS_SPEC, ensure_stream
from tycoon.streams.settlements import SettlementLog, sqlite_source
from tycoon.streams.verify import republish, verify_log

pytestmark = [pytest.mark.nats, pytest.mark.hostile, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _log_to_this_tests_stderr() -> None:
    configure_logging("warning")


@dataclass
class World:
    home: Path
    db: Path
    cast: Cast
    server: NatsServer
    buses: list[Bus] = field(default_factory=list)
    bank: RunningBank | None = None
    log: SettlementLog | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def _log(self, bus: Bus) -> SettlementLog:
        self.log = SettlementLog(bus.nc, self.cast.bank.public_key, sqlite_source(self.db),
                                 window=8, retry_s=(0.1, 0.5))
        return self.log

    async def start_bank(self) -> None:
        self.bank = await start_bank(self.url, self.cast.bank, db=self.db,
                                     operator=self.cast.operator.public_key,
                                     settlement_log=self._log)

    async def stop_bank(self) -> None:
        if self.bank is not None:
            await self.bank.stop()
            self.bank = None

    async def client(self, identity: Identity) -> BankClient:
        bus = await open_bus(self.url, identity)
        self.buses.append(bus)
        return BankClient(bus, self.cast.bank.public_key)

    async def admin_js(self) -> Any:
        bus = await open_bus(self.url, self.cast.operator)
        self.buses.append(bus)
        return bus.nc.jetstream(timeout=5.0)

    async def pay(self, n: int, start: int = 0) -> list[Any]:
        alice = await self.client(self.cast.users[0])
        bob = self.cast.users[1].public_key
        return [await alice.transfer(bob, 1 + i, transfer_id=f"pay-{i}")
                for i in range(start, start + n)]

    async def report(self) -> Any:
        with SqliteStore(self.db, readonly=True) as store:
            return await verify_log(await self.admin_js(), store, self.cast.bank.public_key,
                                    grace_s=0)

    def cli(self, *argv: str) -> int:
        return main(["--nats", self.url, "--home", str(self.home), "--as", "operator", "bank",
                     *argv, "--db", str(self.db)])


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    home = tmp_path / "home"
    keys = KeyStore(home)
    cast = Cast(bank=keys.create("bank"), operator=keys.create("operator"))
    principals = [p if p.role != "operator" or p.name != "operator" else
                  Principal(p.public_key, "operator", "operator",
                            frozenset({"requests", "monitor", "jetstream"}))
                  for p in cast.principals()]
    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(render_principals(principals, port=port, jetstream_dir=str(tmp_path / "js")))
    async with NatsServer(port=port, config=conf) as server:
        w = World(home, tmp_path / "bank.db", cast, server)
        await w.start_bank()
        try:
            op = await w.client(cast.operator)
            for user in cast.users[:2]:
                await (await w.client(user)).open()
                await op.mint(user.public_key, 1_000_000)
            yield w
        finally:
            await w.stop_bank()
            for bus in w.buses:
                with contextlib.suppress(Exception):
                    await bus.close()


async def _run(world: World, *argv: str) -> int:
    return await asyncio.to_thread(world.cli, *argv)


async def test_a_purge_is_tampering_and_republish_restores_the_log(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    await world.pay(20)
    assert world.log is not None and await world.log.drained()
    assert (await world.report()).ok
    assert await _run(world, "verify-log", "--grace", "0") == 0
    capsys.readouterr()
    # the attack of issue 18: a purge (here by an admin; it was a crafted reply subject)
    js = await world.admin_js()
    await js.purge_stream(SETTLEMENTS)
    report = await world.report()
    assert report.tampered and report.counts["missing"] == 20, report.to_dict()
    assert await _run(world, "verify-log", "--grace", "0") == 2
    out = capsys.readouterr().out
    assert "TAMPERING (1)" in out and "a purge" in out and "TAMPERED WITH" in out
    # the bank's key re-publishes what its ledger holds; the log is whole again
    assert await _run(world, "republish", "--grace", "0", "--json") == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["republished"] == 20 and result["ok"], result
    assert await _run(world, "verify-log", "--grace", "0") == 0
    assert "holds every receipt of the ledger" in capsys.readouterr().out


async def test_purging_the_oldest_is_not_passed_off_as_a_limit(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old verify-log said only that older receipts were discarded by limits."""
    await world.pay(12)
    assert world.log is not None and await world.log.drained()
    await (await world.admin_js()).purge_stream(SETTLEMENTS, keep=4)
    report = await world.report()
    assert report.tampered and report.counts["missing"] == 8
    assert await _run(world, "verify-log", "--grace", "0", "--json") == 2
    out = json.loads(capsys.readouterr().out)
    assert out["tampered"] and "a purge" in out["tampering"][0]


async def test_an_interior_delete_and_a_changed_config_are_tampering(world: World) -> None:
    await world.pay(6)
    assert world.log is not None and await world.log.drained()
    js = await world.admin_js()
    await js.delete_msg(SETTLEMENTS, 3)
    report = await world.report()
    assert report.tampered and "deleted from inside" in report.tampering[0]
    await world.stop_bank()
    await world.start_bank()  # the bank's own tail check re-sends nothing this old
    assert world.log is not None and await world.log.drained()
    with pytest.raises(Rejected):  # only the bank's key writes SETTLEMENTS, not even an admin
        await republish(js, report.missing_events)
    bank_bus = await open_bus(world.url, world.cast.bank)
    world.buses.append(bank_bus)
    assert await republish(bank_bus.nc.jetstream(timeout=5.0), report.missing_events) == 1
    assert (await world.report()).ok
    # a roll-up header purges a whole subject with one message: turning it on is tampering
    info = await js.stream_info(SETTLEMENTS)
    info.config.allow_rollup_hdrs = True
    await js.update_stream(info.config)
    report = await world.report()
    assert report.tampered and "allow_rollup_hdrs" in report.tampering[0]


async def test_a_limit_the_operator_set_is_not_tampering(world: World) -> None:
    """SETTLEMENTS made small on purpose (``tycoon streams ensure --settlements-max-bytes``):
    the oldest receipts go by the limit, and verify-log says so and passes."""
    js = await world.admin_js()
    await world.stop_bank()
    await js.delete_stream(SETTLEMENTS)
    await ensure_stream(js, SETTLEMENTS_SPEC.with_(max_bytes=6000))
    await world.start_bank()
    await world.pay(40)
    assert world.log is not None and await world.log.drained()
    info = await js.stream_info(SETTLEMENTS)
    assert info.state.first_seq > 1  # the limit did discard
    report = await world.report()
    assert report.ok and not report.tampered, report.to_dict()
    assert any("discarded by the stream's limits" in n for n in report.notes)


async def test_restore_from_log_re_enters_what_a_backup_lacks(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    await world.pay(5)
    await world.stop_bank()
    backup = world.db.with_suffix(".backup")
    shutil.copy(world.db, backup)
    await world.start_bank()
    await world.pay(7, start=5)
    assert world.log is not None and await world.log.drained()
    await world.stop_bank()
    with SqliteStore(world.db, readonly=True) as store:
        expected = (store.load_accounts(), store.last_seq())
    # the disk is lost; the backup comes back
    for suffix in ("", "-wal", "-shm"):
        Path(f"{world.db}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, world.db)
    assert await _run(world, "restore-from-log", "--bank-key", "bank",
                      "--operator-key", "operator", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["entered"] == 7 and result["stopped"] is None, result
    with SqliteStore(world.db, readonly=True) as store:
        assert (store.load_accounts(), store.last_seq()) == expected
        assert audit(store).ok
    await world.start_bank()
    assert world.log is not None and await world.log.drained()
    assert (await world.report()).ok
    # idempotent: nothing after the ledger's sequence is left to enter
    await world.stop_bank()
    assert await _run(world, "restore-from-log", "--bank-key", "bank",
                      "--operator-key", "operator", "--json") == 0
    assert json.loads(capsys.readouterr().out)["entered"] == 0


async def test_restore_from_log_stops_where_an_event_is_in_no_log(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    await world.pay(3)
    await world.stop_bank()
    backup = world.db.with_suffix(".backup")
    shutil.copy(world.db, backup)
    await world.start_bank()
    carol = world.cast.users[2]  # an account opened after the backup
    await world.pay(2, start=3)
    await (await world.client(carol)).open()  # an open: no receipt, so in no log
    alice = await world.client(world.cast.users[0])
    await alice.transfer(carol.public_key, 5, transfer_id="to-carol")
    assert world.log is not None and await world.log.drained()
    await world.stop_bank()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{world.db}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, world.db)
    assert await _run(world, "restore-from-log", "--bank-key", "bank",
                      "--operator-key", "operator") == 1
    out = capsys.readouterr().out
    assert "re-entered 2 of 3" in out and "STOPPED" in out and "to-carol" in out
    with SqliteStore(world.db, readonly=True) as store:
        assert audit(store).ok
