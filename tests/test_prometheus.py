"""A real Prometheus scrapes a `tycoon up` and answers a query about it.

Debian's ``prometheus`` package: the session fixture installs it with apt-get when running
as root and it is missing; elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from up_kit import stop

from tycoon.metrics.targets import TARGETS
from tycoon.natsserver import free_port

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "tycoon-rules.yml"


def installed(program: str) -> str | None:
    """The path of ``program``, installing Debian's ``prometheus`` (which has both
    ``prometheus`` and ``promtool``) first if it is missing and this runs as root."""
    found = shutil.which(program)
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(os.devnull, "w") as quiet:
        done = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends",
                               "prometheus"], env=env, stdout=quiet, stderr=quiet,
                              timeout=900, check=False)
        if done.returncode != 0:  # a stale package list: update once and retry
            subprocess.run(["apt-get", "update"], stdout=quiet, stderr=quiet, timeout=300,
                           check=False)
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends",
                            "prometheus"], env=env, stdout=quiet, stderr=quiet, timeout=900,
                           check=False)
    return shutil.which(program)


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    path = installed("prometheus")
    if path is None:
        reason = "not root" if os.geteuid() != 0 else "apt-get could not install it"
        pytest.skip(f"Prometheus is not installed ({reason}): apt-get install prometheus")
    return path


def promtool() -> str:
    path = installed("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return path


def test_the_rules_file_passes_promtool() -> None:
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def poll(base: str, expr: str, ok: Any, timeout: float = 60) -> list[dict[str, Any]]:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = query(base, expr)
            if ok(last):
                return last
        except OSError as error:  # not listening yet
            last = error
        time.sleep(0.5)
    raise AssertionError(f"{expr}: {last!r}")


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Path]:
    """A `tycoon up` of 2 hosts and 1 agent; yields its state directory."""
    state = tmp_path / "market"
    up = subprocess.Popen(
        [sys.executable, "-m", "tycoon.cli.main", "up", "--duration", "90", "--hosts", "2",
         "--agents", "1", "--heartbeat", "1", "--state", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield state
    finally:
        print(stop(up)[-4000:])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_prometheus_scrapes_a_tycoon_up(prometheus_bin: str, market: Path,
                                        tmp_path: Path) -> None:
    targets = market / TARGETS
    end = time.monotonic() + 90
    while not targets.exists():  # written once every child started
        assert time.monotonic() < end, "tycoon up wrote no scrape targets"
        time.sleep(0.3)
    jobs = sorted(group["labels"]["job"] for group in json.loads(targets.read_text()))
    assert jobs == ["agent", "auctioneer", "auctioneer", "bank", "sls"]
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "tycoon", "file_sd_configs": [
            {"files": [str(targets)], "refresh_interval": "1s"}]}],
    }))
    port = free_port()
    prom = subprocess.Popen(
        [prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        up = poll(base, "up", lambda r: len(r) == 5 and all(s["value"][1] == "1" for s in r))
        assert sorted(s["metric"]["job"] for s in up) == jobs
        live = poll(base, 'tycoon_sls_hosts{state="live"}',
                    lambda r: r and r[0]["value"][1] == "2")
        assert live[0]["metric"]["job"] == "sls"
        prices = poll(base, 'tycoon_auctioneer_price_microcredits_per_second{resource="cpu"}',
                      lambda r: len(r) == 2)
        assert {s["metric"]["host"] for s in prices} == {
            s["metric"]["host"] for s in query(base, "tycoon_auctioneer_accounts")}
        poll(base, "tycoon_bank_audit_drift_microcredits", lambda r: r and r[0]["value"][1] == "0")
        poll(base, "tycoon_bank_transfers_total", lambda r: r and float(r[0]["value"][1]) > 0)
        poll(base, "tycoon_agent_budget_microcredits", lambda r: r and float(r[0]["value"][1]) > 0)
        with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5) as resp:
            groups = json.loads(resp.read())["data"]["groups"]
        assert [g["name"] for g in groups] == ["tycoon"]
        assert all(rule["health"] != "err" for g in groups for rule in g["rules"])
    finally:
        prom.terminate()
        prom.wait(timeout=30)
