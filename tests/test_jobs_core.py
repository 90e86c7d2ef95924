"""The job table (pure): request checks, ids, states, output order and caps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tycoon.auctioneer.jobs import (
    EXITED,
    FROZEN,
    MAX_ARGS,
    MAX_ARGV_BYTES,
    RUNNING,
    JobTable,
    Limits,
    check_exec,
    check_signal,
)
from tycoon.errors import Rejected
from tycoon.units import NS

A, B = "UA" + "A" * 54, "UB" + "B" * 54


def _req(argv: list[str] | None = None, **more: object) -> dict[str, object]:
    return {"argv": argv if argv is not None else ["echo", "hi"], **more}


def test_a_good_request_is_read() -> None:
    r = check_exec(_req(["sh", "-c", "x"], env={"LANG": "C", "JOB_N": "3"}, cwd="./out/"))
    assert r.argv == ("sh", "-c", "x") and r.env == {"LANG": "C", "JOB_N": "3"}
    assert r.cwd == "out"


@pytest.mark.parametrize(("body", "code", "words"), [
    ({"argv": []}, "malformed", "non-empty"),
    ({"argv": "ls"}, "malformed", "non-empty"),
    ({"argv": ["ls", 3]}, "malformed", "argv[1]"),
    ({"argv": ["ls", "a\x00b"]}, "malformed", "NUL"),
    ({"argv": [""]}, "malformed", "empty"),
    ({"argv": ["x"] * (MAX_ARGS + 1)}, "malformed", "entries"),
    ({"argv": ["x" * MAX_ARGV_BYTES]}, "malformed", "bytes"),
    ({"argv": ["ls"], "env": {"LD_PRELOAD": "/x.so"}}, "forbidden", "not allowed"),
    ({"argv": ["ls"], "env": {"PATH": "/tmp"}}, "forbidden", "not allowed"),
    ({"argv": ["ls"], "env": {"lang": "C"}}, "malformed", "NAME"),
    ({"argv": ["ls"], "env": {"JOB_X": "a\x00"}}, "malformed", "NUL"),
    ({"argv": ["ls"], "cwd": "/etc"}, "forbidden", "inside"),
    ({"argv": ["ls"], "cwd": "a/../../x"}, "forbidden", "inside"),
    ({"argv": ["ls"], "cwd": "a\x00"}, "malformed", "relative"),
])
def test_bad_requests_are_refused_clearly(body: dict[str, object], code: str, words: str) -> None:
    with pytest.raises(Rejected) as caught:
        check_exec(body)
    assert caught.value.code == code and words in caught.value.message


def test_signals_by_name_or_number() -> None:
    assert check_signal("TERM") == 15 and check_signal("sigkill") == 9 and check_signal("2") == 2
    for bad in ("SEGV", "99", "", "TERM; rm"):
        with pytest.raises(Rejected):
            check_signal(bad)


def test_ids_states_limits_and_owners() -> None:
    table = JobTable("ab", Limits(jobs_per_account=2))
    j1 = table.admit(A, check_exec(_req()), 1)
    j2 = table.admit(A, check_exec(_req()), 2)
    assert (j1.id, j2.id) == ("ab1", "ab2")
    with pytest.raises(Rejected) as caught:
        table.admit(A, check_exec(_req()), 3)
    assert caught.value.code == "job_limit"
    table.admit(B, check_exec(_req()), 3)  # another account's limit is its own
    table.started(j1.id, 100, frozen=False)
    table.started(j2.id, 101, frozen=True)
    assert (j1.state, j2.state) == (RUNNING, FROZEN)
    table.set_frozen(A, False)
    assert j2.state == RUNNING
    with pytest.raises(Rejected) as other:
        table.get(B, j1.id)
    assert other.value.code == "forbidden"
    with pytest.raises(Rejected) as missing:
        table.get(A, "nope")
    assert missing.value.code == "unknown_job"
    table.exited(j1.id, 0, None, 0.5, 1024, 10)
    assert j1.state == EXITED and len(table.running(A)) == 1
    table.admit(A, check_exec(_req()), 11)  # a finished job frees its slot
    table.forget(A)
    assert table.of(A) == [] and len(table.of(B)) == 1


def test_failed_start_leaves_nothing() -> None:
    table = JobTable("x")
    job = table.admit(A, check_exec(_req()), 1)
    table.failed(job.id)
    assert table.jobs == {}


def test_output_is_numbered_chunked_and_capped_in_total() -> None:
    table = JobTable("x", Limits(output_total=100, output_rate=10**9, output_burst=10**9,
                                 chunk=40))
    job = table.admit(A, check_exec(_req()), 0)
    chunks = table.output(job.id, "stdout", b"a" * 90, 1)
    assert [len(c.data) for c in chunks] == [40, 40, 10]
    assert [c.seq for c in chunks] == [1, 2, 3]
    more = table.output(job.id, "stderr", b"b" * 30, 2)
    assert [(len(c.data), c.dropped) for c in more] == [(10, 0), (0, 20)]  # marker once
    again = table.output(job.id, "stderr", b"c" * 5, 3)
    assert again == []  # still dropping: no second marker
    assert job.dropped == 25
    done = table.exited(job.id, 0, None, 0.0, 0, 4)
    assert done.seq == 6  # the exit's seq follows the last chunk's


def test_output_rate_is_a_token_bucket() -> None:
    table = JobTable("x", Limits(output_total=10**9, output_rate=100, output_burst=100))
    job = table.admit(A, check_exec(_req()), 0)
    first = table.output(job.id, "stdout", b"x" * 150, 0)
    assert [len(c.data) for c in first] == [100, 0] and first[1].dropped == 50
    later = table.output(job.id, "stdout", b"y" * 150, NS // 2)  # 50 tokens came back
    assert [len(c.data) for c in later] == [50, 0] and later[1].dropped == 150


@given(st.lists(st.integers(0, 5000), max_size=30), st.integers(1, 4000))
def test_published_plus_dropped_is_what_was_read(sizes: list[int], total: int) -> None:
    table = JobTable("x", Limits(output_total=total, output_rate=1000, output_burst=2000,
                                 chunk=512))
    job = table.admit(A, check_exec(_req()), 0)
    seqs: list[int] = []
    sent = 0
    for i, n in enumerate(sizes):
        for c in table.output(job.id, "stdout", b"z" * n, i * NS // 10):
            seqs.append(c.seq)
            sent += len(c.data)
    assert sent + job.dropped == sum(sizes) and sent <= total
    assert seqs == list(range(1, len(seqs) + 1))


def test_finished_jobs_kept_are_bounded() -> None:
    table = JobTable("x", Limits(finished_kept=2))
    ids = []
    for i in range(4):
        job = table.admit(A, check_exec(_req()), i)
        table.exited(job.id, 0, None, 0.0, 0, i)
        ids.append(job.id)
    assert [j.id for j in table.of(A)] == ids[2:]
