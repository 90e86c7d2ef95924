"""Shared fixtures: a real nats-server on a free port, fresh identities."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import structlog

from tycoon.bus.keys import Identity
from tycoon.log import configure_logging
from tycoon.natsserver import NatsServer, nats_server_binary


@pytest.fixture(scope="session", autouse=True)
def _nats_server_installed() -> None:
    # CI must fail, not skip, when the binary is missing.
    nats_server_binary()


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
async def nats_server() -> AsyncIterator[NatsServer]:
    """A started nats-server on loopback, stopped after the test."""
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
