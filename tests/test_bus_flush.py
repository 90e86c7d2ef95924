"""Bus.flush is a barrier for what this connection sent: nats-py 2.16 writes the PING of its
``flush`` straight to the socket, ahead of a SUB still queued for its flusher task, so a
service "started" after a flush could answer its first request with no responders (the
store restarted in test_redteam_bundles, 3 in 60 runs under xdist). The bytes written to the
socket must show every SUB before the PING."""

from __future__ import annotations

from typing import Any

import pytest

from tycoon.bus.connection import open_bus
from tycoon.bus.keys import Identity

pytestmark = pytest.mark.nats


async def ignore(_msg: Any) -> None:
    """No message comes."""


async def test_flush_sends_the_queued_subscriptions_before_its_ping(nats_url: str) -> None:
    bus = await open_bus(nats_url, Identity.generate())
    try:
        await bus.nc.flush()
        transport, wire = bus.nc._transport, bytearray()
        write, writelines = transport.write, transport.writelines

        def spy_write(data: Any) -> None:
            wire.extend(data)
            write(data)

        def spy_writelines(lines: Any) -> None:
            lines = list(lines)
            for line in lines:
                wire.extend(line)
            writelines(lines)

        transport.write, transport.writelines = spy_write, spy_writelines
        try:
            for n in range(5):
                await bus.nc.subscribe(f"tycoon.flushtest.{n}", cb=ignore)
            await bus.flush()
        finally:
            transport.write, transport.writelines = write, writelines
        assert wire.count(b"SUB ") == 5 and b"PING\r\n" in wire, bytes(wire)
        assert wire.rindex(b"SUB ") < wire.index(b"PING\r\n"), bytes(wire)
    finally:
        await bus.close()
