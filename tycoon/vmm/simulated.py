"""A simulated host: capacities from config, synthetic usage, deterministic when seeded.

Each sandbox uses ``min(its share, its demand)`` of every resource, where a demand is a
fraction of the host's capacity (default 1.0: greedy, it uses all it is given). Optional
multiplicative noise comes from a seeded RNG. With ``work_conserving=True`` the cpu, disk and
net share left unused by sandboxes whose demand is below their share is handed to those that
want more, in proportion to their shares (water-filling), as a real proportional-share
scheduler does (memory stays a hard limit, as in the real drivers).

By default a usage reading reflects the shares and demands in force when it is taken, so
the driver is fully deterministic given its seed. Given a ``clock`` (a callable returning
seconds), usage is averaged over time instead: between two readings every change of shares
starts a new segment and the reading is the time-weighted mean of the segments.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping

from tycoon.resources import RESOURCES, Capacity, Shares, Usage
from tycoon.vmm.validate import check_account, check_shares

GB = 1024**3
MB = 1024**2

PRESETS: dict[str, Capacity] = {
    # cpu in MHz (cores × clock), memory and disk in bytes, net in bit/s
    "tiny": Capacity(cpu=1_000, memory=512 * MB, disk=10 * GB, net=10_000_000, cores=1),
    "small": Capacity(cpu=2_000, memory=2 * GB, disk=50 * GB, net=100_000_000, cores=1),
    "medium": Capacity(cpu=8_000, memory=8 * GB, disk=200 * GB, net=1_000_000_000, cores=4),
    "large": Capacity(cpu=32_000, memory=64 * GB, disk=2_000 * GB, net=10_000_000_000, cores=16),
}
DEFAULT_PRESET = "medium"
WORK_CONSERVING: frozenset[str] = frozenset({"cpu", "disk", "net"})
"""Resources whose idle share flows to others with ``work_conserving=True``; memory is a hard
limit in the real drivers (memory.max, the Xen dynamic range), so it never flows."""

Demand = float | Mapping[str, float]


def capacity_from_config(
    preset: str = DEFAULT_PRESET,
    *,
    cpu: int | None = None,
    memory: int | None = None,
    disk: int | None = None,
    net: int | None = None,
    cores: int | None = None,
) -> Capacity:
    """A capacity from a preset name, with any of its fields overridden (positive ints)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    base = PRESETS[preset]
    values = {
        "cpu": cpu if cpu is not None else base.cpu,
        "memory": memory if memory is not None else base.memory,
        "disk": disk if disk is not None else base.disk,
        "net": net if net is not None else base.net,
        "cores": cores if cores is not None else base.cores,
    }
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"capacity {key} must be a positive integer, not {value!r}")
    return Capacity(**values)


def _demand_vector(demand: Demand, default: float = 1.0) -> dict[str, float]:
    if isinstance(demand, int | float) and not isinstance(demand, bool):
        values = dict.fromkeys(RESOURCES, float(demand))
    elif isinstance(demand, Mapping):
        unknown = set(demand) - set(RESOURCES)
        if unknown:
            raise ValueError(f"unknown resource(s) in demand: {sorted(unknown)}")
        values = {r: float(demand.get(r, default)) for r in RESOURCES}
    else:
        raise ValueError(f"a demand is a fraction or a map of fractions, not {demand!r}")
    for r, v in values.items():
        if not math.isfinite(v) or v < 0.0:
            raise ValueError(f"demand for {r} must be a finite fraction >= 0, not {v!r}")
    return values


