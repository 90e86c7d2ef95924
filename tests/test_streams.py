"""JetStream: the SETTLEMENTS log against the ledger, the PRICES log for warm start and history."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tycoon.bank.client import BankClient
from tycoon.bank.launch import RunningBank, start_bank
from tycoon.bank.receipt import make_receipt
from tycoon.bank.sqlite_store import SqliteStore
from tycoon.bank.store import EventRow
from tycoon.bus import subjects
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import Identity, KeyStore, subject_id
from tycoon.cli.main import main
from tycoon.log import configure_logging
from tycoon.natsserver import NatsServer
from tycoon.sls.launch import launch as launch_sls
from tycoon.sls.launch import start_sls
from tycoon.sls.service import SLSConfig
from tycoon.streams.config import MSG_ID, PRICES, SETTLEMENTS, settlement_subject
from tycoon.streams.reader import StoredMsg, read_stream
from tycoon.streams.settlements import SettlementLog, msg_id, sqlite_source
from tycoon.streams.verify import compare, verify_log

BANK = Identity.generate()


@pytest.fixture(autouse=True)
def _log_to_this_tests_stderr() -> None:
    # main() binds structlog to the stderr of the test that called it; rebind for this one
    configure_logging("warning")


A, B = Identity.generate().public_key, Identity.generate().public_key


# -- the pure comparison ------------------------------------------------------------


def transfer(seq: int, tid: str, amount: int = 5, ts: int = 1_000) -> EventRow:
    raw = make_receipt(BANK, transfer_id=tid, payer=A, payee=B, amount=amount, memo="",
                       seq=seq, settled_ns=ts)
    return EventRow(seq, "transfer", ts, A, op_id=tid, payer=A, payee=B, amount=amount,
                    receipt=raw)


def stored(seq: int, event: EventRow, **headers: str) -> StoredMsg:
    assert event.receipt is not None
    return StoredMsg(seq, settlement_subject(A, B), event.receipt,
                     headers or {MSG_ID: msg_id(event.receipt)}, 0)


def test_compare_finds_missing_extra_duplicate_and_forged() -> None:
    ledger = [transfer(i, f"t{i}") for i in range(1, 6)]
    good = [stored(i, e) for i, e in enumerate(ledger[:4], start=1)]
    report = compare(good, ledger, BANK.public_key)
    assert report.matched == 4 and report.missing == ["t5"] and not report.ok
    assert compare(good, ledger, BANK.public_key, in_flight_after_ns=1_000).ok

    ghost = transfer(9, "ghost")  # a receipt the ledger does not hold (e.g. an old backup)
    raw = ledger[0].receipt or b""
    forged = StoredMsg(7, settlement_subject(A, B), raw[:-1] + bytes([raw[-1] ^ 1]),
                       {MSG_ID: msg_id(raw)}, 0)
    wrong_id = stored(8, ledger[4], **{MSG_ID: "t5"})  # user text, not the receipt's digest
    records = [*good, stored(5, ledger[0]), stored(6, ghost), forged, wrong_id]
    report = compare(records, ledger, BANK.public_key)
    assert report.duplicates == ["t1"] and report.extra == ["ghost"]
    assert report.counts["invalid"] == 2 and report.counts["missing"] == 0

    other = EventRow(5, "transfer", 1_000, A, op_id="t5", payer=A, payee=B, amount=6,
                     receipt=transfer(5, "t5", amount=6).receipt)
    report = compare([*good, stored(5, ledger[4])], [*ledger[:4], other], BANK.public_key)
    assert report.counts["invalid"] == 1 and "differs" in report.invalid[0]


def test_compare_of_a_truncated_stream_starts_at_its_oldest_receipt() -> None:
    ledger = [transfer(i, f"t{i}") for i in range(1, 11)]
    tail = [stored(i, e) for i, e in enumerate(ledger[6:], start=7)]
    report = compare(tail, ledger, BANK.public_key, truncated=True)
    assert report.ok and report.matched == 4 and report.truncated_before_seq == 7


# -- the bank's settlement log over a real JetStream server ---------------------------


@pytest.fixture
async def js_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    async with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:
        yield server


class Bank:
    """A bank service (with or without a settlement log), its operator and two users."""

    def __init__(self, url: str, db: Path, bank: Identity, operator: Identity) -> None:
        self.url, self.db, self.identity, self.operator = url, db, bank, operator
        self.buses: list[Bus] = []
        self.running: RunningBank | None = None
        self.log: SettlementLog | None = None

    def _log(self, bus: Bus) -> SettlementLog:
        self.log = SettlementLog(bus.nc, self.identity.public_key, sqlite_source(self.db),
                                 window=8, retry_s=(0.1, 0.5))
        return self.log

    async def start(self, *, with_log: bool = True) -> None:
        self.log = None
        self.running = await start_bank(self.url, self.identity, db=self.db,
                                        operator=self.operator.public_key,
                                        settlement_log=self._log if with_log else None)

    async def stop(self) -> None:
        assert self.running is not None
        await self.running.stop()
        for bus in self.buses:
            await bus.close()
        self.buses = []

    async def client(self, identity: Identity) -> BankClient:
        bus = await open_bus(self.url, identity)
        self.buses.append(bus)
        return BankClient(bus, self.identity.public_key)

    async def users(self, n: int, amount: int = 1_000_000) -> list[BankClient]:
        op = await self.client(self.operator)
        out = []
        for _ in range(n):
            user = await self.client(Identity.generate())
            await user.open()
            await op.mint(user.account, amount)
            out.append(user)
        return out


async def verify(url: str, db: Path, bank_key: str, grace_s: float = 0.0) -> Any:
    bus = await open_bus(url, Identity.generate())
    try:
        with SqliteStore(db, readonly=True) as store:
            return await verify_log(bus.nc.jetstream(), store, bank_key, grace_s=grace_s)
    finally:
        await bus.close()


@pytest.mark.nats
async def test_every_receipt_is_logged_once_and_verify_log_agrees(
    js_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    keys = KeyStore(home)
    bank = Bank(js_server.url, tmp_path / "bank.db", keys.create("bank"), keys.create("operator"))
    await bank.start()
    try:
        alice, bob = await bank.users(2)
        receipts = await asyncio.gather(*(alice.transfer(bob.account, 10 + i, transfer_id=f"x{i}")
                                          for i in range(40)))
        again = await alice.transfer(bob.account, 10, transfer_id="x0")  # a retry
        assert again.raw == receipts[0].raw
        assert bank.log is not None and await bank.log.drained()
        report = await verify(js_server.url, bank.db, bank.identity.public_key)
        assert report.ok, report.to_dict()
        assert report.matched == report.stream_messages == 40
        # the CLI says the same, in JSON and with its exit code
        code = await asyncio.to_thread(main, ["--nats", js_server.url, "--home", str(home),
                                              "bank", "verify-log", "--db", str(bank.db),
                                              "--json"])
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert code == 0 and out["ok"] and out["matched"] == 40
        # publishing a receipt again within the duplicate window stores nothing new
        js = bank.buses[0].nc.jetstream()
        ack = await js.publish(settlement_subject(alice.account, bob.account), receipts[3].raw,
                               headers={MSG_ID: msg_id(receipts[3].raw)})
        assert ack.duplicate
        # a hole in the stream is reported as tampering (limits only discard the oldest)
        await js.delete_msg(SETTLEMENTS, 5)
        report = await verify(js_server.url, bank.db, bank.identity.public_key)
        assert report.counts["missing"] == 1 and report.tampered and not report.ok
        code = await asyncio.to_thread(main, ["--nats", js_server.url, "--home", str(home),
                                              "bank", "verify-log", "--db", str(bank.db),
                                              "--grace", "0"])
        out, err = capsys.readouterr()
        assert code == 2 and "MISSING (1)" in out and "TAMPERING (1)" in out, (out, err)
    finally:
        await bank.stop()
    # a restarted bank checks the stream's tail and re-sends nothing it holds (the deleted
    # message is older than the tail it checks, and its id is still in the duplicate window)
    await bank.start()
    try:
        assert bank.log is not None and await bank.log.drained()
        assert bank.log.counters["backfilled"] == 0
        report = await verify(js_server.url, bank.db, bank.identity.public_key)
        assert report.missing == ["x4"] and report.matched == 39 and not report.duplicates
    finally:
        await bank.stop()


@pytest.mark.nats
async def test_receipts_settled_without_the_log_are_backfilled_or_repaired(
    js_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the bank's key in the key store: --repair publishes as the bank (only it writes the log)
    bank = Bank(js_server.url, tmp_path / "bank.db", KeyStore(tmp_path).create("bank"),
                Identity.generate())
    await bank.start(with_log=False)  # as if the bank died between its fsync and the log
    try:
        alice, bob = await bank.users(2)
        for i in range(30):
            await alice.transfer(bob.account, 1 + i)
    finally:
        await bank.stop()
    await bank.start()
    try:
        assert bank.log is not None and await bank.log.drained()
        assert bank.log.counters["backfilled"] == 30
        report = await verify(js_server.url, bank.db, bank.identity.public_key)
        assert report.ok and report.matched == 30
    finally:
        await bank.stop()
    # an operator closes a gap by hand: verify-log --repair re-publishes from the ledger
    await bank.start(with_log=False)
    try:
        alice, bob = await bank.users(2)
        for i in range(10):
            await alice.transfer(bob.account, 1 + i)
    finally:
        await bank.stop()
    argv = ["--nats", js_server.url, "--home", str(tmp_path), "bank", "verify-log",
            "--db", str(bank.db), "--grace", "0", "--json"]
    assert await asyncio.to_thread(main, argv) == 1
    assert json.loads(capsys.readouterr().out)["counts"]["missing"] == 10
    assert await asyncio.to_thread(main, [*argv, "--repair"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["matched"] == 40 and "republished 10" in err


@pytest.mark.nats
async def test_the_bank_settles_without_jetstream_and_catches_up_when_it_returns(
    tmp_path: Path,
) -> None:
    store = tmp_path / "js"
    server = NatsServer(jetstream=False)  # JetStream off: the log cannot be written
    await server.start()
    bank = Bank(server.url, tmp_path / "bank.db", Identity.generate(), Identity.generate())
    try:
        await bank.start()
        alice, bob = await bank.users(2)
        for i in range(20):
            await alice.transfer(bob.account, 1 + i)  # never blocked by the log
        assert bank.log is not None and not await bank.log.drained(0.3)
        assert bank.log.counters["resync_failed"] >= 1
        # JetStream comes back (same port): the log catches up from the ledger on its own
        await server.stop()
        server.jetstream, server.store_dir = True, str(store)
        await server.start()
        for i in range(5):
            await alice.transfer(bob.account, 100 + i)
        assert await bank.log.drained(15)
        report = await verify(server.url, bank.db, bank.identity.public_key)
        assert report.ok and report.matched == 25, report.to_dict()
    finally:
        await bank.stop()
        await server.stop()


# -- PRICES: SLS warm start and tycoon history -----------------------------------------


def price_body(host: Identity, seq: int, price: float, hb: float = 5.0) -> dict[str, Any]:
    cap = 2000
    return {"host": subject_id(host.public_key), "seq": seq, "heartbeat_s": hb,
            "name": "node", "driver": "sim",
            "resources": {"cpu": {"capacity": cap, "price": price, "unit_price": price / cap,
                                  "utilization": 0.5, "bidders": 1}}}


@pytest.mark.nats
async def test_sls_warm_starts_from_prices_and_history_reads_them(
    js_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with launch_sls(js_server.url, None, SLSConfig()) as first:  # creates PRICES
        assert first.service.warm.get("accepted", 0) == 0
    hosts = [Identity.generate() for _ in range(2)]
    buses = [await open_bus(js_server.url, h) for h in hosts]
    for seq in range(1, 11):
        for host, bus in zip(hosts, buses, strict=True):
            await bus.publish(subjects.price(subject_id(host.public_key)), "price",
                              price_body(host, seq, 100.0 * seq))
    # a forgery (another key speaking for host 0) lands in the log too, and is refused
    mallory = await open_bus(js_server.url, Identity.generate())
    await mallory.publish(subjects.price(subject_id(hosts[0].public_key)), "price",
                          price_body(hosts[0], 99, 1.0))
    for bus in [*buses, mallory]:
        await bus.flush()
        await bus.close()
    probe = await open_bus(js_server.url, Identity.generate())
    js = probe.nc.jetstream()
    for _ in range(50):
        if (await js.stream_info(PRICES)).state.messages == 21:
            break
        await asyncio.sleep(0.05)
    assert [m.seq async for m in read_stream(js, PRICES, start_seq=20)] == [20, 21]
    await probe.close()

    running = await start_sls(js_server.url, None, SLSConfig())
    sls = running.service
    try:
        assert sls.warm["accepted"] == 20 and sls.warm["forbidden"] == 1, sls.warm
        now = time.time_ns()
        assert len(sls.registry.live_hosts(now)) == 2
        detail = sls.registry.host(subject_id(hosts[0].public_key), now)
        assert detail["updates"] == 10 and detail["seq"] == 10
        minute = detail["resources"]["cpu"]["statistics"]["windows"]["minute"]
        assert minute["count"] == 10 and minute["mean"] == pytest.approx(550.0)
    finally:
        await running.stop()

    home = tmp_path / "home"
    png = tmp_path / "plot.png"
    host = subject_id(hosts[0].public_key)
    argv = ["--nats", js_server.url, "--home", str(home), "history", host, "--since", "10m"]
    code = await asyncio.to_thread(main, [*argv, "--json", "--plot", str(png)])
    body = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and [p["seq"] for p in body["points"]] == list(range(1, 11))
    assert body["refused"] == {"forbidden": 1}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code = await asyncio.to_thread(main, [*argv, "--limit", "3"])
    out = capsys.readouterr().out
    assert code == 0 and "10 price updates" in out and len(out.strip().splitlines()) == 6
    code = await asyncio.to_thread(main, ["--nats", js_server.url, "--home", str(home),
                                          "streams", "info", "--json"])
    names = {s["name"]: s for s in json.loads(capsys.readouterr().out)["streams"]}
    assert code == 0 and names["PRICES"]["messages"] == 21 and "missing" in names["SETTLEMENTS"]


# -- tampering or a limit (pure) ------------------------------------------------------


def test_config_drift_flags_what_can_drop_or_hide_receipts() -> None:
    import dataclasses

    from nats.js.api import RetentionPolicy, StorageType

    from tycoon.streams.config import SETTLEMENTS_SPEC
    from tycoon.streams.verify import config_drift

    ours = SETTLEMENTS_SPEC.to_config()
    assert config_drift(ours) == ([], [])
    assert config_drift(dataclasses.replace(ours, num_replicas=3)) == ([], [])  # an operator's
    for change, word in (({"subjects": ["tycoon.settlement.x.>"]}, "subjects"),
                         ({"retention": RetentionPolicy.WORK_QUEUE}, "retention"),
                         ({"storage": StorageType.MEMORY}, "storage"),
                         ({"allow_rollup_hdrs": True}, "allow_rollup_hdrs"),
                         ({"max_msgs": 10}, "max_msgs"),
                         ({"max_msgs_per_subject": 1}, "max_msgs_per_subject"),
                         ({"max_age": 60.0}, "max_age")):
        bad, _ = config_drift(dataclasses.replace(ours, **change))
        assert len(bad) == 1 and word in bad[0], (change, bad)
    bad, notes = config_drift(dataclasses.replace(ours, max_bytes=1 << 20))
    assert not bad and "max_bytes" in notes[0]


def test_judge_truncation_weighs_each_limit() -> None:
    import dataclasses

    from nats.js.api import StreamState

    from tycoon.streams.config import SETTLEMENTS_SPEC
    from tycoon.streams.verify import judge_truncation

    cfg = SETTLEMENTS_SPEC.to_config()
    state = StreamState(messages=10, bytes=5_000, first_seq=21, last_seq=30, consumer_count=0)
    lost = [transfer(i, f"t{i}", ts=i * 10**9) for i in range(1, 21)]
    now = 100 * 10**9
    assert judge_truncation(cfg, state, [], now) is not None  # nothing lost: nothing to say
    assert judge_truncation(cfg, state, lost, now) is None  # 2 GiB kept 20 receipts: a purge
    assert "max_bytes" in judge_truncation(dataclasses.replace(cfg, max_bytes=10_000), state,
                                           lost, now)
    assert "max_msgs" in judge_truncation(dataclasses.replace(cfg, max_msgs=25), state, lost,
                                          now)
    assert "max_age" in judge_truncation(dataclasses.replace(cfg, max_age=90.0), state, lost,
                                         now)
    assert judge_truncation(dataclasses.replace(cfg, max_age=500.0), state, lost, now) is None
