"""The interface between an auctioneer and the host it sells: one sandbox per host account.

The market core decides shares; a driver makes the host obey them and reports what
each sandbox really used, so that charging is for use, not for allocation.
"""

from __future__ import annotations

from typing import Protocol

from tycoon.resources import Capacity, Shares, Usage


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
