"""A newcomer's path through the CLI (issue 19): one home, one URL; errors a person can act
on; a state directory one market at a time; human output. The README itself is executed by
``tests/test_readme.py``."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from policy_kit import may_publish

from tycoon.bus.keys import Identity, KeyStore
from tycoon.cli.common import DEFAULT_URL, host_id_of, identity, probe, resolve_url
from tycoon.cli.main import build_parser, main
from tycoon.cli.status import errors_of
from tycoon.cli.upstate import StateLock, last_port, port_is_free
from tycoon.deploy import Deployment
from tycoon.errors import Rejected
from tycoon.money import format_credits, format_rate, parse_amount
from tycoon.natsconf import Principal, render_principals, write_config
from tycoon.natsserver import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[1]


def ns(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"nats": None, "home": None, "as_name": "default", **kw})


def market_home(tmp_path: Path, url: str = "nats://127.0.0.1:4999") -> Path:
    home = tmp_path / "market"
    d = Deployment.default(home, 1, 0, url)
    d.ensure_keys()
    d.save()
    return home


def test_the_url_comes_from_the_flag_the_env_the_home_then_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TYCOON_NATS", raising=False)
    monkeypatch.delenv("TYCOON_HOME", raising=False)
    home = market_home(tmp_path)
    assert resolve_url(ns(home=str(tmp_path / "bare"))) == (DEFAULT_URL, "default")
    assert resolve_url(ns(home=str(home))) == ("nats://127.0.0.1:4999",
                                               str(home / "tycoon.toml"))
    monkeypatch.setenv("TYCOON_NATS", "nats://127.0.0.1:5000")
    assert resolve_url(ns(home=str(home))) == ("nats://127.0.0.1:5000", "TYCOON_NATS")
    assert resolve_url(ns(home=str(home), nats="nats://h:1")) == ("nats://h:1", "--nats")
    for bad, source in (("", "--nats"), ("  ", "--nats"), ("localhost", "--nats"),
                        ("nats://h:99999", "--nats")):
        with pytest.raises(Rejected, match=source):
            resolve_url(ns(nats=bad))
    monkeypatch.setenv("TYCOON_NATS", "")
    with pytest.raises(Rejected, match=r"TYCOON_NATS is empty.*unset it"):
        resolve_url(ns())


def test_bad_global_options_are_one_line_errors(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TYCOON_LOG", raising=False)
    assert main(["--nats", "", "status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--nats is empty" in err and "Traceback" not in err
    monkeypatch.setenv("TYCOON_NATS", "")
    assert main(["hosts"]) == 2
    assert "TYCOON_NATS is empty" in capsys.readouterr().err
    assert main(["keys", "list"]) == 0  # an offline command does not care
    monkeypatch.setenv("TYCOON_NATS", f"nats://127.0.0.1:{free_port()}")  # a stale export
    assert main(["hosts"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no NATS server at" in err and "[URL from TYCOON_NATS]" in err
    with pytest.raises(SystemExit) as exit_:
        main(["--log-level", "bogus", "status"])
    assert exit_.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err
    monkeypatch.setenv("TYCOON_LOG", "loud")
    assert main(["keys", "list"]) == 2
    assert "TYCOON_LOG='loud' is not a log level" in capsys.readouterr().err


def test_an_unknown_key_name_is_refused_in_a_market_home_and_never_created(
        tmp_path: Path) -> None:
    home = market_home(tmp_path)
    with pytest.raises(Rejected, match=r"no key named 'mallory'.*run: tycoon init --user "
                                       r"mallory"):
        identity(ns(home=str(home), as_name="mallory"))
    assert not (home / "keys" / "mallory.nk").exists()
    with pytest.raises(Rejected, match="bad key name"):
        identity(ns(home=str(home), as_name="../x"))
    assert identity(ns(home=str(home), as_name="host-1")).public_key  # a known key loads
    bare = tmp_path / "bare"
    assert identity(ns(home=str(bare), as_name="alice")).public_key  # an open server's use
    assert (bare / "keys" / "alice.nk").exists()


def test_an_unknown_host_name_says_where_to_look(tmp_path: Path) -> None:
    home = market_home(tmp_path)
    args = ns(home=str(home))
    with pytest.raises(Rejected, match=r"no host named host-9 \(tycoon hosts lists them\)"):
        host_id_of(args, "host-9")
    assert len(host_id_of(args, "host-1")) == 16
    assert host_id_of(args, "abcdefghijklmn23") == "abcdefghijklmn23"  # an id passes


def test_amounts_speak_credits() -> None:
    with pytest.raises(Rejected, match="more than 0 credits"):
        parse_amount("0")
    with pytest.raises(Rejected, match=r"at most 9223372036854\.775807 credits"):
        parse_amount("9999999999999")
    assert parse_amount("24.93") == 24_930_000
    assert format_credits(24_930_000) == "24.93" and format_credits(1) == "0.00"
    assert format_credits(4_995_000) == "5.00" and format_credits(-1_234_567_890) == "-1,234.57"
    assert format_credits(12_345_678, 6) == "12.345678" and format_rate(353_208.4) == "0.3532"


def test_idempotent_opens_are_not_errors() -> None:
    assert errors_of({"errors": {"account_exists": 3}}) == 0
    assert errors_of({"errors": {"account_exists": 3, "overdraft": 2}}) == 2
    assert errors_of({"errors": None}) == 0


def test_every_example_parses() -> None:
    """Each command's --help examples are real command lines (they parse, flags exist)."""
    import shlex

    from tycoon.cli.examples import EXAMPLES
    from tycoon.cli.pub import OPS

    parser, checked = build_parser(), 0
    for lines in EXAMPLES.values():
        for line in lines:
            argv = shlex.split(re.split(r"\s(?:\||&&)\s", line)[0], comments=True)
            argv = argv[1:] if argv[0] == "sudo" else argv
            if argv[0] == "export":
                continue
            if argv[0] == "tycoon-pub":
                at = next(i for i, a in enumerate(argv) if a in OPS)
                argv = ["tycoon", *argv[1:at], "host", *argv[at:]]
            assert argv[0] == "tycoon", line
            parser.parse_args(argv[1:])  # SystemExit (a failed test) if it does not parse
            checked += 1
    assert checked > 60


