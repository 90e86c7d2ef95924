"""``tycoon best-response BUDGET DEADLINE [HOSTS]``: parsing, output, exact budget split."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from tycoon.auctioneer.bidparse import parse_duration as bid_duration
from tycoon.cli.best_response import parse_duration, parse_hosts, plan, split_budget
from tycoon.cli.main import main
from tycoon.errors import Rejected
from tycoon.money import parse_amount


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err


def test_prints_host_bid_utility_budget_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run(
        capsys, "best-response", "100", "2h", "a:1000:0.01", "b:500:0.02", "c:10:5"
    )
    assert code == 0
    assert lines[0] == "host bid utility budget"
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == ["a", "b"]  # c is far too expensive for what it gives
    assert sum(parse_amount(r[3]) for r in rows) == parse_amount("100")
    rate = 100 / 7200
    assert sum(float(r[1]) for r in rows) == pytest.approx(rate, rel=1e-5)


def test_hosts_from_a_file_and_from_stdin(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# name:capacity:price\nh1:2000:1\nh2:1000:0.5, h3:0:0\n")
    code, from_file, _ = run(capsys, "best-response", "10", "1h", str(hosts))
    assert code == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(hosts.read_text()))
    code, from_stdin, _ = run(capsys, "best-response", "10", "1h")
    assert code == 0 and from_stdin == from_file
    assert "h3" not in " ".join(from_file)  # a host of capacity 0 is worth nothing


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run(capsys, "best-response", "1", "30s", "x:4:1", "y:1:0", "--json")
    assert code == 0
    result = json.loads(lines[-1])
    hosts = {h["host"]: h for h in result["hosts"]}
    assert hosts["y"]["share"] == 1.0  # nobody else bids on y: a sliver of budget wins it
    assert result["utility"] == pytest.approx(4 * hosts["x"]["share"] + 1)


def test_max_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    entries = [f"h{i}:{100 + i}:{0.001 * (1 + i % 3)}" for i in range(10)]
    code, lines, _ = run(capsys, "best-response", "50", "1d", *entries, "--max-hosts", "3")
    assert code == 0 and len(lines) == 4


@pytest.mark.parametrize(
    "argv",
    [
        ["best-response", "0", "1h", "a:1:1"],
        ["best-response", "-5", "1h", "a:1:1"],
        ["best-response", "10", "soon", "a:1:1"],
        ["best-response", "10", "0s", "a:1:1"],
        ["best-response", "10", "1h", "a:1"],
        ["best-response", "10", "1h", "a:x:1"],
        ["best-response", "10", "1h", "a:1:-1"],
        ["best-response", "10", "1h", "a:1:1", "a:2:2"],
        ["best-response", "10", "1h", "/no/such/file"],
        ["best-response", "10", "1h", "a:1:1", "--max-hosts", "0"],
    ],
)
def test_bad_input_is_a_clear_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(argv) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_helpers() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1d") == 86400
    assert parse_duration("1o1y") == bid_duration("1o1y") / 1e9  # calendar months and years
    with pytest.raises(Rejected):
        parse_duration("1h 30x")
    assert [h.host for h in parse_hosts("a:1:2,b:3:4\n c:5:6 # d:7:8")] == ["a", "b", "c"]
    assert parse_hosts("tcp:host:1:2")[0].host == "tcp:host"  # the last two fields are numbers
    parts = split_budget(1_000_001, np.array([1.0, 1.0, 1.0]))
    assert parts.sum() == 1_000_001 and parts.max() - parts.min() <= 1
    assert split_budget(10, np.zeros(2)).tolist() == [0, 0]
    result, funds = plan(parse_amount("10"), 3600.0, parse_hosts("a:1:1 b:1:1"))
    assert funds.sum() == parse_amount("10") and result.bids[0] == pytest.approx(result.bids[1])
