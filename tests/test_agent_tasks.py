"""The bag-of-tasks scheduler (tycoon/agent/tasks.py), pure: Hypothesis drives it against
a model of hosts whose jobs start, fail, exit and die when killed, in any order."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tycoon.agent.core import AgentConfig, AgentCore
from tycoon.agent.tasks import (
    DONE,
    IN_FLIGHT,
    QUEUED,
    REFUSED,
    STOPPING,
    Bag,
    Kill,
    Seat,
    Start,
    TaskFileError,
    check_command,
    parse_tasks,
    slots,
    task_argv,
)


@dataclass
class World:
    """What really runs: jobs alive on hosts, and the events not delivered yet."""

    bag: Bag
    now: float = 0.0
    next_job: int = 0
    alive: dict[str, tuple[int, str]] = field(default_factory=dict)  # job -> (task, host)
    starts: list[tuple[int, str]] = field(default_factory=list)      # asked, not answered
    exits: list[tuple[int, str, int]] = field(default_factory=list)  # (task, job, status)
    kills: list[Kill] = field(default_factory=list)
    finished: dict[int, int] = field(default_factory=dict)           # task -> status
    killed: set[str] = field(default_factory=set)

    def carry(self, moves: list) -> None:
        for move in moves:
            task = self.bag.tasks[move.task]
            if isinstance(move, Start):
                # never a second copy: no live job, no start in flight, not finished
                assert all(t != move.task for t, _ in self.alive.values()), move
                assert all(t != move.task for t, _ in self.starts), move
                assert move.task not in self.finished, move
                assert move.host in self.bag.seats
                if task.pin is not None:
                    assert move.host == task.pin
                on_host = sum(1 for t in self.bag.tasks.values()
                              if t.state in IN_FLIGHT and t.host == move.host)
                assert on_host <= self.bag.seats[move.host].slots
                self.starts.append((move.task, move.host))
            else:
                self.kills.append(move)

    def check(self) -> None:
        for job, (index, host) in self.alive.items():
            task = self.bag.tasks[index]
            # a live job's task is in flight on that host (never queued, never done)
            assert task.state in IN_FLIGHT and task.host == host, (job, task)
        for index, status in self.finished.items():
            task = self.bag.tasks[index]
            assert task.state == DONE and task.status == status

    def step(self, choice: int, ok: bool, status: int) -> None:
        """Deliver one pending event (chosen by ``choice``)."""
        pending = len(self.starts) + len(self.exits) + len(self.kills) + len(self.alive)
        if not pending:
            return
        i = choice % pending
        if i < len(self.starts):
            index, host = self.starts.pop(i)
            if not ok and status % 2:  # refused (for the task itself, or not): nothing started
                self.bag.start_failed(index, host, self.now, task_fault=status in (-3, 3))
                return
            if not ok:  # the answer was lost, the job runs all the same
                self.next_job += 1
                self.alive[f"j{self.next_job}"] = (index, host)
                self.carry(self.bag.start_lost(index, host, self.now))
                return
            self.next_job += 1
            job = f"j{self.next_job}"
            self.alive[job] = (index, host)
            self.carry(self.bag.started(index, host, job))
            return
        i -= len(self.starts)
        if i < len(self.exits):
            index, job, code = self.exits.pop(i)
            before = self.bag.tasks[index].state
            self.bag.exited(index, job, code, self.now)
            task = self.bag.tasks[index]
            if task.state == DONE and before != DONE:
                assert job not in self.killed, "a task killed by us counts as done"
                self.finished[index] = code
            return
        i -= len(self.exits)
        if i < len(self.kills):
            kill = self.kills.pop(i)
            gone = [j for j, (t, h) in self.alive.items() if t == kill.task and h == kill.host
                    and (kill.job is None or j == kill.job)]
            for job in gone:
                del self.alive[job]
                self.killed.add(job)
                self.exits.append((kill.task, job, -9))
            if not gone or ok or kill.job is None:  # the host says gone (a lost start: polled)
                self.bag.stopped(kill.task, kill.host, kill.job)
            return
        i -= len(self.kills)
        job = sorted(self.alive)[i]
        index, _ = self.alive.pop(job)
        self.exits.append((index, job, status))


seat = st.builds(Seat, st.integers(1, 8), st.floats(0.0, 1.0))
hosts = st.dictionaries(st.sampled_from("abcd"), seat, max_size=4)
ops = st.lists(st.one_of(
    st.tuples(st.just("hold"), hosts),
    st.tuples(st.just("step"), st.integers(0, 99), st.booleans(), st.integers(-9, 3)),
    st.tuples(st.just("tick"), st.floats(0.0, 10.0)),
), max_size=60)


def drive(world: World, program: list) -> None:
    for op in program:
        if op[0] == "hold":
            world.carry(world.bag.hold(op[1], world.now))
        elif op[0] == "step":
            world.step(op[1], op[2], op[3])
        else:
            world.now += op[1]
        world.carry(world.bag.place(world.now))
        world.check()


def finish(world: World, seats: dict[str, Seat]) -> None:
    """Hosts stay: every event is delivered, starts succeed, jobs exit 0."""
    world.carry(world.bag.hold(seats, world.now))
    for _ in range(2_000):
        world.now += 1.0
        world.carry(world.bag.place(world.now))
        if world.bag.finished and not (world.starts or world.kills or world.alive):
            break
        if world.starts or world.exits or world.kills:
            world.step(0, True, 0)
        elif world.alive:
            world.step(len(world.alive) - 1, True, 0)  # the oldest live job exits
        world.check()
    assert world.bag.finished
    assert all(t.state == DONE for t in world.bag.tasks.values() if t.pin is None
               or t.pin in seats)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 12), program=ops, last=st.dictionaries(
    st.sampled_from("abcd"), seat, min_size=1, max_size=4))
def test_no_task_twice_at_once_none_rerun_slots_kept_and_all_done_when_hosts_stay(
        n: int, program: list, last: dict[str, Seat]) -> None:
    world = World(Bag.of(((i, f"arg{i}") for i in range(1, n + 1)), stop_grace_s=math.inf))
    drive(world, program)
    finished = dict(world.finished)
    finish(world, last)
    for index, status in finished.items():  # a finished task kept its first status
        assert world.bag.tasks[index].status == status
    assert world.bag.progress(world.now).done == n


@settings(max_examples=100, deadline=None)
@given(program=ops, last=st.dictionaries(st.sampled_from("abcd"), seat, min_size=1,
                                         max_size=4))
def test_each_host_runs_once_on_every_host_held(program: list, last: dict[str, Seat]) -> None:
    world = World(Bag(each_host=True, stop_grace_s=math.inf))
    assert not world.bag.finished  # no host held yet: nothing has run
    drive(world, program)
    finish(world, last)
    pins = [t.pin for t in world.bag.tasks.values()]
    assert len(pins) == len(set(pins)) and set(last) <= set(pins)


@given(cores=st.integers(-2, 64), share=st.floats(allow_nan=True, allow_infinity=True))
def test_slots_are_cores_times_share_at_least_one(cores: int, share: float) -> None:
    got = slots(cores, share)
    assert got >= 1
    if math.isfinite(share) and 0 <= share <= 1 and cores >= 1:
        assert got == max(1, math.floor(cores * share))
    assert got <= max(cores, 1)


def test_queued_tasks_go_to_the_host_giving_each_the_most_cpu() -> None:
    bag = Bag.of((i, str(i)) for i in range(1, 9))
    moves = bag.hold({"slow": Seat(4, 0.3), "fast": Seat(2, 0.9)}, 0.0) + bag.place(0.0)
    # slow: 1 slot of 1.2 cores; fast: 1 slot of 1.8 cores -> fast first
    assert moves == [Start(1, "fast"), Start(2, "slow")]
    # the share at "slow" grows: it takes the next queued tasks, none moves twice
    bag.hold({"slow": Seat(4, 1.0), "fast": Seat(2, 0.9)}, 1.0)
    assert [m.host for m in bag.place(1.0)] == ["slow"] * 3


def test_a_host_left_kills_its_tasks_which_run_again_elsewhere_once_gone() -> None:
    bag = Bag.of([(1, "x"), (2, "y")])
    bag.hold({"a": Seat(2, 1.0)}, 0.0)
    assert bag.place(0.0) == [Start(1, "a"), Start(2, "a")]
    assert bag.started(1, "a", "j1") == []
    moves = bag.hold({"b": Seat(1, 1.0)}, 1.0)
    assert moves == [Kill(1, "a", "j1")]  # task 2's start is still in flight
    assert bag.place(1.0) == []            # neither is queued before its job is gone
    assert bag.started(2, "a", "j2") == [Kill(2, "a", "j2")]
    bag.exited(1, "j1", -9, 2.0)           # killed by us: queued again, not done
    assert bag.tasks[1].state == QUEUED
    assert bag.place(2.0) == [Start(1, "b")]
    bag.stopped(2, "a", "j2")
    assert bag.tasks[2].state == QUEUED and bag.place(2.0) == []  # b's one slot is busy


def test_a_silent_host_left_long_ago_gives_its_tasks_back() -> None:
    bag = Bag.of([(1, "x")], stop_grace_s=30.0)
    bag.hold({"a": Seat(1, 1.0)}, 0.0)
    bag.place(0.0)
    bag.started(1, "a", "j1")
    bag.hold({"b": Seat(1, 1.0)}, 10.0)
    assert bag.place(39.0) == [] and bag.tasks[1].state == STOPPING
    assert bag.place(40.0) == [Start(1, "b")]


def test_a_task_every_host_refuses_is_done_as_refused_after_three_tries() -> None:
    bag = Bag.of([(1, "x")], retry_s=0.0)
    bag.hold({"a": Seat(1, 1.0), "b": Seat(1, 1.0)}, 0.0)
    for attempt in range(3):
        (start,) = bag.place(float(attempt))
        bag.start_failed(1, start.host, float(attempt), task_fault=attempt != 1)
    assert bag.tasks[1].state == "queued"  # one refusal was the host's, not the task's
    (start,) = bag.place(3.0)
    bag.start_failed(1, start.host, 3.0, task_fault=True)
    assert (bag.tasks[1].state, bag.tasks[1].status) == (DONE, REFUSED) and bag.finished


def test_a_failed_start_cools_the_host_down() -> None:
    bag = Bag.of([(1, "x")], retry_s=5.0)
    bag.hold({"a": Seat(1, 1.0)}, 0.0)
    bag.place(0.0)
    bag.start_failed(1, "a", 0.0)
    assert bag.place(4.9) == [] and bag.place(5.0) == [Start(1, "a")]


def test_a_restored_start_blocks_its_host_until_its_job_is_looked_for() -> None:
    from tycoon.agent.tasks import Task

    bag = Bag.of([(1, "x"), (2, "y")])
    assert bag.restore(Task(1, "x", state="starting", host="a", runs=1), 0.0) == \
        [Kill(1, "a", None)]
    bag.hold({"a": Seat(4, 1.0)}, 0.0)
    assert bag.place(0.0) == []  # task 2 waits: a lost start of 1 may still be running
    bag.stopped(1, "a", None)
    assert [m.task for m in bag.place(0.0)] == [1, 2]


def test_progress_counts_and_eta() -> None:
    bag = Bag.of((i, str(i)) for i in range(1, 5))
    bag.hold({"a": Seat(2, 1.0)}, 0.0)
    bag.place(0.0)
    bag.started(1, "a", "j1")
    bag.exited(1, "j1", 3, 10.0)
    p = bag.progress(10.0)
    assert (p.done, p.failed, p.running, p.queued) == (1, 1, 1, 2)
    assert p.eta_s == pytest.approx(30.0)  # 10 s a task, 3 left


def test_the_core_seats_only_planned_hosts_holding_our_money() -> None:
    from tycoon.agent.books import Holding
    from tycoon.agent.planner import Plan

    core = AgentCore(AgentConfig(budget=10, deadline_s=100), 100.0, Bag.of([(1, "x")]))
    core.adopt(Plan(rates={"a": 1.0, "b": 1.0}, balances={"a": 5, "b": 5},
                    shares={"a": 0.5, "b": 0.25}, utility=1.0, spend_rate=2.0,
                    seconds_left=10))
    books = {"a": Holding(5, 0.0, 0.0), "b": Holding(0, 0.0, 0.0)}
    assert core.seats(books, {"a": 8}, 0.0) == {"a": Seat(8, 0.5)}
    assert core.task_moves(books, {"a": 8}, 0.0) == [Start(1, "a")]
    assert not core.tasks_finished


# -- the task file --------------------------------------------------------------------------


def test_a_task_file_is_one_argument_per_non_blank_line() -> None:
    assert parse_tasks(b"a b\n\n  \nc\r\n\xc3\xa9") == [(1, "a b"), (4, "c"), (5, "é")]
    assert task_argv(["python3", "w.py", "--in={}"], "a b") == ["python3", "w.py", "--in=a b"]
    assert task_argv(["echo"], "x") == ["echo", "x"]
    assert task_argv(["hostname"], "h1", append=False) == ["hostname"]  # --each-host


@pytest.mark.parametrize("data, says", [
    (b"ok\nbad\x00arg\n", "line 2: a NUL byte"),
    (b"ok\n" + b"x" * (64 * 1024 + 1), "line 2: 65537 bytes"),
    (b"\xff\xfe\n", "line 1: not UTF-8"),
])
def test_a_hostile_task_file_is_refused_with_its_line(data: bytes, says: str) -> None:
    with pytest.raises(TaskFileError, match=says):
        parse_tasks(data)


def test_a_command_no_host_would_run_is_refused_before_anything_starts() -> None:
    with pytest.raises(TaskFileError):
        check_command([], ["a"])
    with pytest.raises(TaskFileError):
        check_command(["echo", "{}" * 2], ["y" * 40_000])  # 80 KB once substituted
    check_command(["echo", "{}"], ["y" * 40_000])
