"""The task runner and the journal's task and refund rows, without a server: a fake job
client plays the host (including a hostile one)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tycoon.agent.bag import TaskRunner
from tycoon.agent.journal import Journal
from tycoon.agent.tasks import DONE, QUEUED, RUNNING, Bag, Seat, Task
from tycoon.bus.envelope import Message
from tycoon.bus.keys import Identity, subject_id
from tycoon.errors import Rejected
from tycoon.messages.jobs import HostExecReply, HostJobsReply, HostSignalReply, JobExit, JobOutput

ME = Identity.generate().public_key
OTHER = Identity.generate().public_key


def bus() -> Any:
    return SimpleNamespace(identity=SimpleNamespace(public_key=ME))


class FakeHost:
    """A host's job endpoints: ``account`` is whom its replies name (ours, unless hostile)."""

    def __init__(self, account: str = ME) -> None:
        self.account = account
        self.started: list[list[str]] = []
        self.signals: list[tuple[str, str]] = []
        self.listed: list[dict[str, Any]] = []

    async def exec(self, argv: list[str], **options: Any) -> dict[str, Any]:
        self.started.append(argv)
        self.options = options
        job = f"j{len(self.started)}"
        return HostExecReply(job, self.account, f"tycoon.job.x.{job}.out", 100, -1,
                             "running").to_body()

    async def jobs(self) -> dict[str, Any]:
        return HostJobsReply(self.account, self.listed, 0.0, 0, False, cores=2).to_body()

    async def signal(self, job: str, sig: str) -> dict[str, Any]:
        self.signals.append((job, sig))
        return HostSignalReply(job, 9, "running").to_body()


def exit_job(run: TaskRunner, job: str, status: int) -> None:
    """The host's ``job.exit`` reaching the runner's stream for ``job``."""
    run._streams[("h", job)]._ready.put_nowait(
        JobExit(job=job, seq=1, status=status, cpu_s=0.1, peak_memory=1000, dropped=0))


def runner(tmp_path: Path, host: FakeHost, bag: Bag, journal: Journal | None = None) -> TaskRunner:
    return TaskRunner(bus(), journal or Journal(tmp_path / "j.db"), bag, ["echo", "{}"],
                      tmp_path / "out", client=lambda _b, _h: host)  # type: ignore[arg-type,return-value]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


# -- the journal ------------------------------------------------------------------------------


def refund_ids(journal: Journal) -> set[tuple[str, str]]:
    """``(host, refund id)`` of every refund the journal file holds."""
    return {(str(h), str(r)) for h, r in journal.db.execute("SELECT host, refund_id FROM refunds")}


def test_refunds_are_keyed_by_host_and_id(tmp_path: Path) -> None:
    """Attack: a host reuses the refund id another host paid us under. Keyed by the id
    alone, that real refund would not count; keyed by (host, id) both count once."""
    journal = Journal(tmp_path / "j.db")
    assert journal.record_refunds("a", "m1", [("r1", 100, None)]) == 100
    assert journal.record_refunds("b", "m2", [("r1", 70, None)]) == 70
    assert journal.record_refunds("a", "m3", [("r1", 100, None)]) == 0  # learnt twice
    assert refund_ids(journal) == {("a", "r1"), ("b", "r1")}


