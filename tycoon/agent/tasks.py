"""A bag of tasks, sans-IO: which task runs on which held host (docs/jobs.md, "The agent's
task scheduling").

:class:`Bag` knows the tasks and the hosts the agent holds (cores and planned share each);
the runner (:mod:`tycoon.agent.bag`) tells it what happened (a job started, exited, was
stopped, a start failed) and carries out the moves it returns: :class:`Start` a task on a
host, :class:`Kill` a task's job. Rules:

- A host runs at most ``max(1, floor(cores × share))`` of our tasks at once (its *slots*).
- Queued tasks go to the free slot of the host giving each task the most CPU
  (``cores × share / slots``), lowest task first; a task pinned to a host (``--each-host``)
  runs only there.
- A task is in one place at a time: it is queued again only once its job is known gone
  (its exit, or the host's word after a kill). A finished task is never started again.
- A host the agent leaves gets no new task; its tasks are killed and queued again. A task
  still unconfirmed on a host that has been left for ``stop_grace_s`` is queued again too
  (the host is silent; the refund of the account there ends its jobs).
- A host that failed a start gets no new task for ``retry_s``.

Every time is passed in; nothing here waits or reads a clock.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

QUEUED, STARTING, RUNNING, STOPPING, DONE = "queued", "starting", "running", "stopping", "done"
STATES = (QUEUED, STARTING, RUNNING, STOPPING, DONE)
IN_FLIGHT = (STARTING, RUNNING, STOPPING)
REFUSED = 127
"""The status of a task no host would start (its command, its bundle)."""


def slots(cores: int, share: float) -> int:
    """Tasks a host runs at once for us: its cores times our share there, at least 1."""
    if not math.isfinite(share) or share <= 0:
        return 1
    return max(1, math.floor(max(cores, 1) * min(share, 1.0)))


@dataclass(frozen=True)
class Seat:
    """A held host: its cores and our planned share of its CPU."""

    cores: int
    share: float

    @property
    def slots(self) -> int:
        return slots(self.cores, self.share)

    @property
    def speed(self) -> float:
        """The CPU (in cores) each task gets when every slot is busy."""
        return max(self.cores, 1) * max(min(self.share, 1.0), 0.0) / self.slots


@dataclass
class Task:
    """One task: its argument and where it stands."""

    index: int
    """Its number: the line of the task file (or the order of hosts, ``--each-host``)."""
    arg: str
    pin: str | None = None
    """``--each-host``: the one host it runs on."""
    state: str = QUEUED
    host: str | None = None
    """Where it is starting, running or stopping."""
    job: str | None = None
    """Its job there (None while starting, or after a crash lost the reply)."""
    status: int | None = None
    """The exit status, once done."""
    runs: int = 0
    refusals: int = 0
    """Starts refused for the task itself (not journalled: a restart tries again)."""


@dataclass(frozen=True)
class Start:
    task: int
    host: str


@dataclass(frozen=True)
class Kill:
    """Kill ``task``'s job at ``host``; ``job`` None: find it by ``host.jobs`` (a start
    whose reply was lost to a crash)."""

    task: int
    host: str
    job: str | None


Move = Start | Kill


@dataclass(frozen=True)
class Progress:
    done: int
    failed: int
    """Of ``done``: exited with a status other than 0."""
    running: int
    queued: int
    eta_s: float | None
    """Seconds to the last task's end at the pace so far (None: no task done yet)."""


