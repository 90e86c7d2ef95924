"""What an agent takes from the SLS's answer (pure: a stub SLS and bus, no server).

The public key of a row is the payee of the agent's bank transfers for that host, so a
row whose key is not the host's own (a host's id is derived from its key) must never be
taken: a fake or corrupt SLS could otherwise steer payments to another account.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tycoon.agent.agent import Agent, AgentConfig, sls_candidate
from tycoon.bus.keys import Identity, subject_id
from tycoon.errors import Rejected
from tycoon.money import MICRO
from tycoon.sls.client import HostRow


def row(identity: Identity, **fields: Any) -> dict[str, Any]:
    return {"host": subject_id(identity.public_key), "public_key": identity.public_key,
            "capacity": 2000, "price": 150.0, **fields}


def test_a_row_is_taken_only_with_the_hosts_own_key() -> None:
    host, thief = Identity.generate(), Identity.generate()
    assert sls_candidate(row(host)) == (subject_id(host.public_key), host.public_key,
                                        2000.0, 150.0)
    assert sls_candidate(row(host, public_key=thief.public_key)) is None
    for bad in (
        row(host, public_key="U" + "A" * 55),  # not a valid key
        row(host, public_key=None),
        row(host, host=7),
        row(host, capacity=-1),
        row(host, capacity=True),
        row(host, price=float("nan")),
        row(host, price=float("inf")),
        row(host, price="cheap"),
        ["not", "a", "map"],
    ):
        assert sls_candidate(bad) is None, bad


def test_typed_rows_refuse_a_key_that_is_not_the_hosts() -> None:
    host, thief = Identity.generate(), Identity.generate()
    body = {**row(host), "name": "h", "driver": "simulated", "resource": "cpu",
            "unit_price": 0.075, "utilization": 0.5, "bidders": 1, "availability": 1.0,
            "seq": 1, "heartbeat_s": 1.0, "last_seen_ns": 1}
    assert HostRow.from_body(body).public_key == host.public_key
    with pytest.raises(Rejected, match="public key"):
        HostRow.from_body({**body, "public_key": thief.public_key})


class StubBus:
    """Enough of a Bus for discovery: an identity, publishes kept, subscriptions noted."""

    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.published: list[tuple[str, str, dict[str, Any]]] = []
        self.subscribed: list[str] = []

    async def publish(self, subject: str, kind: str, body: dict[str, Any]) -> None:
        self.published.append((subject, kind, body))

    async def subscribe(self, subject: str, handler: Any, **_: Any) -> Any:
        self.subscribed.append(subject)
        return SimpleNamespace(unsubscribe=self._nothing)

    async def _nothing(self) -> None:
        return None


class StubSLS:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows
        self.asked: list[dict[str, Any]] = []

    async def query(self, resource: str, **filters: Any) -> list[Any]:
        self.asked.append({"resource": resource, **filters})
        return self.rows


async def test_discovery_ignores_forged_rows_and_says_so(tmp_path: Path) -> None:
    honest, other, thief = Identity.generate(), Identity.generate(), Identity.generate()
    bus = StubBus()
    agent = Agent(bus, Identity.generate().public_key,  # type: ignore[arg-type]
                  AgentConfig(budget=10 * MICRO, deadline_s=60), tmp_path / "agent.db")
    sls = StubSLS([row(honest), row(other, public_key=thief.public_key),
                   row(other, price=-5.0)])
    agent.sls = sls  # type: ignore[assignment]
    await agent._discover()
    assert agent.payees == {subject_id(honest.public_key): honest.public_key}
    assert set(agent.quotes) == {subject_id(honest.public_key)}
    assert agent.summary.warnings == ["ignored 2 malformed SLS row(s)"]
    assert any(kind == "agent.warning" for _, kind, _ in bus.published)
    assert sls.asked[0]["ties"] == "random"  # equal hosts come in random order
