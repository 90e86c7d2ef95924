"""An auctioneer restart keeps its jobs running and re-adopts them (simulated driver: real,
UNCONFINED processes of this user), with the exit status their shims wrote; a record
pointing at someone else's pid adopts nothing.
The same on the real kernel: tests/test_jobs_restart_cgroups.py."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from jobs_kit import JobMarket, job_market, until

from tycoon.agent.bag import TaskRunner
from tycoon.agent.journal import Journal
from tycoon.agent.tasks import DONE, RUNNING, Bag, Seat
from tycoon.auctioneer.jobhost import JobConfig
from tycoon.auctioneer.jobs import Job, Limits
from tycoon.auctioneer.jobstate import to_record
from tycoon.auctioneer.launch import start_auctioneer
from tycoon.bus import subjects
from tycoon.bus.connection import open_bus
from tycoon.bus.keys import subject_id
from tycoon.messages.jobs import JobExit, JobOutput
from tycoon.vmm import procinfo
from tycoon.vmm.simulated import SimulatedDriver

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]
PY = sys.executable


@pytest.fixture
async def market(nats_url: str, tmp_path: Path) -> AsyncIterator[JobMarket]:
    config = JobConfig(root=tmp_path / "jobs", limits=Limits(grace_s=0.5))
    async with job_market(nats_url, tmp_path, SimulatedDriver(preset="small"), config) as m:
        yield m


async def restart(market: JobMarket, tmp: Path, between: Callable[[], Any] | None = None,
                  driver: Any = None) -> None:
    """Stop the auctioneer (its jobs keep running), then start it again on the same store
    (with ``driver``: a new driver object, as a new process would make)."""
    old = market.auctioneer
    await old.stop()
    if between is not None:
        between()
    market.auctioneer = await start_auctioneer(
        market.url, market.host_id, bank_key=market.bank_id.public_key,
        driver=driver or old.service.driver, store_path=tmp / "host.db", name="h1", tick_s=0.1,
        heartbeat_s=0.5, jobs=old.service.jobs.config if old.service.jobs else None)


def fake_record(market: JobMarket, account: str, job_id: str, pid: int, uid: int = -1) -> None:
    """A record of a 'running job' whose pid is someone else's — with that process's true
    start time, as an attacker who could write the record would give it."""
    stat = procinfo.proc_stat(pid)
    assert stat is not None
    job = Job(job_id, account, ("sleep", "60"), 1, pid=pid, start_ticks=stat.start_ticks,
              uid=uid)
    market.jobhost.state.save(job_id, to_record(job, []))


async def test_a_running_job_survives_a_restart_without_losing_output(
        market: JobMarket, tmp_path: Path) -> None:
    user = await market.user()
    await user.fund_and_bid(10)
    code = "import time\nfor i in range(40):\n print(i, flush=True); time.sleep(0.03)\n"
    reply, stream, sub = await user.jobs.start([PY, "-c", code])
    events: list[Any] = []
    iterator = stream.events(timeout=15).__aiter__()
    events.append(await iterator.__anext__())  # some output went out before the restart
    await restart(market, tmp_path, between=lambda: time.sleep(0.2))  # it writes on
    listed = (await user.jobs.jobs())["jobs"]
    assert [(j["job"], j.get("adopted")) for j in listed] == [(reply["job"], True)]
    async for event in iterator:
        events.append(event)
    await sub.unsubscribe()
    chunks = [e for e in events if isinstance(e, JobOutput)]
    done = events[-1]
    assert isinstance(done, JobExit) and done.status == 0  # its shim's file: the real one
    assert done.cpu_s > 0.0 and done.peak_memory > 0
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert b"".join(c.data for c in chunks).split() == [str(i).encode() for i in range(40)]
    assert not list(market.jobhost.state.path.glob(f"{reply['job']}.std*"))  # files gone


async def test_a_job_that_ended_while_the_host_was_down_is_reported(
        market: JobMarket, tmp_path: Path) -> None:
    user = await market.user()
    await user.fund_and_bid(10)
    _, stream, sub = await user.jobs.start([PY, "-c", "import time; time.sleep(0.3); "
                                            "print('late')"])
    await restart(market, tmp_path, between=lambda: time.sleep(0.6))
    events = [e async for e in stream.events(timeout=10)]
    await sub.unsubscribe()
    assert b"".join(e.data for e in events if isinstance(e, JobOutput)) == b"late\n"
    assert isinstance(events[-1], JobExit) and events[-1].status == 0  # as its shim saw it


async def test_a_record_pointing_at_a_foreign_pid_is_never_adopted_or_signalled(
        market: JobMarket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = await market.user()
    await user.fund_and_bid(10)
    await user.jobs.run([PY, "-c", "pass"])  # the host's state exists, from this boot
    fake_record(market, user.key, "zz1", 1)  # init
    fake_record(market, user.key, "zz2", os.getpid())  # this test: same uid, alive
    strangers, signalled = (1, os.getpid()), []

    def guard(real: Callable[[int, int], None]) -> Callable[[int, int], None]:
        def send(pid: int, sig: int) -> None:  # a stranger is recorded, never signalled
            signalled.append(pid) if pid in strangers else real(pid, sig)
        return send

    for name in ("kill", "killpg"):
        monkeypatch.setattr(os, name, guard(getattr(os, name)))
    await restart(market, tmp_path)
    for fake in ("zz1", "zz2"):
        await until(lambda fake=fake: market.jobhost.table.jobs[fake].state == "exited")
    listed = {j["job"]: j for j in (await user.jobs.jobs())["jobs"]}
    assert listed["zz1"]["state"] == listed["zz2"]["state"] == "exited"
    assert listed["zz1"]["status"] is None and listed["zz2"]["status"] is None
    result = await user.jobs.signal("zz2", "KILL")  # an exited job: nothing is sent
    assert result["state"] == "exited"
    await user.host.refund()  # ends the account's jobs: none of them is a stranger
    await until(lambda: not market.jobhost.table.running(user.key))
    assert signalled == []


async def test_the_last_chunks_are_republished_with_their_seq_and_bytes(
        market: JobMarket, tmp_path: Path) -> None:
    """A host killed after writing a record and before publishing its chunks sends them on
    its next start: the record's last batch goes out again, same seq, same bytes (a reader
    that had them drops the copies)."""
    user = await market.user()
    await user.fund_and_bid(10)
    _, stream, sub = await user.jobs.start([PY, "-c", "import time; print('one', flush=True); "
                                            "time.sleep(30)"])
    first = await stream.events(timeout=10).__anext__()
    assert isinstance(first, JobOutput) and first.data == b"one\n"
    seen: list[JobOutput] = []

    async def raw(msg: Any) -> None:
        if msg.kind == "job.output":
            seen.append(JobOutput.from_body(msg.body))

    spy_bus = await open_bus(market.url, user.ident)  # one subscription per bus
    market.buses.append(spy_bus)
    spy = await spy_bus.subscribe(subjects.job_all(subject_id(user.key)), raw)
    await spy_bus.flush()
    await restart(market, tmp_path)
    await until(lambda: seen)
    assert [(c.seq, c.data) for c in seen] == [(first.seq, first.data)]
    await spy.unsubscribe()
    await sub.unsubscribe()


async def test_a_frozen_job_stays_frozen_across_a_restart_and_thaws_when_funded(
        market: JobMarket, tmp_path: Path) -> None:
    user = await market.user()
    await user.fund_and_bid(1, duration="1s")
    reply, stream, sub = await user.jobs.start([PY, "-c", "import time; time.sleep(60)"])
    await until(lambda: user.key in market.jobhost.frozen, timeout=15)
    await restart(market, tmp_path)
    state = Path(f"/proc/{reply['pid']}/stat")
    assert (await user.jobs.jobs())["frozen"] is True
    assert state.read_text().split(") ")[1][0] == "T"  # still stopped (the simulated freezer)
    await user.fund_and_bid(1)
    await until(lambda: user.key not in market.jobhost.frozen, timeout=10)
    assert state.read_text().split(") ")[1][0] != "T"
    await user.jobs.signal(reply["job"], "KILL")  # through the restarted host
    events = [e async for e in stream.events(timeout=10)]
    await sub.unsubscribe()
    assert isinstance(events[-1], JobExit) and events[-1].status == -9  # the signal


async def test_a_bag_task_whose_host_restarted_mid_run_ends_with_its_real_status(
        market: JobMarket, tmp_path: Path) -> None:
    """The agent's side: a task's job re-adopted by a restarted host ends with the status
    its shim wrote (3 here) — done, not a failure of unknown status."""
    user = await market.user()
    await user.fund_and_bid(10)
    bag = Bag.of([(1, "3")])
    code = "import sys, time; time.sleep(0.8); sys.exit(int(sys.argv[1]))"
    run = TaskRunner(user.jobs.bus, Journal(tmp_path / "agent.db"), bag, [PY, "-c", code, "{}"],
                     tmp_path / "out")
    run.start(lambda cores: [], lambda: None)  # its one subscription, then the moves
    await until(lambda: run._sub is not None)
    run.carry(bag.hold({market.host: Seat(1, 1.0)}, 0.0) + bag.place(0.0))
    await until(lambda: bag.tasks[1].state == RUNNING)
    await restart(market, tmp_path)
    assert [j.adopted for j in market.jobhost.table.jobs.values()] == [True]  # mid-run
    await until(lambda: bag.tasks[1].state == DONE, timeout=15)
    assert bag.tasks[1].status == 3
    assert json.loads((tmp_path / "out" / "1" / "exit.json").read_text())["status"] == 3
    await run.stop()


class FlakyBus:
    """The host's bus, refusing its first ``fails`` job events (a full buffer, a
    disconnect), then publishing as the real one."""

    def __init__(self, real: Any, fails: int) -> None:
        self.real, self.fails, self.refused = real, fails, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def publish(self, subject: str, kind: str, body: Any) -> None:
        if kind.startswith("job.") and self.refused < self.fails:
            self.refused += 1
            raise ConnectionError("nats: outbound buffer limit exceeded")
        await self.real.publish(subject, kind, body)


async def test_the_watcher_survives_publish_errors_and_resends_with_the_same_seq(
        market: JobMarket) -> None:
    user = await market.user()
    await user.fund_and_bid(10)
    flaky = FlakyBus(market.jobhost.bus, fails=4)
    market.jobhost.bus = flaky  # type: ignore[assignment]
    code = "import time\nfor i in range(5):\n print(i, flush=True); time.sleep(0.05)\n"
    chunks, done = await user.jobs.run([PY, "-c", code])
    assert flaky.refused == 4
    assert b"".join(c.data for c in chunks).split() == [str(i).encode() for i in range(5)]
    assert [c.seq for c in chunks] + [done.seq] == list(range(1, len(chunks) + 2))
    assert done.status == 0
