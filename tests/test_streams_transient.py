"""`streams ensure` right after a cluster starts: a node whose JetStream has not joined yet
refuses placement ('peer offline'); that is asked again, a lack of storage is not."""

from __future__ import annotations

from typing import Any

import nats.js.errors
import pytest

from tycoon.errors import Rejected
from tycoon.streams.config import SPECS, ensure_stream, is_transient


class FormingCluster:
    """A JetStream context that refuses ``failures`` times with ``description``."""

    def __init__(self, failures: int, description: str) -> None:
        self.failures, self.description, self.calls = failures, description, 0

    async def stream_info(self, name: str) -> Any:
        raise nats.js.errors.NotFoundError

    async def add_stream(self, config: Any) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise nats.js.errors.BadRequestError(code=400, err_code=10005,
                                                 description=self.description)
        return f"created {config.name}"


def test_which_refusals_are_transient() -> None:
    offline = nats.js.errors.BadRequestError(
        code=400, err_code=10005, description="no suitable peers for placement, peer offline")
    storage = nats.js.errors.BadRequestError(
        code=400, err_code=10005,
        description="no suitable peers for placement, insufficient storage")
    assert is_transient(offline) and not is_transient(storage)
    assert not is_transient(TimeoutError())


async def test_a_forming_cluster_is_asked_again() -> None:
    js = FormingCluster(2, "no suitable peers for placement, peer offline")
    spec = next(iter(SPECS.values()))
    assert await ensure_stream(js, spec, settle_s=5) == f"created {spec.name}"
    assert js.calls == 3


async def test_missing_storage_is_refused_at_once() -> None:
    js = FormingCluster(5, "no suitable peers for placement, insufficient storage")
    with pytest.raises(Rejected, match="insufficient storage"):
        await ensure_stream(js, next(iter(SPECS.values())), settle_s=5)
    assert js.calls == 1