@dataclass
class Bag:
    """The tasks of one job and the hosts they may run on."""

    tasks: dict[int, Task] = field(default_factory=dict)
    each_host: bool = False
    retry_s: float = 5.0
    max_refusals: int = 3
    stop_grace_s: float = 30.0
    seats: dict[str, Seat] = field(default_factory=dict)
    cooling: dict[str, float] = field(default_factory=dict)
    """Host → time until which it gets no start (it failed one)."""
    left_at: dict[str, float] = field(default_factory=dict)
    """Host → when the agent left it (while a task there is unconfirmed)."""
    began: float | None = None
    """When the first task started (for the ETA)."""
    ended: float | None = None
    """When the last task so far ended."""

    @classmethod
    def of(cls, args: Iterable[tuple[int, str]], **options: float) -> Bag:
        return cls({i: Task(i, a) for i, a in args}, **options)  # type: ignore[arg-type]

    # -- hosts -------------------------------------------------------------------------

    def hold(self, seats: Mapping[str, Seat], now: float) -> list[Move]:
        """The hosts held from now on; kills the tasks on hosts left (queued again once
        their jobs are gone). ``--each-host``: a task for each host held the first time."""
        moves: list[Move] = []
        for host in sorted(set(self.seats) - set(seats)):
            self.left_at.setdefault(host, now)
        for host in seats:
            self.left_at.pop(host, None)
        self.seats = dict(seats)
        if self.each_host:
            pinned = {t.pin for t in self.tasks.values()}
            for host in sorted(h for h in seats if h not in pinned):
                index = max(self.tasks, default=0) + 1
                self.tasks[index] = Task(index, host, pin=host)
        for task in self.tasks.values():
            if task.state in (STARTING, RUNNING) and task.host not in self.seats:
                if task.state == RUNNING:
                    moves.append(Kill(task.index, task.host or "", task.job))
                task.state = STOPPING  # a starting one is killed when its reply comes
        return moves

    # -- what happened -----------------------------------------------------------------

    def started(self, index: int, host: str, job: str) -> list[Move]:
        """The host started ``index`` as ``job``. A start we no longer want (the host was
        left meanwhile, or the task is elsewhere) is killed."""
        task = self.tasks.get(index)
        if task is None or task.host != host or task.job is not None \
                or task.state not in (STARTING, STOPPING):
            return [Kill(index, host, job)]
        task.job = job
        if task.state == STOPPING:
            return [Kill(index, host, job)]
        task.state = RUNNING
        return []

    def start_failed(self, index: int, host: str, now: float, *,
                     task_fault: bool = False) -> None:
        """The host refused a start (nothing started there). ``task_fault``: refused for
        the task itself (its argv, its bundle), which any host would refuse: after
        ``max_refusals`` such refusals the task is done with status :data:`REFUSED`."""
        self.cooling[host] = now + self.retry_s
        task = self.tasks.get(index)
        if task is None or task.host != host or task.job is not None \
                or task.state not in (STARTING, STOPPING):
            return
        self._queue(task)
        task.refusals += task_fault
        if task.refusals >= self.max_refusals:
            task.state, task.status, task.host = DONE, REFUSED, host
            self.ended = now

    def start_lost(self, index: int, host: str, now: float) -> list[Move]:
        """A start whose answer never came (a timeout): the job may run there all the same.
        It is looked for (by its argv) and killed before the task is queued again."""
        self.cooling[host] = now + self.retry_s
        task = self.tasks.get(index)
        if task is None or task.host != host or task.job is not None \
                or task.state not in (STARTING, STOPPING):
            return []
        task.state = STOPPING
        return [Kill(index, host, None)]

    def exited(self, index: int, job: str, status: int, now: float) -> None:
        """``job`` of ``index`` ended with ``status``: the task is done, unless we were
        stopping it (then it is queued again)."""
        task = self.tasks.get(index)
        if task is None or task.job != job or task.state not in (RUNNING, STOPPING):
            return
        if task.state == STOPPING:
            self._queue(task)
            return
        task.state, task.status = DONE, status
        self.ended = now

    def stopped(self, index: int, host: str, job: str | None) -> None:
        """The host says ``job`` of ``index`` is gone (or, ``job`` None, that no job of
        the task runs there)."""
        task = self.tasks.get(index)
        if task is not None and task.state == STOPPING and task.host == host \
                and task.job == job:
            self._queue(task)

    def lost(self, index: int, host: str, job: str) -> None:
        """``job`` of ``index`` is gone without an exit we heard (its output is not whole):
        the task is queued again."""
        task = self.tasks.get(index)
        if task is not None and task.state in (RUNNING, STOPPING) and task.host == host \
                and task.job == job:
            self._queue(task)

    def restore(self, task: Task, now: float) -> list[Move]:
        """A task as a journal left it. One in flight at a crash is stopping: its job (or,
        unknown, a job of its argv) is looked for on its host and killed (the returned
        move) before it is queued again."""
        self.tasks[task.index] = task
        if task.state not in IN_FLIGHT or task.host is None:
            if task.state in IN_FLIGHT:
                self._queue(task)
            return []
        task.state = STOPPING
        self.left_at.setdefault(task.host, now)  # held again: forgotten (see hold)
        return [Kill(task.index, task.host, task.job)]

    def _queue(self, task: Task) -> None:
        task.state, task.host, task.job = QUEUED, None, None

    # -- what to do ----------------------------------------------------------------------

    def place(self, now: float) -> list[Move]:
        """Starts for the free slots (and, for tasks stuck on hosts left long ago, their
        requeue)."""
        for task in self.tasks.values():
            left = self.left_at.get(task.host or "")
            if task.state == STOPPING and left is not None and now - left >= self.stop_grace_s:
                self._queue(task)
        self.left_at = {h: t for h, t in self.left_at.items()
                        if any(x.host == h and x.state in IN_FLIGHT for x in self.tasks.values())}
        busy: dict[str, int] = {}
        blocked: set[str] = set()
        for task in self.tasks.values():
            if task.state in IN_FLIGHT and task.host is not None:
                busy[task.host] = busy.get(task.host, 0) + 1
                if task.state == STOPPING and task.job is None:
                    blocked.add(task.host)  # a lost start is found by its argv first
        free = {h: s.slots - busy.get(h, 0) for h, s in self.seats.items()
                if h not in blocked and self.cooling.get(h, -math.inf) <= now}
        order = sorted(free, key=lambda h: (-self.seats[h].speed, h))
        moves: list[Move] = []
        for task in sorted(self.tasks.values(), key=lambda t: t.index):
            if task.state != QUEUED:
                continue
            hosts = [task.pin] if task.pin is not None else order
            host = next((h for h in hosts if free.get(h, 0) > 0), None)
            if host is None:
                continue
            free[host] -= 1
            task.state, task.host, task.job = STARTING, host, None
            task.runs += 1
            if self.began is None:
                self.began = now
            moves.append(Start(task.index, host))
        return moves

    # -- how far ---------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Every task done (``--each-host``: every task of a held host, none in flight;
        not before a first host is held)."""
        return bool(self.tasks) and all(t.state == DONE or (t.pin is not None and t.state == QUEUED
                                       and t.pin not in self.seats)
                   for t in self.tasks.values())

    def progress(self, now: float) -> Progress:
        counts = {s: 0 for s in STATES}
        failed = 0
        for task in self.tasks.values():
            counts[task.state] += 1
            failed += task.state == DONE and task.status != 0
        done = counts[DONE]
        left = len(self.tasks) - done
        eta = None
        if done and self.began is not None:
            eta = 0.0 if not left else (max(now - self.began, 0.0) / done) * left
        return Progress(done, failed, counts[RUNNING] + counts[STARTING] + counts[STOPPING],
                        counts[QUEUED], eta)


# -- the task file -----------------------------------------------------------------------

MAX_TASKS = 100_000
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_ARGV_BYTES = 64 * 1024
"""A host refuses a longer argv (docs/jobs.md): such a task is refused before anything runs."""


class TaskFileError(ValueError):
    """The task file or command cannot make a bag of tasks (nothing was started)."""


def parse_tasks(data: bytes) -> list[tuple[int, str]]:
    """``(line number, argument)`` of each non-blank line of a task file (UTF-8; a final
    ``\\r`` is dropped). A NUL byte, invalid UTF-8, more than :data:`MAX_TASKS` tasks or a
    file over :data:`MAX_FILE_BYTES` is refused with the line it is on."""
    if len(data) > MAX_FILE_BYTES:
        raise TaskFileError(f"task file is {len(data)} bytes; at most {MAX_FILE_BYTES}")
    out: list[tuple[int, str]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if b"\x00" in line:
            raise TaskFileError(f"line {number}: a NUL byte (an argument cannot hold one)")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TaskFileError(f"line {number}: not UTF-8 ({exc.reason})") from None
        if not text.strip():
            continue
        if len(line) > MAX_ARGV_BYTES:
            raise TaskFileError(f"line {number}: {len(line)} bytes; an argument holds at "
                                f"most {MAX_ARGV_BYTES}")
        out.append((number, text))
        if len(out) > MAX_TASKS:
            raise TaskFileError(f"more than {MAX_TASKS} tasks")
    return out


def task_argv(command: list[str], arg: str, *, append: bool = True) -> list[str]:
    """``command`` with every ``{}`` replaced by ``arg`` (appended when there is none,
    unless not ``append``: ``--each-host`` runs the command as it is)."""
    if not any("{}" in part for part in command):
        return [*command, arg] if append else list(command)
    return [part.replace("{}", arg) for part in command]


def check_command(command: list[str], args: Iterable[str]) -> None:
    """Refuse (before anything runs) a command no host would start for some argument."""
    if not command or not command[0]:
        raise TaskFileError("no command: give it after --, e.g. -- python3 work.py {}")
    for arg in args:
        argv = task_argv(command, arg)
        size = sum(len(a.encode("utf-8", "surrogatepass")) + 1 for a in argv)
        if size > MAX_ARGV_BYTES or any("\x00" in a for a in argv) or len(argv) > 256:
            raise TaskFileError(f"the command for task {arg[:40]!r}… is longer than a host "
                                f"runs ({MAX_ARGV_BYTES} bytes, 256 arguments) or holds NUL")


def bag_digest(command: list[str], bag: Bag, bundle: str | None = None,
               collect: list[str] | None = None) -> str:
    """What a resumed job must run again: the command, every task's argument, the code
    bundle and the paths collected."""
    text = json.dumps([command, bag.each_host,
                       sorted((t.index, t.arg) for t in bag.tasks.values() if t.pin is None),
                       bundle, collect or []])
    return hashlib.sha256(text.encode()).hexdigest()
