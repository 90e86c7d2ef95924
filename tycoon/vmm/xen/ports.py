"""Forwarding granted TCP ports to the holder's VM: DNAT rules in a chain of our own.

The Xen driver calls its ``forwarder`` with the whole wanted map ``{port: vm_ip}`` whenever it
changes; :class:`IptablesForwarder` turns that into ``iptables -t nat`` commands that flush
and refill the ``TYCOON`` chain (hooked from PREROUTING once). Rules are built by a pure
function, so they can be checked without touching a firewall.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable, Sequence

from tycoon.errors import Rejected

CHAIN = "TYCOON"


def iptables_commands(forwards: dict[int, str], *, chain: str = CHAIN,
                      interface: str | None = None) -> list[list[str]]:
    """The iptables argv lists that make the chain forward exactly ``forwards``."""
    commands = [["iptables", "-t", "nat", "-F", chain]]
    for port, ip in sorted(forwards.items()):
        if not 0 < port < 65536:
            raise Rejected("bad_share", f"port {port} out of range")
        try:
            address = ipaddress.ip_address(ip)  # refuses anything but an address
        except ValueError as error:
            raise Rejected("driver_failed", f"not an IP address: {ip!r}") from error
        rule = ["iptables", "-t", "nat", "-A", chain, "-p", "tcp", "--dport", str(port)]
        if interface:
            rule += ["-i", interface]
        rule += ["-j", "DNAT", "--to-destination", f"{address}:{port}"]
        commands.append(rule)
    return commands


def setup_commands(*, chain: str = CHAIN) -> list[list[str]]:
    """Create the chain and hook it from PREROUTING (run once; errors if already there)."""
    return [["iptables", "-t", "nat", "-N", chain],
            ["iptables", "-t", "nat", "-A", "PREROUTING", "-j", chain]]


class IptablesForwarder:
    """A ``forwarder`` for :class:`~tycoon.vmm.xen.driver.XenDriver` that runs iptables (dom0)."""

    def __init__(self, *, chain: str = CHAIN, interface: str | None = None,
                 run: Callable[[Sequence[str]], None] | None = None) -> None:
        self.chain, self.interface = chain, interface
        self._run = run or _run

    def __call__(self, forwards: dict[int, str]) -> None:
        for argv in iptables_commands(forwards, chain=self.chain, interface=self.interface):
            self._run(argv)


def _run(argv: Sequence[str]) -> None:
    try:
        subprocess.run(list(argv), check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as error:
        raise Rejected("driver_failed", f"{' '.join(argv)}: {error}") from error