def test_a_journal_keyed_by_refund_id_alone_is_moved_to_the_new_key(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE refunds (refund_id TEXT PRIMARY KEY, host TEXT NOT NULL, "
                     "amount INTEGER NOT NULL, move_id TEXT NOT NULL, receipt BLOB);"
                     "INSERT INTO refunds VALUES ('r1', 'a', 5, 'm1', NULL);")
    db.close()
    journal = Journal(path)
    assert refund_ids(journal) == {("a", "r1")}
    assert journal.record_refunds("b", "m2", [("r1", 7, None)]) == 7


def test_task_rows_round_trip_and_tampered_ones_are_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    journal.save_task(Task(3, "x y", state=RUNNING, host="h1", job="j1", runs=2))
    assert journal.tasks() == [Task(3, "x y", None, RUNNING, "h1", "j1", None, 2)]
    for sql in ("UPDATE tasks SET state = 'bogus'",
                "UPDATE tasks SET state = 'done', status = NULL",
                "UPDATE tasks SET job = '../../etc'",
                "UPDATE tasks SET idx = -1"):
        journal.db.execute("DELETE FROM tasks")
        journal.save_task(Task(3, "x y", state=RUNNING, host="h1", job="j1", runs=2))
        journal.db.execute(sql)
        with pytest.raises(Rejected, match="tampered"):
            journal.tasks()


def test_a_resume_refuses_another_task_file_and_reruns_a_done_task_without_its_exit(
        tmp_path: Path) -> None:
    bag = Bag.of([(1, "a"), (2, "b")])
    first = runner(tmp_path, FakeHost(), bag)
    assert first.resume() == 0
    for index in (1, 2):
        first.journal.save_task(Task(index, bag.tasks[index].arg, state=DONE, host="h",
                                     job=f"j{index}", status=0, runs=1))
    (tmp_path / "out" / "1").mkdir(parents=True)
    (tmp_path / "out" / "1" / "exit.json").write_text(json.dumps({"status": 0, "job": "j1"}))
    # tampering: task 2 is marked done but nothing was collected: it runs again
    again = runner(tmp_path, FakeHost(), Bag.of([(1, "a"), (2, "b")]), first.journal)
    assert again.resume() == 1
    assert again.bag.tasks[1].state == DONE and again.bag.tasks[2].state == QUEUED
    # another task list (or a journal whose argument was edited) is refused
    with pytest.raises(Rejected, match="another command, task file or bundle"):
        runner(tmp_path, FakeHost(), Bag.of([(1, "a"), (2, "c")]), first.journal).resume()
    first.journal.db.execute("UPDATE tasks SET arg = 'rm -rf' WHERE idx = 2")
    with pytest.raises(Rejected, match="tampered"):
        runner(tmp_path, FakeHost(), Bag.of([(1, "a"), (2, "b")]), first.journal).resume()


# -- the runner ---------------------------------------------------------------------------------


async def test_outputs_are_collected_and_a_done_task_is_journalled(tmp_path: Path) -> None:
    host = FakeHost()
    bag = Bag.of([(1, "a")])
    run = runner(tmp_path, host, bag)
    run.carry(bag.hold({"h": Seat(1, 1.0)}, 0.0) + bag.place(0.0))
    await settle()
    assert host.started == [["echo", "a"]] and bag.tasks[1].state == RUNNING
    exit_job(run, "j1", 0)
    await settle()
    record = json.loads((tmp_path / "out" / "1" / "exit.json").read_text())
    assert record["status"] == 0 and record["host"] == "h" and record["job"] == "j1"
    assert run.journal.tasks()[0].state == DONE and bag.finished


async def test_a_host_answering_with_another_accounts_job_gets_no_task(tmp_path: Path) -> None:
    """Attack: the exec reply names a job of another account (whose exit and output the
    host could then feed us). The task is not taken as running there, nothing is
    collected, and the host cools down."""
    host = FakeHost(account=OTHER)
    bag = Bag.of([(1, "a")])
    run = runner(tmp_path, host, bag)
    run.carry(bag.hold({"h": Seat(1, 1.0)}, 0.0) + bag.place(0.0))
    await settle()
    assert bag.tasks[1].state == QUEUED and "h" in bag.cooling
    assert not (tmp_path / "out" / "1" / "exit.json").exists()
    # and its job listing is not taken for ours either
    with pytest.raises(Rejected):
        await run._listed("h")


async def test_a_task_in_flight_at_a_crash_is_looked_for_killed_then_queued(
        tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    bag = Bag.of([(1, "a"), (2, "b")])
    journal.set("tasks_digest", "")  # (replaced below by the first resume's)
    journal.db.execute("DELETE FROM meta WHERE key = 'tasks_digest'")
    journal.save_task(Task(1, "a", state=RUNNING, host="h", job="j7", runs=1))
    journal.save_task(Task(2, "b", state="starting", host="h", runs=1))
    host = FakeHost()
    host.listed = [{"job": "j7", "state": "running", "argv": ["echo", "a"]},
                   {"job": "j8", "state": "running", "argv": ["echo", "b"]},
                   {"job": "j9", "state": "running", "argv": ["other", "work"]}]
    run = runner(tmp_path, host, bag, journal)
    run.resume()
    run.carry(run._restored)
    await asyncio.sleep(0.05)
    # j7 by its id, j8 by its argv (a start whose reply was lost); j9 is not ours to touch
    assert sorted(host.signals) == [("j7", "KILL"), ("j8", "KILL")]
    assert all(t.state == "stopping" for t in bag.tasks.values())
    host.listed = [{"job": "j7", "state": "exited"}, {"job": "j8", "state": "exited"},
                   {"job": "j9", "state": "running", "argv": ["other", "work"]}]
    await asyncio.sleep(0.5)
    assert all(t.state == QUEUED for t in bag.tasks.values())
    await run.stop()


async def test_every_task_starts_with_the_bundle_and_its_result_is_pulled(
        tmp_path: Path) -> None:
    if "result" not in {f.name for f in dataclasses.fields(JobExit)}:
        pytest.skip("job.exit has no result field in this tree")
    host, pulled = FakeHost(), []

    async def pull(_bus: Any, digest: str, dest: Path) -> Path:
        pulled.append((digest, dest))
        dest.mkdir(parents=True)
        return dest

    bag = Bag.of([(1, "a")])
    run = TaskRunner(bus(), Journal(tmp_path / "j.db"), bag, ["run.sh", "{}"], tmp_path / "out",
                     client=lambda _b, _h: host, bundle="ab" * 32, collect=["out.txt"],  # type: ignore[arg-type,return-value]
                     pull=pull)
    run.carry(bag.hold({"h": Seat(1, 1.0)}, 0.0) + bag.place(0.0))
    await settle()
    assert host.options["bundle"] == "ab" * 32 and host.options["collect"] == ["out.txt"]
    run._streams[("h", "j1")]._ready.put_nowait(JobExit(
        job="j1", seq=1, status=0, cpu_s=0.1, peak_memory=1, dropped=0,
        result="cd" * 32))  # type: ignore[call-arg]
    await settle()
    assert pulled == [("cd" * 32, tmp_path / "out" / "1" / "result")]
    record = json.loads((tmp_path / "out" / "1" / "exit.json").read_text())
    assert record["result"] == "cd" * 32 and bag.finished


# -- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize("content, says", [
    (b"ok\nbad\x00arg\n", "NUL"),
    (b"x" * (70 * 1024), "bytes"),
    (b"\n\n", "no task"),
])
def test_agent_run_refuses_a_hostile_task_file_before_connecting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, says: str) -> None:
    from tycoon.cli.main import main

    tasks = tmp_path / "tasks.txt"
    tasks.write_bytes(content)
    code = main(["--nats", "nats://127.0.0.1:1", "--home", str(tmp_path / "home"), "agent",
                 "run", "--budget", "1", "--deadline", "1m", "--bank", Identity.generate()
                 .public_key, "--state", str(tmp_path / "agents"), "--tasks", str(tasks),
                 "--", "echo", "{}"])
    err = capsys.readouterr().err
    assert code != 0 and says in err and "connect" not in err.lower(), err
    assert not (tmp_path / "tasks.txt.out").exists()


