"""The seeded chaos run in CI: SIGKILLs of bank, hosts, SLS, agents and nats-server
(random, just before deadlines, just after commits); at the end every agent's money is
home with no step by hand (see tests/chaos_kit.py for the schedule and the checks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chaos_kit import ChaosConfig, run_chaos

from tycoon.log import configure_logging

pytestmark = [pytest.mark.nats, pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(300)]


async def test_seeded_chaos_brings_every_credit_home(tmp_path: Path) -> None:
    configure_logging("error")
    result = await run_chaos(ChaosConfig(seed=7), tmp_path)
    print(json.dumps(result, sort_keys=True))
    assert result["outstanding_uc"] == 0 and result["pending_refunds"] == 0
    assert result["user_outstanding"] == 0
    assert result["kills"] >= 10
    assert {"bank", "nats"} <= set(result["kills_by_target"])
