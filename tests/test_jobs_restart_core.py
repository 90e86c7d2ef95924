"""What a restarted host adopts (pure): job records and the pid-identity rule."""

from __future__ import annotations

import pytest

from tycoon.auctioneer.jobs import EXITED, Job, JobTable, Limits
from tycoon.auctioneer.jobstate import (
    Pending,
    exit_fields,
    from_record,
    refusal,
    shim_refusal,
    to_record,
)
from tycoon.errors import Rejected
from tycoon.vmm import jobs as runner
from tycoon.vmm.jobshim import parse

A = "UA" + "A" * 54


def _job(**more: object) -> Job:
    return Job("ab1", A, ("sleep", "9"), 5, pid=4242, start_ticks=777, uid=60001, **more)


def _check(job: Job, **proc: object) -> str | None:
    seen: dict[str, object] = {"alive": True, "start_ticks": 777, "sid": 4242, "uid": 60001,
                               "job_env": "ab1", "in_sandbox": True, "confined": True}
    return refusal(job, **{**seen, **proc})  # type: ignore[arg-type]


def test_a_record_round_trips_with_its_pending_chunks() -> None:
    job = _job(shim_pid=4241, shim_ticks=776, seq=7, sent=100, dropped=3, status=None,
               offsets={"stdout": 90, "stderr": 10})
    pending = [Pending(6, "stdout", 80, 10), Pending(7, "stderr", 10, 0, dropped=3)]
    again, chunks = from_record(to_record(job, pending))
    assert again == job and chunks == pending


@pytest.mark.parametrize("change", [
    {"id": "../x"}, {"pid": -1}, {"uid": "0"}, {"state": "zombie"}, {"argv": "sh"},
    {"offsets": {"stdout": 0}}, {"pending": [[1, "stdin", 0, 0, 0]]}, {"seq": True},
    {"shim": [-1, 0]}, {"shim": [5]}, {"shim": "5"},
])
def test_a_bad_record_is_refused(change: dict[str, object]) -> None:
    data = {**to_record(_job(), []), **change}
    with pytest.raises(ValueError):
        from_record(data)


def test_the_job_itself_is_adopted() -> None:
    assert _check(_job()) is None
    unconfined = Job("ab1", A, ("sleep", "9"), 5, pid=4242, start_ticks=777)
    assert _check(unconfined, confined=False, uid=0, in_sandbox=None) is None


@pytest.mark.parametrize(("proc", "words"), [
    ({"alive": False}, "gone"),
    ({"start_ticks": 778}, "pid reused"),  # same pid, another process
    ({"sid": 1}, "session"),
    ({"uid": 0}, "uid"),  # root got the pid
    ({"in_sandbox": False}, "sandbox"),
    ({"in_sandbox": None}, "sandbox"),
    ({"confined": False, "job_env": None}, "TYCOON_JOB"),  # unconfined: the environment
    ({"confined": False, "job_env": "ab12"}, "TYCOON_JOB"),
])
def test_a_stranger_with_the_pid_is_refused(proc: dict[str, object], words: str) -> None:
    reason = _check(_job(), **proc)
    assert reason is not None and words in reason


def test_pid_1_is_never_adopted_even_with_its_true_start_time() -> None:
    init = Job("ab1", A, ("x",), 5, pid=1, start_ticks=1, uid=0)
    assert _check(init, start_ticks=1, sid=1, uid=0) is not None


def test_output_over_the_rate_waits_up_to_a_burst_and_past_the_total_is_dropped() -> None:
    table = JobTable("x", Limits(output_total=1000, output_rate=100, output_burst=100,
                                 chunk=64))
    job = table.jobs.setdefault("x1", Job("x1", A, ("x",), 0, tokens=100.0))
    assert table.plan("x1", 150, 0) == (100, 0)  # 50 wait for the bucket
    table.emit("x1", "stdout", b"a" * 100)
    assert table.plan("x1", 50, 0) == (0, 0)  # nothing dropped: it waits
    assert table.plan("x1", 400, 1_000_000_000) == (100, 200)  # a burst's worth waits
    chunks = table.emit("x1", "stdout", b"b" * 100, 200)
    assert [len(c.data) for c in chunks] == [64, 36, 0] and chunks[-1].dropped == 200
    job.sent = 1000
    assert table.plan("x1", 70, 9_000_000_000) == (0, 70)  # the total is reached
    table.exited("x1", None, None, 0.0, 0, 1)
    assert job.state == EXITED and job.status is None


def _shim(job: Job, **proc: object) -> str | None:
    seen: dict[str, object] = {"alive": True, "start_ticks": 776, "uid": 0, "job_env": "ab1",
                               "in_sandbox": True, "confined": True, "host_uid": 0}
    return shim_refusal(job, **{**seen, **proc})  # type: ignore[arg-type]


def test_the_shim_is_watched_only_if_it_is_still_the_one_started() -> None:
    job = _job(shim_pid=4241, shim_ticks=776)
    assert _shim(job) is None
    assert _shim(job, confined=False, uid=1000, host_uid=1000, in_sandbox=None) is None
    for proc, words in (({"alive": False}, "gone"), ({"start_ticks": 1}, "pid reused"),
                        ({"uid": 60001}, "uid"),  # the job's uid has that pid now
                        ({"in_sandbox": False}, "sandbox"),
                        ({"confined": False, "job_env": None}, "TYCOON_JOB")):
        reason = _shim(job, **proc)
        assert reason is not None and words in reason, proc
    assert _shim(_job(), start_ticks=0) == "no shim"  # a record of an older version
    assert _shim(_job(shim_pid=1, shim_ticks=1), start_ticks=1) == "no shim"


@pytest.mark.parametrize("data", [
    None, [], {"status": "0", "cpu_s": 0.1, "peak_memory": 1},
    {"status": True, "cpu_s": 0.1, "peak_memory": 1}, {"status": 0, "cpu_s": -1.0,
                                                       "peak_memory": 1},
    {"status": 0, "cpu_s": float("inf"), "peak_memory": 1},
    {"status": 999, "cpu_s": 0.1, "peak_memory": 1}, {"status": 0, "cpu_s": 0.1},
])
def test_a_malformed_exit_file_gives_no_status(data: object) -> None:
    assert exit_fields(data) is None


def test_an_exit_file_reads_back() -> None:
    assert exit_fields({"status": -9, "cpu_s": 1, "peak_memory": 4096}) == (-9, 1.0, 4096)


def test_the_shims_spec_round_trips_and_refuses_a_nul() -> None:
    argv = ["prog", "a b", "line\nbreak", "é", "", "x=y"]
    env = {"PATH": "/bin", "ODD": "a=b\nc", "EMPTY": ""}
    spec = parse(runner.shim_spec(argv, env, runner.Path("/w"), 60001,
                                  [runner.Path("/c/p")], runner.Path("/h/j.exit")))
    assert spec == {"uid": 60001, "cwd": "/w", "exit": "/h/j.exit", "procs": ["/c/p"],
                    "argv": argv, "env": env}
    for bad_argv, bad_env in ((["a\0b"], {}), (["a"], {"X": "\0"}), (["a"], {"A=B": "1"})):
        with pytest.raises(Rejected):
            runner.shim_spec(bad_argv, bad_env, runner.Path("/w"), None, [], runner.Path("/x"))