def test_every_command_has_examples_and_shows_defaults() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    def walk(p: argparse.ArgumentParser, path: str) -> None:
        text = p.format_help()
        assert "examples:" in text and "tycoon" in text.split("examples:")[1], path
        assert "(default: None)" not in text, path
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")

    walk(parser, "tycoon")
    assert "(default: 4)" in sub.choices["up"].format_help()
    bank = next(a for a in sub.choices["bank"]._actions
                if isinstance(a, argparse._SubParsersAction))
    assert "bank mint alice 100" in bank.choices["mint"].format_help()


def test_configs_hold_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`TYCOON_HOME=.tycoon` and an absolute home write the same store_dir (a relative one
    made nats-server refuse the reload that admits a user)."""
    monkeypatch.chdir(tmp_path)
    assert Deployment(Path(".x")).home == tmp_path / ".x"
    monkeypatch.setenv("TYCOON_HOME", ".tycoon")
    assert main(["--nats", "nats://127.0.0.1:4333", "init", "--local", "--hosts", "1"]) == 0
    conf = (tmp_path / ".tycoon" / "nats.conf").read_text()
    store_dir = re.search(r'store_dir: "([^"]+)"', conf)
    assert store_dir and store_dir.group(1) == str(tmp_path / ".tycoon" / "jetstream")
    assert main(["init", "--user", "alice"]) == 0
    out = capsys.readouterr().out
    assert "made alice" in out and "admitted alice as agent" in out
    assert "every key already existed" not in out
    assert "no tycoon up runs for" in out  # and no claim of a reload that did not happen
    assert "reloaded" not in out
    # alice may run `tycoon agent run`: its events go to her own tycoon.agent.<id>.> only
    from tycoon.bus.keys import subject_id
    from tycoon.natsconf import load_principals
    from tycoon.natspolicy import permissions

    alice = next(p for p in load_principals(tmp_path / ".tycoon" / "principals.conf")
                 if p.name == "alice")
    me = subject_id(alice.public_key)
    assert alice.role == "agent"
    assert may_publish(permissions(alice), f"tycoon.agent.{me}.plan")
    assert not may_publish(permissions(alice), "tycoon.agent.someoneelse00000.plan")


def test_one_market_per_state_directory(tmp_path: Path) -> None:
    first, second = StateLock(tmp_path), StateLock(tmp_path)
    assert first.acquire() is None
    first.record("nats://127.0.0.1:4321")
    refused = second.acquire()
    assert refused is not None and f"pid {os.getpid()}" in refused
    assert "nats://127.0.0.1:4321" in refused and f"kill {os.getpid()}" in refused
    first.release()
    assert second.acquire() is None
    second.release()


def test_up_takes_its_last_port_again(tmp_path: Path) -> None:
    assert last_port(tmp_path) is None
    port = free_port()
    market_home(tmp_path, f"nats://127.0.0.1:{port}")
    assert last_port(tmp_path / "market") == port and port_is_free(port)


def test_demo_starts_from_a_fresh_state_directory() -> None:
    demo = (ROOT / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    lines = [ln.strip() for ln in demo.splitlines()[1:]]
    assert lines[0] == "rm -rf .tycoon-demo" and "--state .tycoon-demo" in lines[1]


@pytest.mark.nats
async def test_no_server_and_not_admitted_are_told_apart(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(Rejected, match=f"no NATS server at nats://127.0.0.1:{port} "
                                       r"\(connection refused\)"):
        await probe(f"nats://127.0.0.1:{port}", Identity.generate(), "alice")
    admitted, stranger = Identity.generate(), Identity.generate()
    conf = tmp_path / "nats.conf"
    write_config(conf, render_principals([Principal(admitted.public_key, "user", "bob")],
                                         port=port))
    async with NatsServer(port=port, config=conf) as server:
        await probe(server.url, admitted, "bob")
        with pytest.raises(Rejected, match=r"does not admit key 'alice'.*run: tycoon init "
                                           r"--user alice"):
            await probe(server.url, stranger, "alice")
        store = KeyStore(tmp_path / "home")
        store.save("alice", stranger)
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "tycoon.cli.main", "--nats", server.url,
                             "--home", str(store.home), "--as", "alice", "bank", "balance",
                             "--bank", admitted.public_key],
            capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if k != "TYCOON_LOG"})
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1 and "run: tycoon init --user alice" in done.stderr


@pytest.mark.nats
@pytest.mark.slow
def test_a_second_up_is_refused_and_sigterm_stops_every_child(tmp_path: Path) -> None:
    state = tmp_path / "m"
    cmd = [sys.executable, "-m", "tycoon.cli.main", "up", "--hosts", "1", "--agents", "0",
           "--state", str(state)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYCOON_")}

    def start() -> tuple[subprocess.Popen[str], str]:
        up = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env)
        assert up.stdout is not None
        seen = []
        for line in up.stdout:
            seen.append(line)
            found = re.search(r"market ready at (nats://\S+);", line)
            if found:
                return up, found.group(1)
        up.wait()
        raise AssertionError("".join(seen))

    up, url = start()
    try:
        pids = {p.stem: int(p.read_text()) for p in (state / "pids").glob("*.pid")}
        assert {"nats", "bank", "sls", "host-1"} <= set(pids)
        again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        assert again.returncode == 1
        assert f"pid {up.pid}" in again.stdout and url in again.stdout, again.stdout
        assert (state / "pids" / "nats.pid").exists()  # the running market is untouched
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=60)
        assert up.returncode == 0, out
        for pid in pids.values():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)  # no orphan: nats-server, bank, SLS, auctioneer all gone
    finally:
        if up.poll() is None:
            up.kill()
    up, url_again = start()  # the same port, so TYCOON_NATS and tycoon.toml stay right
    up.send_signal(signal.SIGINT)
    up.communicate(timeout=60)
    assert url_again == url


def test_host_replies_read_as_credits_times_and_summarised_receipts(
        capsys: pytest.CaptureFixture[str]) -> None:
    from tycoon.cli.auctioneer import _print

    _print({"balance": 1_500_000, "balance_text": "1.5", "expires_ns": 1_800_000_000 * 10**9,
            "refunds": [{"refund_id": "r1", "amount": 2_250_000, "receipt": b"\x01" * 200}]})
    out = capsys.readouterr().out
    assert "balance: 1.50 credits" in out and "balance_text" not in out
    assert "expires: 2027-01-15T" in out and "1800000000000000000" not in out
    assert re.search(r"receipt [0-9a-f]{8}… for 2.25 credits \(r1\)", out)
    assert "\\x01" not in out and "b'" not in out


def test_pub_refuses_a_negative_duration_in_its_own_words(
        capsys: pytest.CaptureFixture[str]) -> None:
    from tycoon.cli.pub import main as pub

    assert pub(["bid", "host-1", "-5h", "cpu:1"]) == 2
    err = capsys.readouterr().err
    assert "a bid lasts a positive time" in err and "tycoon host bid" not in err


@pytest.mark.nats
async def test_top_quits_on_q_and_shows_its_keys(nats_url: str, tmp_path: Path) -> None:
    """On a terminal, `tycoon top` reads keys: q quits at once; the footer says so."""
    import pty

    main_fd, child_fd = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tycoon.cli.main", "--nats", nats_url, "--home",
        str(tmp_path), "top", "--duration", "60", stdin=child_fd, stdout=child_fd,
        stderr=child_fd, env={**os.environ, "COLUMNS": "120", "LINES": "40"})
    os.close(child_fd)
    seen = b""
    try:
        while b"q quit" not in seen:
            chunk = await asyncio.wait_for(asyncio.to_thread(os.read, main_fd, 65536), 30)
            seen += chunk
        os.write(main_fd, b"q")
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(main_fd)


async def test_the_agent_progress_line_shows_money_hosts_rate_time_and_last_event() -> None:
    from types import SimpleNamespace

    from rich.console import Console

    from tycoon.cli.progress import AgentProgress
    from tycoon.messages.agent import AgentRebid

    published: list[str] = []

    async def publish(event: str, body: dict) -> None:
        published.append(event)

    agent = SimpleNamespace(
        plan=SimpleNamespace(hosts=frozenset({"a", "b"}), spend_rate=27_777.8),
        journal=SimpleNamespace(net_paid_out=lambda: 12_500_000), seconds_left=125.0,
        publish=publish)
    progress = AgentProgress(agent, 50_000_000)
    await agent.publish("rebid", AgentRebid(3, "prices", "2 hosts, 27777.8 µc/s", {}, {},
                                            {}).to_body())
    assert published == ["rebid"]  # the agent's own publish still runs
    console = Console(width=200, record=True)
    console.print(progress.render())
    text = console.export_text()
    for part in ("12.50 / 50.00 credits", "2 hosts", "0.0278 credits/s", "2m05s left",
                 "rebid 2 hosts"):
        assert part in text, (part, text)


@pytest.mark.nats
async def test_init_says_so_when_the_server_did_not_take_the_new_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The reload that nats-server refused showed only in its log while init printed
    'reloaded'. Now init checks with a handshake that the new key gets in."""
    monkeypatch.setattr("tycoon.cli.init.RELOAD_CHECK_S", 1.0)
    port = free_port()
    home = market_home(tmp_path, f"nats://127.0.0.1:{port}")
    conf = tmp_path / "fixed.conf"  # a server that never learns of alice
    bank = Deployment.load(home)
    write_config(conf, render_principals(
        [Principal(bank.public_key(bank.bank_key), "bank", "bank")], port=port))
    # stands in for the market's nats-server in pids/nats.pid: takes the SIGHUP, ignores it
    ignore = subprocess.Popen([sys.executable, "-c", "import signal, time\n"
                               "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
                               "print('ready', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert ignore.stdout is not None and ignore.stdout.readline().strip() == "ready"
        (home / "pids").mkdir()
        (home / "pids" / "nats.pid").write_text(f"{ignore.pid}\n")
        async with NatsServer(port=port, config=conf):
            code = await asyncio.to_thread(main, ["--home", str(home), "init", "--user",
                                                  "alice"])
        out = capsys.readouterr().out
        assert code == 1 and "did not take the new config" in out and "nats.log" in out
        assert "reloaded" not in out.replace("did not", "")
    finally:
        ignore.kill()
        ignore.wait()


@pytest.mark.nats
async def test_status_check_says_healthy_and_status_says_where_it_looked(
        nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tycoon.bus.connection import connect
    from tycoon.bus.service import Endpoint, Service

    async def ok(msg: object) -> dict:
        return {}

    home = tmp_path / "bare"
    async with connect(nats_url, Identity.generate()) as bus:
        services = [Service(bus, name, [Endpoint(f"tycoon.demo.{name[7:]}", "demo.echo", ok)])
                    for name in ("tycoon-bank", "tycoon-sls", "tycoon-auctioneer")]
        for s in services:
            await s.start()
        try:
            argv = ["--nats", nats_url, "--home", str(home), "status"]
            assert await asyncio.to_thread(main, [*argv, "--check"]) == 0
            out = capsys.readouterr().out
            assert out == (f"healthy: 1 bank, 1 SLS, 1 auctioneers answer at {nats_url}\n")
            assert await asyncio.to_thread(main, argv) == 0
            out = capsys.readouterr().out
            assert f"nats  {nats_url}  (from --nats)" in out
            assert f"home  {home}  (from --home)" in out and "tycoon-sls" in out
        finally:
            for s in services:
                await s.stop()


def test_top_starts_from_the_sls_rows() -> None:
    from tycoon.cli.top import MarketView
    from tycoon.sls.client import HostRow

    view = MarketView(names={"UAGENT": "agent-1"})
    view.seed([HostRow("abcdefghijklmn23", "UHOSTKEY", "host-1", "simulated", "cpu", 2000,
                       25_000.0, 12.5, 0.5, 2, 1.0, 7, 1.0, 0)], "cpu")
    row = view.hosts["abcdefghijklmn23"]
    assert row.name == "host-1" and row.resources["cpu"]["bidders"] == 2
    from rich.console import Console

    console = Console(width=160, record=True)
    console.print(view.render())
    text = console.export_text()
    assert "host-1" in text and "0.0250" in text and "50.0%" in text
    assert view.who("UAGENT") == "agent-1"


def test_up_prints_the_deadlines_agents_really_get(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from tycoon.cli import up

    async def no_process(self: object) -> None:
        return None

    monkeypatch.setattr(up.Child, "start", no_process)
    record = Console(record=True, width=200)
    monkeypatch.setattr(up, "console", record)
    d = Deployment.default(tmp_path / "m", 0, 2)  # deadlines 10m and 15m
    market = up.Processes(d, "nats://127.0.0.1:4222", 2.0)
    asyncio.run(market.start_agents(60.0))
    text = record.export_text()
    assert "agent-1: budget 50.00 credits, deadline 56s (shortened to fit --duration)" in text
    assert "deadline 10m" not in text
    record = Console(record=True, width=200)
    monkeypatch.setattr(up, "console", record)
    asyncio.run(up.Processes(d, "nats://127.0.0.1:4222", 2.0).start_agents(None))
    assert "agent-2: budget 100.00 credits, deadline 15m\n" in record.export_text()


def test_the_license_is_an_spdx_string() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"  # a table made setuptools warn at every build


def test_top_lists_transfers_at_the_time_the_bank_settled_them() -> None:
    from tycoon.bank.receipt import make_receipt, verify_receipt
    from tycoon.cli.top import MarketView

    bank, alice, host = Identity.generate(), Identity.generate(), Identity.generate()
    view = MarketView(names={alice.public_key: "alice", host.public_key: "host-1"})
    for seq, amount in ((1, 2_500_000), (2, 1_000_000)):
        raw = make_receipt(bank, transfer_id=f"t{seq}", payer=alice.public_key,
                           payee=host.public_key, amount=amount, memo="fund", seq=seq,
                           settled_ns=1_800_000_000 * 10**9 + seq * 10**9)
        view.note_transfer(verify_receipt(raw, bank.public_key))
    assert view.transfers[0].endswith("alice → host-1 1.00 fund")  # newest first
    assert view.transfers[1].endswith("alice → host-1 2.50 fund")
    assert re.match(r"\d\d:\d\d:01 ", view.transfers[1])


async def test_the_progress_line_starts_and_stops_with_the_agent() -> None:
    from types import SimpleNamespace

    from tycoon.cli.progress import start_progress

    async def publish(event: str, body: dict) -> None:
        return None

    agent = SimpleNamespace(plan=None, journal=SimpleNamespace(net_paid_out=lambda: 0),
                            seconds_left=10.0, publish=publish)
    await (start_progress(agent, 1, enabled=False))()
    assert agent.publish is publish  # off: the agent is left alone
    finish = start_progress(agent, 1, enabled=True)
    await asyncio.sleep(0.05)
    assert agent.publish is not publish
    await asyncio.wait_for(finish(), 5)


@pytest.mark.parametrize("op", [["bid", "host-1"], ["fund"], ["signal", "host-1"]])
def test_tycoon_pub_errors_name_the_command_the_user_typed(
        op: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 19 item 7: argparse named `tycoon host bid`, which a tycoon-pub user never typed."""
    from tycoon.cli.pub import main as pub_main

    with pytest.raises(SystemExit) as exited:
        pub_main(op)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"tycoon-pub {op[0]}: error:" in err and "tycoon host" not in err, err
