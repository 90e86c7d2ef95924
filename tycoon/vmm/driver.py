"""The interface between an auctioneer and the host it sells: one sandbox per host account.

The market core decides shares; a driver makes the host obey them and reports what
each sandbox really used, so that charging is for use, not for allocation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

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


class Driver(Protocol):
    """What an auctioneer needs from a virtual machine monitor."""

    name: str

    def capacity(self) -> Capacity:
        """The host's capacity, read from the host or its config."""
        ...

    def create(self, account: str) -> None:
        """Create the sandbox of one host account (idempotent)."""
        ...

    def destroy(self, account: str) -> None:
        """Remove the sandbox of one host account (idempotent)."""
        ...

    def apply(self, shares: dict[str, Shares]) -> None:
        """Enforce the shares of every sandbox at once (accounts absent get nothing)."""
        ...

    def usage(self) -> dict[str, Usage]:
        """Per sandbox, the fraction of each resource used since the previous call."""
        ...
