"""Dynamic mode: jobs arrive and leave; the market and plain proportional share side by side.

Jobs arrive as a Poisson process. Job ``i`` has a size (work), a value, a budget equal to
its value, a hard deadline, and per-host values ``w_ij = capacity_j × preference_ij`` (its
work rate on the whole host). Time advances in steps of ``dt``; in each step a job holding
shares ``s_ij`` does ``Σ_j w_ij s_ij · dt`` work. A job leaves when its work is done
(completion) or at its deadline (a miss: the deadline is hard). Both policies see the very
same jobs (same seed):

- ``market``: every job runs the real agent's decisions (:class:`~tycoon.agent.core.
  AgentCore`, with its default settings and no refund margin): each step it hears every
  host's price (the sum of the bids of the previous step) and its own rate there; a
  market move past the threshold (or the periodic replan) makes it plan its remaining
  budget until its deadline by Best Response, adopted past the hysteresis, switch gain
  and dwell, increases damped by half, as the agent does on a real market. Its bids are
  its plan's rates; shares come from the auctioneer's allocation core; the job pays its
  bids for the part of the step it is there.
- ``proportional``: every job present gets an equal part of every host it values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tycoon.agent.core import AgentConfig, AgentCore, Reading
from tycoon.errors import Rejected
from tycoon.money import MICRO
from tycoon.sim.market import allocate, proportional_share

POLICIES = ("market", "proportional")
TRACKED_JOBS = 8


@dataclass(frozen=True)
class Workload:
    """Parameters of a dynamic run."""

    hosts: int = 20
    load: float = 0.8
    """Offered work / capacity: arrival rate × mean size / Σ capacity."""
    duration: float = 1000.0
    """Seconds during which jobs arrive (the run continues until every job has left)."""
    dt: float = 1.0
    mean_size: float = 200.0
    """Mean job size in work units (one unit = one second of a host of capacity 1)."""
    slack: tuple[float, float] = (1.0, 10.0)
    """Deadline = arrival + slack × (the job's run time alone on the whole cluster)."""
    value_spread: float = 1.0
    """σ of the lognormal value per unit of work."""
    seed: int = 0

    def __post_init__(self) -> None:
        ok = (
            isinstance(self.hosts, int)
            and self.hosts >= 1
            and self.load > 0
            and self.duration > 0
            and 0 < self.dt <= self.duration
            and self.mean_size > 0
            and 0 < self.slack[0] <= self.slack[1]
            and self.value_spread >= 0
        )
        if not ok:
            raise Rejected("bad_input", f"invalid workload: {self}")


@dataclass(frozen=True)
class Jobs:
    """The jobs of a run, one row each, in order of arrival."""

    capacities: np.ndarray  # (N,)
    arrival: np.ndarray  # (K,)
    size: np.ndarray
    deadline: np.ndarray
    value: np.ndarray
    weights: np.ndarray  # (K, N)


def make_jobs(workload: Workload) -> Jobs:
    """Draw the hosts and the jobs of a workload (deterministic in its seed)."""
    rng = np.random.default_rng(workload.seed)
    n = workload.hosts
    capacities = rng.lognormal(0.0, 0.5, n)
    capacities /= capacities.mean()
    rate = workload.load * capacities.sum() / workload.mean_size
    count = int(rng.poisson(rate * workload.duration))
    arrival = np.sort(rng.uniform(0.0, workload.duration, count))
    size = rng.exponential(workload.mean_size, count)
    weights = capacities * rng.uniform(0.5, 1.5, (count, n))
    alone = size / weights.sum(axis=1)
    deadline = arrival + rng.uniform(*workload.slack, count) * alone
    value = size * rng.lognormal(0.0, workload.value_spread, count)
    return Jobs(capacities, arrival, size, deadline, value, weights)


@dataclass
class Run:
    """The outcome of one policy on one workload."""

    policy: str
    jobs: int
    completed: int
    deadline_hits: float
    """Fraction of the jobs done by their deadline."""
    value_weighted_completion: float
    """Σ value of the jobs done by their deadline / Σ value of all jobs."""
    mean_completion_time: float
    """Mean time from arrival to completion of the completed jobs (nan if none)."""
    utilization: float
    """Mean fraction of the capacity held by jobs while jobs arrive."""
    times: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    prices: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))
    """Price (Σ bid rates) of the first hosts at each step (market only)."""
    tracked: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))
    spent: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    """What each job paid (market only; never more than its budget = its value)."""
    """Cluster share of ``TRACKED_JOBS`` jobs arriving after 40% of the arrival period, at
    each step (nan when absent)."""

    def summary(self) -> dict[str, float | int | str]:
        return {
            "policy": self.policy,
            "jobs": self.jobs,
            "completed": self.completed,
            "deadline_hits": self.deadline_hits,
            "value_weighted_completion": self.value_weighted_completion,
            "mean_completion_time": self.mean_completion_time,
            "utilization": self.utilization,
        }


