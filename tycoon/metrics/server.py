"""``/metrics`` over HTTP from the service's own asyncio loop.

Not ``prometheus_client.start_http_server``: its thread would read the services' dicts
and arrays while the loop changes them. Served from the loop, a scrape sees one consistent
moment of every counter and core, like a request handler does. The server speaks just
enough HTTP/1.1 for Prometheus and curl: GET (or HEAD) of ``/metrics``, one request per
connection, headers bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector

from tycoon.bus.histogram import Histogram
from tycoon.log import get_logger
from tycoon.metrics.collectors import CommonCollector, DomainCollector, describe

LAG_PROBE_S = 0.25
MAX_HEADER_LINES = 64
READ_TIMEOUT_S = 5.0
log = get_logger("metrics")


class LoopLag:
    """Sleeps ``period`` again and again on the loop and records how late it woke."""

    def __init__(self, period: float = LAG_PROBE_S) -> None:
        self.period = period
        self.hist = Histogram()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="metrics-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(self.period)
            self.hist.observe(max(0.0, time.monotonic() - began - self.period))


def registry_for(target: Any, lag: Histogram | None = None) -> CollectorRegistry:
    """A registry of its own (not the global one) for a bank, auctioneer, SLS or agent, so
    several services in one process do not clash; ``process_*`` metrics included."""
    name, bus, service, read = describe(target)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CommonCollector(name, bus, service, lag or Histogram()))
    registry.register(DomainCollector(read))
    ProcessCollector(registry=registry)
    return registry


class MetricsServer:
    """Serves one registry on ``http://host:port/metrics``; an async context manager.

    ``port`` 0 picks a free port (read :attr:`port` after :meth:`start`)."""

    def __init__(self, target: Any, *, port: int = 0, host: str = "127.0.0.1") -> None:
        self.lag = LoopLag()
        self.registry = registry_for(target, self.lag.hist)
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.lag.start()
        log.info("metrics serving", url=self.url)

    async def stop(self) -> None:
        """Stop listening (the metrics of the stopped services are gone with it)."""
        await self.lag.stop()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, body, head = await self._answer(reader)
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
            if not head:
                writer.write(body)
            await writer.drain()
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes, bool]:
        line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
        for _ in range(MAX_HEADER_LINES):  # the headers say nothing we need
            if (await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)).strip() == b"":
                break
        else:
            return "431 Request Header Fields Too Large", "text/plain", b"too many headers\n", False
        parts = line.decode("latin-1").split()
        method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET /metrics\n", False
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry), method == "HEAD"
        if path == "/":
            return "200 OK", "text/plain", b"Tycoon metrics: GET /metrics\n", method == "HEAD"
        return "404 Not Found", "text/plain", b"not found; try /metrics\n", False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--metrics-port`` and ``--metrics-host`` flags of a service command."""
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve Prometheus metrics on http://HOST:PORT/metrics (0: any "
                             "free port; default: off)")
    parser.add_argument("--metrics-host", default="127.0.0.1",
                        help="the metrics listener's address (default 127.0.0.1)")


async def serve_from_args(args: argparse.Namespace, target: Any) -> MetricsServer | None:
    """Start the metrics server ``args`` ask for (None without ``--metrics-port``) and
    print its URL."""
    port = getattr(args, "metrics_port", None)
    if port is None:
        return None
    server = MetricsServer(target, port=port, host=args.metrics_host)
    await server.start()
    print(f"metrics on {server.url}", flush=True)
    return server


async def stop_server(server: MetricsServer | None) -> None:
    """Stop ``server`` if there is one (what :func:`serve_from_args` returned)."""
    if server is not None:
        await server.stop()
