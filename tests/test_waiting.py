"""tycoon.waiting: a bounded wait on an event that a cancel always ends."""

from __future__ import annotations

import asyncio

import pytest

from tycoon.waiting import wait_set


async def test_set_event_returns_true_and_timeout_false() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    event.set()
    assert await wait_set(event, 0.01) is True


async def loop_until_cancelled(event: asyncio.Event, turns: list[int]) -> None:
    """A worker as the agent and the auctioneer write them: sleep on an event, loop."""
    while True:
        await wait_set(event, 5.0)
        event.clear()
        turns.append(1)


@pytest.mark.parametrize("yields", range(4))
async def test_a_cancel_landing_with_the_wake_up_is_not_lost(yields: int) -> None:
    # The attack on the old ``asyncio.wait_for(event.wait(), t)``: on 3.11 a cancel that
    # arrives in the same turn as the wake-up is swallowed and the loop runs on forever.
    event = asyncio.Event()
    turns: list[int] = []
    task = asyncio.create_task(loop_until_cancelled(event, turns))
    await asyncio.sleep(0)
    event.set()
    for _ in range(yields):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), 2.0)
    assert task.cancelled()
