"""Bounded waits that never swallow a cancellation.

On Python 3.11, ``asyncio.wait_for`` can lose a ``cancel()`` that lands just as the awaited
thing completes (CPython gh-86296, fixed in 3.12): the caller returns normally and keeps
running after it was told to stop, so a ``stop()`` awaiting it hangs. ``asyncio.timeout``
has no such window. Loops that sleep on an event until woken or timed out (the ones a
``stop()`` cancels) wait through :func:`wait_set`.
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it is set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
