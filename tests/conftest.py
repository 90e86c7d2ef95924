"""Shared fixtures: a real nats-server on a free port, fresh identities."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import structlog

from tycoon.bus.keys import Identity
from tycoon.log import configure_logging
from tycoon.natsserver import PORTS_ENV, NatsServer, free_port, nats_server_binary

SERVER_MARKS = ("nats", "hostile", "faults")
"""A test that runs a nats-server carries one of these; pure tests carry none and run
without the binary (``make test-fast``)."""

TERMINAL_ENV = ("COLUMNS", "LINES")
"""xdist workers start with COLUMNS=80 and LINES=24 set; the CLIs the tests run size their
tables by COLUMNS, so a worker gets back exactly what the controller had."""


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Controller side (pytest-xdist): hand each worker the controller's terminal env."""
    node.workerinput["terminal_env"] = {k: os.environ.get(k) for k in TERMINAL_ENV}


PORT_SLICE = 2500
"""Ports each xdist worker takes its servers' ports from, in turn, from 10000 up: below the
kernel's ephemeral range (32768 up here), so neither another worker nor an outgoing
connection takes a chosen port before its server binds it (tycoon.natsserver.PORTS_ENV)."""


def pytest_configure(config: pytest.Config) -> None:
    # the tests run as root, and some run an auctioneer with --jobs on the simulated driver
    os.environ.setdefault("TYCOON_UNCONFINED_JOBS", "1")  # tycoon.cli.jobs.UNCONFINED_ENV
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0 for a serial run too
    index = int(worker.removeprefix("gw") or 0) % 8
    low = 10000 + index * PORT_SLICE
    os.environ[PORTS_ENV] = f"{low}-{low + PORT_SLICE - 1}"
    given = getattr(config, "workerinput", {}).get("terminal_env")
    for name, value in (given or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _first(item: pytest.Item) -> int:
    """Scheduling rank under xdist: long tests first, pure tests last (they fill the tail)."""
    if item.get_closest_marker("slow"):
        return 0
    if any(item.get_closest_marker(m) for m in (*SERVER_MARKS, "cgroups")):
        return 1
    return 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # every worker sorts alike: the collections match
        items.sort(key=_first)


@pytest.fixture(scope="session")
def _nats_server_installed() -> None:
    # CI must fail, not skip, when the binary is missing.
    nats_server_binary()


def _needs_server(request: pytest.FixtureRequest) -> bool:
    return any(request.node.get_closest_marker(mark) for mark in SERVER_MARKS)


@pytest.fixture(autouse=True)
def _server_tests_need_the_binary(request: pytest.FixtureRequest) -> None:
    if _needs_server(request):
        request.getfixturevalue("_nats_server_installed")


@pytest.fixture(scope="session", autouse=True)
def _logging_baseline() -> None:
    configure_logging("info", json=True)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test may quieten logging for itself; the next test starts from the baseline."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
async def nats_server(request: pytest.FixtureRequest) -> AsyncIterator[NatsServer]:
    """A started nats-server on loopback, stopped after the test."""
    if not _needs_server(request):
        pytest.fail(f"{request.node.nodeid} starts a nats-server: mark it "
                    f"{' or '.join(SERVER_MARKS)} so the pure selection leaves it out")
    async with NatsServer() as server:
        yield server


@pytest.fixture
async def nats_monitored(request: pytest.FixtureRequest) -> AsyncIterator[NatsServer]:
    """``nats_server`` with its HTTP monitor on (``-m``): ``polling.subscribed`` asks it
    whether a client (a CLI the test started) has subscribed yet, instead of a fixed sleep."""
    if not _needs_server(request):
        pytest.fail(f"{request.node.nodeid} starts a nats-server: mark it "
                    f"{' or '.join(SERVER_MARKS)} so the pure selection leaves it out")
    async with NatsServer(extra_args=["-m", str(free_port())]) as server:
        yield server


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """The URL of a running nats-server."""
    return nats_server.url


@pytest.fixture
def identity_factory() -> Callable[[], Identity]:
    """Call it to get a fresh random identity."""
    return Identity.generate
