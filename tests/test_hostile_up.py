"""Issue 18's reproductions, scripted against a fresh `tycoon up` with its generated permissions.

An ordinary user key admitted by `tycoon init --user` tries every attack of the issue over a
raw NATS connection: replies steered onto the JetStream API and onto service feeds, push and
durable consumers delivering into the bank, purges, direct gets, writes into SETTLEMENTS, and
a flood of garbage. Afterwards nothing was purged, no consumer exists, and `tycoon bank audit`
and `tycoon bank verify-log` both pass, with no step by hand.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tycoon.bus import subjects
from tycoon.bus.connection import open_bus
from tycoon.bus.envelope import seal
from tycoon.bus.keys import KeyStore, subject_id
from tycoon.deploy import Deployment

pytestmark = [pytest.mark.nats, pytest.mark.hostile, pytest.mark.slow, pytest.mark.timeout(150)]

GARBAGE = 5_000
STEERED = ("$JS.API.STREAM.PURGE.SETTLEMENTS", "$JS.API.STREAM.PURGE.PRICES",
           "$JS.API.STREAM.DELETE.PRICES")


def tycoon(*args: str, state: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TYCOON_LOG": "error", "TYCOON_HOME": str(state)}
    return subprocess.run([sys.executable, "-m", "tycoon.cli.main", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


async def stream_counts(js: object) -> list[int]:
    return [(await js.stream_info(name)).state.messages  # type: ignore[attr-defined]
            for name in ("SETTLEMENTS", "PRICES")]


async def attack(state: Path) -> tuple[list[int], list[int], list[str]]:
    """Run every reproduction as `mallory`; return stream counts before, after and consumers."""
    deployment = Deployment.load(state)
    operator = await open_bus(deployment.nats_url, deployment.store.load(deployment.operator_key))
    js = operator.nc.jetstream()
    before = await stream_counts(js)
    mallory = KeyStore(state).load("mallory")
    bus = await open_bus(deployment.nats_url, mallory)
    host = subject_id(deployment.public_key(deployment.hosts[0].key))
    requests = ((subjects.sls("query"), "sls.query", {"resource": "cpu"}),
                (subjects.bank("info"), "bank.info", {}),
                (subjects.host_op(host, "status"), "host.status", {}))
    targets = (*STEERED, subjects.price(host), subjects.BANK_SETTLED, subjects.SLS_SNAPSHOT)
    for subject, kind, body in requests:
        for target in targets:
            await bus.nc.publish(subject, seal(mallory, kind, body, subject=subject), reply=target)
            await asyncio.sleep(0.06)  # within any rate limit: each request is judged on its own
    push = {"stream_name": "PRICES", "config": {
        "durable_name": "evil", "deliver_subject": subjects.bank("info"), "deliver_group": "bank",
        "ack_policy": "none", "deliver_policy": "all"}}
    for api, body in (("$JS.API.CONSUMER.CREATE.PRICES", push),
                      ("$JS.API.CONSUMER.DURABLE.CREATE.PRICES.evil", push),
                      ("$JS.API.STREAM.PURGE.PRICES", None),
                      ("$JS.API.STREAM.PURGE.SETTLEMENTS", None),
                      ("$JS.API.DIRECT.GET.PRICES", {"seq": 1}),
                      ("tycoon.settlement.a.b", None)):
        data = b"" if body is None else json.dumps(body).encode()
        await bus.nc.publish(api, data, reply="$JS.API.STREAM.PURGE.PRICES")
    for i in range(GARBAGE):
        await bus.nc.publish(subjects.bank("info"), b"garbage %d" % i)
        if i % 1000 == 999:
            await bus.flush()
    await bus.flush()
    await asyncio.sleep(2)
    after = await stream_counts(js)
    consumers = [c.name for name in ("PRICES", "SETTLEMENTS")
                 for c in await js.consumers_info(name)]
    await bus.close()
    await operator.close()
    return before, after, consumers


def test_a_fresh_market_survives_every_reproduction(tmp_path: Path) -> None:
    state = tmp_path / "market"
    # the market must outlive the attack and verify-log: 15 s (counted from up's start) ran
    # out mid-attack on a loaded machine, and the attack's bus then waited forever
    up = subprocess.Popen(
        [sys.executable, "-m", "tycoon.cli.main", "up", "--duration", "30", "--hosts", "2",
         "--agents", "1", "--state", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TYCOON_LOG": "error"})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (state / "pids" / "host-2.pid").exists():
            time.sleep(0.2)
        url = tomllib.loads((state / "tycoon.toml").read_text())["market"]["nats_url"]
        while time.monotonic() < deadline:
            if tycoon("--nats", url, "--as", "operator", "status", "--check",
                      state=state).returncode == 0:
                break
            time.sleep(0.5)
        admitted = tycoon("init", "--user", "mallory", state=state)
        assert admitted.returncode == 0, admitted.stdout + admitted.stderr
        time.sleep(1.0)  # the server reloads its config on SIGHUP
        before, after, consumers = asyncio.run(attack(state))
        assert after[0] >= before[0] and after[1] >= before[1], (before, after)
        assert consumers == []
        verify = tycoon("--nats", url, "--as", "operator", "bank", "verify-log",
                        "--state", str(state), state=state)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        output, _ = up.communicate(timeout=120)
        assert up.returncode == 0, output[-4000:]
    finally:
        if up.poll() is None:
            up.kill()
    audit = tycoon("bank", "audit", "--state", str(state), state=state)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    logs = state / "logs"
    bank_log = logs / "bank.log"
    if bank_log.exists():  # refusals are counted, not logged one line each
        assert len(bank_log.read_text().splitlines()) < 200