async def test_a_start_whose_answer_timed_out_is_found_and_killed_before_a_rerun(
        tmp_path: Path) -> None:
    host = FakeHost()

    async def exec_lost(argv: list[str], **_: Any) -> dict[str, Any]:
        host.listed.append({"job": "j1", "state": "running", "argv": argv})
        raise Rejected("timeout", "no reply in time")  # ...but the host started it

    host.exec = exec_lost  # type: ignore[method-assign]
    bag = Bag.of([(1, "a")])
    run = runner(tmp_path, host, bag)
    run.carry(bag.hold({"h": Seat(1, 1.0)}, 0.0) + bag.place(0.0))
    await settle()
    assert host.signals == [("j1", "KILL")] and bag.tasks[1].state == "stopping"
    host.listed[0]["state"] = "exited"
    await asyncio.sleep(0.4)
    assert bag.tasks[1].state == QUEUED  # gone: now it may run again
    await run.stop()


def job_msg(host: Identity, job: str, kind: str, body: dict[str, Any]) -> Message:
    event = "exit" if kind == "job.exit" else "out"
    return Message(kind, f"tycoon.job.{subject_id(ME)}.{job}.{event}", b"", host.public_key,
                   0, b"", body, b"")


async def test_a_host_naming_another_hosts_job_id_takes_nothing_from_it(
        tmp_path: Path) -> None:
    """Attack: host B answers exec with the job id host A gave another task (and sends an
    exit for it). Each task's output and exit come only from its own host."""
    a, b = Identity.generate(), Identity.generate()
    ha, hb = subject_id(a.public_key), subject_id(b.public_key)
    hosts = {ha: FakeHost(), hb: FakeHost()}  # both number their jobs j1, j2, ...
    bag = Bag.of([(1, "x"), (2, "y")])
    run = TaskRunner(bus(), Journal(tmp_path / "j.db"), bag, ["echo", "{}"], tmp_path / "out",
                     client=lambda _b, h: hosts[h])  # type: ignore[arg-type,return-value]
    run.carry(bag.hold({ha: Seat(1, 1.0), hb: Seat(1, 1.0)}, 0.0) + bag.place(0.0))
    await settle()
    assert {t.job for t in bag.tasks.values()} == {"j1"}
    on_a = next(t for t in bag.tasks.values() if t.host == ha)
    await run._on_job(job_msg(b, "j1", "job.output",
                              {"job": "j1", "seq": 1, "stream": "stdout", "data": b"forged"}))
    await run._on_job(job_msg(a, "j1", "job.output",
                              {"job": "j1", "seq": 1, "stream": "stdout", "data": b"real"}))
    await run._on_job(job_msg(a, "j1", "job.exit", {"job": "j1", "seq": 2, "status": 0,
                                                    "cpu_s": 0.0, "peak_memory": 0,
                                                    "dropped": 0}))
    await settle()
    assert (tmp_path / "out" / str(on_a.index) / "stdout").read_bytes() == b"real"
    assert on_a.state == DONE
    assert next(t for t in bag.tasks.values() if t.host == hb).state == RUNNING


