"""What a host sells and what its accounts get and use: the resource names, a host's
capacity, an account's shares and its measured usage.

Plain values shared by the market, the SLS, the agents and the VMM drivers (which enforce
shares and read usage), so none of them depends on another to speak of resources.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RESOURCES: tuple[str, ...] = ("cpu", "memory", "disk", "net")
"""The divisible resources every host sells, in a fixed order."""


@dataclass(frozen=True)
class Capacity:
    """What a host has to sell, in base units.

    cpu in MHz (cores × clock), memory and disk in bytes, net in bits/s;
    ``cores`` is kept so a driver can turn a CPU share into a quota.
    """

    cpu: int
    memory: int
    disk: int
    net: int
    cores: int = 1

    def of(self, resource: str) -> int:
        """The capacity of one resource by name."""
        return int(getattr(self, resource))


@dataclass(frozen=True)
class Shares:
    """The fractions of each resource (0..1) one host account is entitled to now."""

    cpu: float = 0.0
    memory: float = 0.0
    disk: float = 0.0
    net: float = 0.0
    ports: tuple[int, ...] = field(default_factory=tuple)

    def of(self, resource: str) -> float:
        return float(getattr(self, resource))


@dataclass(frozen=True)
class Usage:
    """Fractions of each resource one sandbox actually used since the last reading."""

    cpu: float = 0.0
    memory: float = 0.0
    disk: float = 0.0
    net: float = 0.0

    def of(self, resource: str) -> float:
        return float(getattr(self, resource))
