"""The end of every ``serve`` command: metrics, a banner, readiness, then run until a signal."""

from __future__ import annotations

import argparse
from typing import Any

from tycoon.bus.runner import run_until_signal
from tycoon.metrics.server import serve_from_args, stop_server
from tycoon.supervisor import notify_ready


async def serve_until_signal(args: argparse.Namespace, banner: str,
                             metrics_of: Any = None) -> None:
    """Serve the metrics of ``metrics_of`` if ``args`` ask for them (``--metrics-port``),
    print ``banner``, signal readiness (``--ready-fd``), then wait for SIGTERM/SIGINT; the
    metrics server stops before the caller's service does."""
    metrics = await serve_from_args(args, metrics_of) if metrics_of is not None else None
    try:
        print(banner, flush=True)
        notify_ready(args.ready_fd)
        await run_until_signal()
    finally:
        await stop_server(metrics)
