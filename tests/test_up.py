"""The main job end to end: `tycoon up`, a tap beside it, `tycoon-pub`, `tycoon status`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from up_kit import stop

pytestmark = [pytest.mark.nats, pytest.mark.slow]


def tycoon(*args: str, home: Path | None = None, timeout: float = 60,
           script: str = "tycoon.cli.main") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TYCOON_LOG": "error"}
    if home is not None:
        env["TYCOON_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", script, *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def pub(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return tycoon(*args, home=home, script="tycoon.cli.pub")


def test_up_runs_a_market_that_a_tap_can_watch(tmp_path: Path) -> None:
    """`tycoon up` with its own (permissioned) server; the operator taps beside it."""
    state = tmp_path / "market"
    up = subprocess.Popen(
        [sys.executable, "-m", "tycoon.cli.main", "up", "--duration", "25", "--hosts", "4",
         "--agents", "3", "--state", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tap: subprocess.Popen[str] | None = None
    tap_path = tmp_path / "tap.jsonl"
    try:
        for _ in range(300):  # the server is up once its pid file is written
            if (state / "pids" / "nats.pid").exists():
                break
            time.sleep(0.1)
        url = tomllib.loads((state / "tycoon.toml").read_text())["market"]["nats_url"]
        with tap_path.open("w") as out:
            tap = subprocess.Popen(
                [sys.executable, "-m", "tycoon.cli.main", "--nats", url, "--home", str(state),
                 "--as", "operator", "tap", "--json", "--timeout", "150"], stdout=out, text=True)
            output, _ = up.communicate(timeout=180)
        assert up.returncode == 0, output[-4000:]
        assert "bank audit passes" in output
    finally:
        if up.poll() is None:
            up.kill()
        if tap is not None:
            tap.terminate()
            tap.wait(10)
    audit = tycoon("bank", "audit", "--state", str(state))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    kinds = {json.loads(line).get("kind") for line in tap_path.read_text().splitlines()
             if line.strip()}
    assert {"price", "alloc", "agent.rebid", "agent.plan", "bank.settled"} <= kinds, kinds


def test_pub_and_status_against_a_running_market(nats_url: str, tmp_path: Path) -> None:
    state = tmp_path / "market"
    up = subprocess.Popen(
        [sys.executable, "-m", "tycoon.cli.main", "up", "--nats", nats_url, "--duration", "90",
         "--hosts", "2", "--agents", "0", "--state", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if tycoon("--nats", nats_url, "status", "--check").returncode == 0 and \
                    (state / "pids" / "host-2.pid").exists():
                break
            time.sleep(0.5)
        assert tycoon("--nats", nats_url, "status", "--check").returncode == 0
        home = ["--nats", nats_url, "--as", "alice"]
        # in a market's home an unknown --as is refused, never created: make the key first
        refused = tycoon(*home, "bank", "open", home=state)
        assert refused.returncode == 1 and "run: tycoon init --user alice" in refused.stderr
        assert not (state / "keys" / "alice.nk").exists()
        assert tycoon("keys", "new", "alice", home=state).returncode == 0
        assert tycoon(*home, "bank", "open", home=state).returncode == 0
        alice = tycoon(*home, "keys", "show", "alice", "--json", home=state)
        key = json.loads(alice.stdout)["public_key"]
        minted = tycoon("--nats", nats_url, "--as", "operator", "bank", "mint", key, "100",
                        home=state)
        assert minted.returncode == 0, minted.stderr
        # no funds at the host yet: refused with its code
        broke = pub(*home, "bid", "host-1", "1h", "cpu:1,0.1,1.0", home=state)
        assert broke.returncode != 0 and "error:" in broke.stderr, broke.stderr
        # a malformed bid: the parser's error names the bad token
        bad = pub(*home, "bid", "host-1", "1h", "cpu:1,zero,1.0", home=state)
        assert bad.returncode != 0 and "bad_bid" in bad.stderr and "zero" in bad.stderr
        funded = pub(*home, "fund", "host-1", "25", home=state)
        assert funded.returncode == 0, funded.stderr
        bid = pub(*home, "bid", "host-1", "1h", "cpu:1,0.1,1.0", "--json", home=state)
        assert bid.returncode == 0, bid.stderr
        assert json.loads(bid.stdout)["allocation"]["cpu"] > 0
        status = pub(*home, "status", "host-1", "--json", home=state)
        assert status.returncode == 0 and key in status.stdout
        # stop the bank: the health check fails
        bank_pid = int((state / "pids" / "bank.pid").read_text())
        os.kill(bank_pid, signal.SIGTERM)
        for _ in range(40):
            if tycoon("--nats", nats_url, "status", "--check").returncode == 1:
                break
            time.sleep(0.25)
        assert tycoon("--nats", nats_url, "status", "--check").returncode == 1
    finally:
        stop(up)
