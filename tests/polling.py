"""Waiting for a condition in tests: one helper, async (:func:`until`) and blocking
(:func:`until_blocking`), instead of a hand-rolled loop per file.

Both call ``check`` until it returns something truthy and return that value; after
``timeout`` seconds they fail the test with ``AssertionError`` naming ``what``. Exceptions of
the types in ``ignore`` count as "not yet" (a service still starting, a connection refused).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from tycoon.natsserver import NatsServer

T = TypeVar("T")


async def until(check: Callable[[], Any], *, timeout: float = 10.0, every: float = 0.05,
                what: str = "condition", ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """Await (or call) ``check()`` every ``every`` seconds until it is truthy; return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except ignore:
            value = None
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(every)


def until_blocking(check: Callable[[], T], *, timeout: float = 10.0, every: float = 0.25,
                   what: str = "condition",
                   ignore: tuple[type[BaseException], ...] = ()) -> T:
    """:func:`until` for code outside an event loop (sleeps the thread)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except ignore:
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(every)


async def refused(url: str, seed: str) -> bool:
    """True once nats-server refuses a connection with this nkey seed (a revoked key, after
    the server reloaded its config): an error or a reset."""
    import nats  # only the tests that revoke keys need a client here

    try:
        nc = await nats.connect(url, nkeys_seed_str=seed, allow_reconnect=False,
                                max_reconnect_attempts=0, connect_timeout=2)
    except (nats.errors.Error, OSError):
        return True
    await nc.close()
    return False


def subscribed(server: NatsServer, subject: str) -> bool:
    """True once a client of ``server`` (started with ``-m PORT``, as the ``nats_monitored``
    fixture does) has a subscription matching ``subject``, read from its /subsz monitor."""
    port = server.extra_args[server.extra_args.index("-m") + 1]
    query = urllib.parse.urlencode({"subs": 1, "test": subject})
    with urllib.request.urlopen(f"http://{server.host}:{port}/subsz?{query}", timeout=2) as r:
        return json.load(r)["total"] > 0
