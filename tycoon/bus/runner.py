"""Run long-lived services until a signal: SIGTERM/SIGINT drain and stop, SIGHUP reloads."""

from __future__ import annotations

import asyncio
import inspect
import signal
from collections.abc import Callable
from typing import Any

from tycoon.log import get_logger


async def run_until_signal(
    *parts: Any, on_reload: Callable[[], Any] | None = None, stop_event: asyncio.Event | None = None
) -> None:
    """Wait for SIGTERM/SIGINT (or ``stop_event``), then stop ``parts`` in reverse order.

    Each part has an async ``stop()`` or ``close()``. SIGHUP calls ``on_reload``.
    """
    log = get_logger("runner")
    loop = asyncio.get_running_loop()
    done = stop_event or asyncio.Event()

    def reload() -> None:
        if on_reload is None:
            log.info("SIGHUP ignored: nothing to reload")
            return
        log.info("reloading config")
        result = on_reload()
        if inspect.isawaitable(result):
            loop.create_task(result)  # noqa: RUF006 - fire and forget, logged by the callee

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await done.wait()
        log.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        for part in reversed(parts):
            closer = getattr(part, "stop", None) or getattr(part, "close", None)
            if closer is not None:
                try:
                    await closer()
                except Exception:
                    log.exception("stop failed", part=type(part).__name__)
