"""Red-team attacks on the bus (real nats-server with the generated permissions): crafted
reply subjects that pass the inbox check's shape but are odd on the wire, and a service
that must keep answering honest users after them."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from test_hostile_bus import World, world  # noqa: F401 (the fixture)

from tycoon.auctioneer.client import AuctioneerClient
from tycoon.bank.client import BankClient
from tycoon.bus import subjects
from tycoon.bus.connection import inbox_prefix, reply_allowed
from tycoon.bus.envelope import seal
from tycoon.bus.keys import Identity, subject_id
from tycoon.errors import Rejected
from tycoon.money import MICRO

pytestmark = [pytest.mark.hostile, pytest.mark.nats, pytest.mark.timeout(90)]


def test_odd_inbox_forms_are_refused_or_confined_to_the_signer() -> None:
    """Shapes the first red team did not list: no form lets a reply leave the signer's
    namespace (its own inbox, or its id's branch of a shared connection's inbox)."""
    alice, bob = Identity.generate(), Identity.generate()
    mine, bobs = inbox_prefix(alice), subject_id(bob.public_key)
    for bad in (mine, f"{mine}.", f"{mine}..x", f"{mine}.x.", f"{mine}.*", f"{mine}.>",
                f"{mine}.x.>", f"{mine}.x\r\nPUB $JS.API.STREAM.PURGE.PRICES 0", f"{mine}.x\t",
                f"{mine}.x\u00a0y", mine.upper() + ".x", f" {mine}.x", f"{mine}.{'x' * 300}",
                f"_INBOX.{bobs}.{subject_id(alice.public_key)}",  # 3 tokens: not shared form
                f"_inbox.{subject_id(alice.public_key)}.x"):
        assert not reply_allowed(bad, alice.public_key), repr(bad)
    # the shared-connection form confines a reply to the signer's own id under another
    # connection's inbox: the victim's connection subscribes only to its own ids' branches
    assert reply_allowed(f"_INBOX.{bobs}.{subject_id(alice.public_key)}.n.1", alice.public_key)
    assert not reply_allowed(f"_INBOX.{bobs}.{bobs}.n.1", alice.public_key)


async def test_control_characters_in_a_reply_subject_do_not_break_a_service(
        world: World) -> None:  # noqa: F811
    """A reply subject of the signer's own inbox with a NUL, DEL or non-ASCII character
    (the inbox check allows any non-space, non-dot, non-wildcard token): the service's
    publish there must not cost it its connection; honest requests are answered after."""
    w = world
    mallory, honest = w.users
    bus = await w.bus(mallory)
    mine = inbox_prefix(mallory)
    odd = [f"{mine}.a\x00b", f"{mine}.a\x7fb", f"{mine}.\u00e4", f"{mine}.\x1b[2J",
           f"{mine}.{'é' * 120}"]
    for reply in odd:
        for subject, kind in ((subjects.bank("info"), "bank.info"),
                              (subjects.sls("query"), "sls.query"),
                              (subjects.host_op(w.host_id, "status"), "host.status")):
            body = {"resource": "cpu"} if kind == "sls.query" else {}
            await bus.nc.publish(subject, seal(mallory, kind, body, subject=subject),
                                 reply=reply)
    await bus.flush()
    await asyncio.sleep(0.3)
    for service in (w.bank.bus, w.sls.service.bus, w.host.service.service.bus):
        assert service.nc.is_connected and not service.nc.is_closed
    client = BankClient(await w.bus(honest), w.bank.bus.identity.public_key)
    assert await client.balance() >= MICRO  # _fill paid user 1 three credits
    assert (await (await w.bus(honest)).request(subjects.sls("query"), "sls.query",
                                                {"resource": "cpu"})).kind == "reply"


async def test_refund_requests_cannot_make_the_host_read_usage_at_will(
        world: World) -> None:  # noqa: F811
    """A refund takes a usage reading of *every* account first (a tick's whole work: the
    driver's usage, charging, a commit). An account with nothing to refund sending refund
    requests (within its rate limit) must not make the host read on each: a host with
    10,000 bids spends ~25 ms a reading, so a few keys at 20 requests/s would keep it busy."""
    w = world
    alice = w.users[0]
    bus = await w.bus(alice)
    bank = BankClient(bus, w.bank.bus.identity.public_key)
    host_key = w.deployment.public_key(w.deployment.hosts[0].key)
    host = AuctioneerClient(bus, w.host_id)
    await host.fund(await bank.transfer(host_key, MICRO, transfer_id="redteam-fund"))
    await host.refund()
    service = w.host.service
    calls = 0
    usage = service.driver.usage

    def counting() -> Any:
        nonlocal calls
        calls += 1
        return usage()

    service.driver.usage = counting  # type: ignore[method-assign]
    started = asyncio.get_running_loop().time()
    for _ in range(15):
        with contextlib.suppress(Rejected):
            await host.refund()
    elapsed = asyncio.get_running_loop().time() - started
    ticks = elapsed / 0.2 + 2  # the host's own tick every 0.2 s
    assert calls <= ticks, (calls, ticks)
