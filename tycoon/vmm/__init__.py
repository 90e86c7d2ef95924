"""VMM drivers: how an auctioneer makes a host obey the market's shares.

``make_driver(name, **config)`` builds one by name: ``simulated``, ``cgroups`` or ``xen``.
"""

from __future__ import annotations

import inspect
from typing import Any

from tycoon.resources import RESOURCES, Capacity, Shares, Usage
from tycoon.vmm.driver import Driver

DRIVERS: tuple[str, ...] = ("simulated", "cgroups", "xen")

__all__ = ["DRIVERS", "RESOURCES", "Capacity", "Driver", "Shares", "Usage", "make_driver"]


def make_driver(name: str, **config: Any) -> Driver:
    """A driver by name, configured by keyword arguments (see docs/drivers.md).

    Unknown names or config keys raise ``ValueError`` naming the problem.
    """
    if name == "simulated":
        from tycoon.vmm.simulated import SimulatedDriver

        return _build(SimulatedDriver, name, config)
    if name == "cgroups":
        from tycoon.vmm.cgroups import CgroupsDriver

        return _build(CgroupsDriver, name, config)
    if name == "xen":
        from tycoon.vmm.xen.driver import XenDriver

        return _build(XenDriver, name, config)
    raise ValueError(f"unknown driver {name!r} (known: {', '.join(DRIVERS)})")


def config_keys(cls: Any) -> list[str]:
    """The config keys a driver class accepts (its keyword-only constructor parameters)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _build(cls: Any, name: str, config: dict[str, Any]) -> Driver:
    unknown = sorted(set(config) - set(config_keys(cls)))
    if unknown:
        raise ValueError(
            f"unknown config key(s) for driver {name!r}: {', '.join(unknown)} "
            f"(known: {', '.join(config_keys(cls))})"
        )
    driver: Driver = cls(**config)
    return driver