class SimulatedDriver:
    """A :class:`~tycoon.vmm.driver.Driver` for a host that exists only in memory."""

    name = "simulated"

    def __init__(
        self,
        *,
        preset: str = DEFAULT_PRESET,
        cpu: int | None = None,
        memory: int | None = None,
        disk: int | None = None,
        net: int | None = None,
        cores: int | None = None,
        demand: Mapping[str, Demand] | None = None,
        default_demand: Demand = 1.0,
        noise: float = 0.0,
        seed: int | None = None,
        work_conserving: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._capacity = capacity_from_config(
            preset, cpu=cpu, memory=memory, disk=disk, net=net, cores=cores
        )
        if not math.isfinite(noise) or not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be a fraction in [0, 1], not {noise!r}")
        self._noise = float(noise)
        self._rng = random.Random(seed)
        self._work_conserving = bool(work_conserving)
        self._clock: Callable[[], float] = clock or _frozen
        self._timed = clock is not None
        self._default_demand = _demand_vector(default_demand)
        self._demand: dict[str, dict[str, float]] = {}
        for account, value in (demand or {}).items():
            self._demand[check_account(account)] = _demand_vector(value, 1.0)
        self._sandboxes: set[str] = set()
        self._shares: dict[str, Shares] = {}
        # time-weighted integral of the usage rates since the last reading
        self._since = self._clock()
        self._mark = self._since
        self._integral: dict[str, dict[str, float]] = {}
        self._segments = 0

    # -- the Driver interface -------------------------------------------------------------

    def capacity(self) -> Capacity:
        """The configured capacity."""
        return self._capacity

    def create(self, account: str) -> None:
        """Create an (empty) sandbox; idempotent."""
        self._sandboxes.add(check_account(account))

    def destroy(self, account: str) -> None:
        """Forget a sandbox, its shares and its pending usage; idempotent."""
        self._advance()
        self._sandboxes.discard(account)
        self._shares.pop(account, None)
        self._integral.pop(account, None)

    def apply(self, shares: dict[str, Shares]) -> None:
        """Set every sandbox's shares at once; sandboxes not named get nothing.

        A sandbox named here but not yet created is created. Invalid shares (not a fraction,
        or a resource summing above 1) are refused and nothing changes.
        """
        check_shares(shares)
        self._advance()
        for account in shares:
            self._sandboxes.add(account)
        self._shares = {a: s for a, s in shares.items()}

    def usage(self) -> dict[str, Usage]:
        """Per sandbox, the mean fraction of each resource used since the previous call."""
        self._advance()
        now = self._mark
        elapsed = now - self._since
        if not self._timed or self._segments <= 1 or elapsed <= 0.0:
            means = self._rates()
        else:
            means = {
                a: {r: v / elapsed for r, v in integral.items()}
                for a, integral in self._integral.items()
            }
        result: dict[str, Usage] = {}
        for account in sorted(self._sandboxes):
            mean = means.get(account)
            if mean is None:
                result[account] = Usage()
                continue
            if self._noise:
                mean = {r: self._noisy(mean[r]) for r in RESOURCES}
            result[account] = Usage(mean["cpu"], mean["memory"], mean["disk"], mean["net"])
        self._since = now
        self._integral = {}
        self._segments = 0
        return result

    # -- simulation knobs -----------------------------------------------------------------

    def shares(self) -> dict[str, Shares]:
        """The shares in force now (a copy)."""
        return dict(self._shares)

    def sandboxes(self) -> list[str]:
        """The accounts that have a sandbox, sorted."""
        return sorted(self._sandboxes)

    # -- internals ------------------------------------------------------------------------

    def _rates(self) -> dict[str, dict[str, float]]:
        """The instantaneous usage fraction of every resource, per account with shares."""
        default = self._default_demand
        rates = {
            a: {r: min(getattr(s, r), self._demand.get(a, default)[r]) for r in RESOURCES}
            for a, s in self._shares.items()
        }
        if self._work_conserving:
            for r in WORK_CONSERVING:
                share = {a: getattr(s, r) for a, s in self._shares.items()}
                want = {a: self._demand.get(a, default)[r] for a in self._shares}
                used = _spread_idle({a: rates[a][r] for a in rates}, share, want)
                for a, value in used.items():
                    rates[a][r] = value
        return rates

    def _advance(self) -> None:
        """Integrate the current rates up to now and start a new segment."""
        now = self._clock()
        dt = max(0.0, now - self._mark)
        if dt > 0.0:
            for account, rate in self._rates().items():
                acc = self._integral.setdefault(account, dict.fromkeys(RESOURCES, 0.0))
                for r, v in rate.items():
                    acc[r] += v * dt
        self._mark = max(self._mark, now)
        self._segments += 1

    def _noisy(self, value: float) -> float:
        if self._noise == 0.0 or value == 0.0:
            return value
        factor = 1.0 + self._rng.uniform(-self._noise, self._noise)
        return min(1.0, max(0.0, value * factor))


def _frozen() -> float:
    return 0.0


def _spread_idle(
    used: dict[str, float], share: dict[str, float], want: dict[str, float]
) -> dict[str, float]:
    """Hand the capacity nobody uses to the accounts that want more, by share (water-filling).

    Only accounts holding a share of the resource take part: a zero share stays zero.
    """
    used = dict(used)
    idle = max(0.0, 1.0 - sum(used.values()))
    hungry = {a for a in used if share[a] > 0.0 and want[a] > used[a] + 1e-12}
    while idle > 1e-12 and hungry:
        total = sum(share[a] for a in hungry)
        given = 0.0
        for a in sorted(hungry):
            extra = min(idle * share[a] / total, want[a] - used[a])
            used[a] += extra
            given += extra
        idle -= given
        hungry = {a for a in hungry if want[a] > used[a] + 1e-12}
        if given <= 1e-15:
            break
    return used
