"""Shared fixtures: a real nats-server on a free port, fresh identities."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import structlog

from tycoon.bus.keys import Identity
from tycoon.log import configure_logging
from tycoon.natsserver import NatsServer, nats_server_binary

SERVER_MARKS = ("nats", "hostile", "faults")
"""A test that runs a nats-server carries one of these; pure tests carry none and run
without the binary (``make test-fast``)."""


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
def nats_url(nats_server: NatsServer) -> str:
    """The URL of a running nats-server."""
    return nats_server.url


@pytest.fixture
def identity_factory() -> Callable[[], Identity]:
    """Call it to get a fresh random identity."""
    return Identity.generate