async def test_a_host_flooding_output_fills_no_disk(tmp_path: Path) -> None:
    host = FakeHost()
    bag = Bag.of([(1, "a")])
    run = runner(tmp_path, host, bag)
    run.max_output = 10_000
    run.carry(bag.hold({"h": Seat(1, 1.0)}, 0.0) + bag.place(0.0))
    await settle()
    stream = run._streams[("h", "j1")]
    for seq in range(1, 51):
        stream._ready.put_nowait(JobOutput(job="j1", seq=seq, stream="stdout", data=b"x" * 4096))
    exit_job(run, "j1", 0)
    for _ in range(200):
        await asyncio.sleep(0.005)
        if bag.finished:
            break
    assert (tmp_path / "out" / "1" / "stdout").stat().st_size == 10_000
    assert json.loads((tmp_path / "out" / "1" / "exit.json").read_text())["truncated"]


async def test_a_task_no_host_will_start_is_reported_not_retried_forever(
        tmp_path: Path) -> None:
    host = FakeHost()

    async def refuse(argv: list[str], **_: Any) -> dict[str, Any]:
        host.started.append(argv)
        raise Rejected("malformed", "no such program")

    host.exec = refuse  # type: ignore[method-assign]
    bag = Bag.of([(1, "a")], retry_s=0.0)
    run = runner(tmp_path, host, bag)
    for _ in range(5):
        now = run.clock()
        run.carry(bag.hold({"h": Seat(1, 1.0)}, now) + bag.place(now))
        await settle()
    assert len(host.started) == 3 and bag.finished
    record = json.loads((tmp_path / "out" / "1" / "exit.json").read_text())
    assert record["status"] == 127 and record["refused"].startswith("malformed")
    again = runner(tmp_path, FakeHost(), Bag.of([(1, "a")]), run.journal)
    assert again.resume() == 1  # kept as done on a restart


async def test_a_stop_right_after_a_wake_ends_the_loop(tmp_path: Path) -> None:
    """A task's end wakes the loop; a stop landing in the next few loop turns used to be
    swallowed (3.11's wait_for returns its result when cancelled after it completed), and
    stop() waited for the loop forever. Every turn from 0 to 5 after the wake is tried."""
    for turns in range(6):
        run = runner(tmp_path, FakeHost(), Bag.of([(1, "a")]), Journal(tmp_path / f"{turns}.db"))

        async def unsubscribe() -> None:
            pass

        run._sub = SimpleNamespace(unsubscribe=unsubscribe)  # subscribed (no bus here)
        run.start(lambda _cores: [], lambda: None)
        await settle()  # the loop waits for a wake
        run.wake.set()
        for _ in range(turns):
            await asyncio.sleep(0)
        async with asyncio.timeout(2):  # the bug: forever
            await run.stop()
        assert run._driving is not None and run._driving.cancelled()