def simulate(workload: Workload, policy: str, jobs: Jobs | None = None) -> Run:
    """Run one policy over the workload's jobs, step by step."""
    if policy not in POLICIES:
        raise Rejected("bad_input", f"policy must be one of {POLICIES}, not {policy!r}")
    jobs = make_jobs(workload) if jobs is None else jobs
    k, n = jobs.weights.shape
    dt = workload.dt
    left = jobs.size.copy()
    budget = jobs.value.copy()
    bids = np.zeros((k, n))
    done_at = np.full(k, np.nan)
    gone = np.zeros(k, dtype=bool)
    # follow a few jobs from the busy middle of the run
    tracked_ids = np.flatnonzero(jobs.arrival >= 0.4 * workload.duration)[:TRACKED_JOBS]
    column = {int(job): pos for pos, job in enumerate(tracked_ids)}
    times: list[float] = []
    prices: list[np.ndarray] = []
    tracked: list[np.ndarray] = []
    used: list[float] = []
    agents = Agents(jobs)
    horizon = float(jobs.deadline.max()) if k else 0.0
    total_capacity = float(jobs.capacities.sum())
    t = 0.0
    while t < horizon:
        present = np.flatnonzero((jobs.arrival <= t) & ~gone)
        late = present[jobs.deadline[present] <= t]
        gone[late] = True  # hard deadline: the job is abandoned
        present = present[jobs.deadline[present] > t]
        shares = np.zeros((present.size, n))
        if present.size:
            w = jobs.weights[present]
            if policy == "market":
                shares = agents.step(present, t, budget, bids)
            else:
                shares = proportional_share(w)
            rate = np.sum(w * shares, axis=1)
            work = rate * dt
            finishing = work >= left[present]
            with np.errstate(divide="ignore", invalid="ignore"):
                need = np.where(rate > 0, left[present] / rate, np.inf)
            if policy == "market":  # pay for the part of the step the job is still there
                used_time = np.minimum(np.minimum(need, jobs.deadline[present] - t), dt)
                budget[present] -= bids[present].sum(axis=1) * used_time
            done_at[present[finishing]] = t + need[finishing]
            gone[present[finishing]] = True
            left[present] -= work
        times.append(t)
        held = np.zeros(n)
        if present.size:
            held = shares.sum(axis=0)
        if t < workload.duration:
            used.append(float(np.sum(np.minimum(held, 1.0) * jobs.capacities)) / total_capacity)
        prices.append(bids[:, : min(n, 8)].sum(axis=0) if policy == "market" else np.zeros(0))
        row = np.full(tracked_ids.size, np.nan)
        for pos, job in enumerate(present):
            if int(job) in column:
                row[column[int(job)]] = (
                    float(np.sum(shares[pos] * jobs.capacities)) / total_capacity
                )
        tracked.append(row)
        bids[gone] = 0.0
        t += dt
    hit = ~np.isnan(done_at) & (done_at <= jobs.deadline)
    finished = ~np.isnan(done_at)
    return Run(
        policy=policy,
        jobs=k,
        completed=int(finished.sum()),
        deadline_hits=float(hit.mean()) if k else 1.0,
        value_weighted_completion=float(jobs.value[hit].sum() / jobs.value.sum()) if k else 1.0,
        mean_completion_time=float(np.mean(done_at[finished] - jobs.arrival[finished]))
        if finished.any()
        else float("nan"),
        utilization=float(np.mean(used)) if used else 0.0,
        times=np.array(times),
        prices=np.array(prices),
        tracked=np.array(tracked),
        spent=jobs.value - budget,
    )


class Agents:
    """The jobs' agents: one :class:`AgentCore` each, in micro-credits, hosts ``h<j>``."""

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        self.hosts = [f"h{j}" for j in range(jobs.capacities.size)]
        self.cores: dict[int, AgentCore] = {}
        self.planned_at: dict[int, float] = {}

    def step(self, present: np.ndarray, t: float, budget: np.ndarray,
             bids: np.ndarray) -> np.ndarray:
        """Every present job's agent hears the market and may replan (its new bids go into
        ``bids``); returns the shares (rows of ``present``)."""
        prices = bids.sum(axis=0) * MICRO
        for job in present.tolist():
            core = self.cores.get(job)
            if core is None:
                core = self.cores[job] = self._start(job, prices)
                self._replan(job, core, t, budget, bids, force=True)
                continue
            moved = False
            for j, host in enumerate(self.hosts):
                core.allocation(host, float(bids[job, j]) * MICRO, t)
                moved = core.price(host, None, float(prices[j]), {}, t, t) or moved
            if moved or t - self.planned_at[job] >= core.config.replan_every_s:
                self._replan(job, core, t, budget, bids)
        return allocate(bids[present])

    def _start(self, job: int, prices: np.ndarray) -> AgentCore:
        jobs = self.jobs
        config = AgentConfig(budget=int(jobs.value[job] * MICRO),
                             deadline_s=float(jobs.deadline[job] - jobs.arrival[job]),
                             refund_margin_s=0.0)
        core = AgentCore(config, float(jobs.deadline[job]))
        for j, host in enumerate(self.hosts):
            core.offer(host, float(jobs.weights[job, j]), float(prices[j]))
        return core

    def _replan(self, job: int, core: AgentCore, t: float, budget: np.ndarray,
                bids: np.ndarray, *, force: bool = False) -> None:
        self.planned_at[job] = t
        core.take_change()
        evaluation = core.evaluate({}, t)
        if evaluation.seconds < 1:
            return
        money = max(int(budget[job] * MICRO), 0)
        decision = core.decide(
            evaluation, Reading({}, money, core.config.budget - money), t, force=force)
        if decision.plan is None:
            return
        core.adopt(decision.plan)
        rates = decision.plan.rates
        bids[job] = [rates.get(host, 0.0) / MICRO for host in self.hosts]


def compare(workload: Workload) -> dict[str, Run]:
    """Both policies on the same jobs."""
    jobs = make_jobs(workload)
    return {policy: simulate(workload, policy, jobs) for policy in POLICIES}
