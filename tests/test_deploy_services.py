"""Services started as the runbook says, each on its own "machine" (its own TYCOON_HOME):
they name other principals by PUBLIC key only, never mint a key clients would trust, and
exit non-zero with a clear message when the server refuses their key."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tycoon.bus.connection import open_bus
from tycoon.bus.keys import Identity, KeyStore
from tycoon.cli.admit import known_public_key
from tycoon.cli.main import main
from tycoon.errors import Rejected
from tycoon.natsconf import Principal, render_principals, write_config
from tycoon.natsserver import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[1]


def run(home: Path, *argv: str) -> int:
    return main(["--home", str(home), *argv])


def test_names_resolve_to_public_keys_only(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`bank serve --operator-key operator` wanted the operator's SECRET key on the bank
    machine; `auctioneer serve --bank bank` on a host: 'neither a public key nor a key
    name'. A name now resolves to a public key known here, never to a secret."""
    bank_home, host_home = tmp_path / "bank", tmp_path / "host"
    operator = Identity.generate().public_key
    bank = KeyStore(bank_home).create("bank").public_key
    assert known_public_key(bank_home, "operator") is None
    assert run(bank_home, "key", "trust", "operator", operator) == 0
    assert known_public_key(bank_home, "operator") == operator
    assert not KeyStore(bank_home).exists("operator")
    assert run(host_home, "key", "trust", "bank", bank) == 0
    assert known_public_key(host_home, "bank") == bank
    assert run(host_home, "key", "trust", "bank", "not-a-key") == 1
    assert run(host_home, "key", "trust", "../x", bank) == 1


def test_bank_key_never_mints_a_fake_bank_key(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    host = tmp_path / "host"
    assert run(host, "bank", "key") == 1
    assert not KeyStore(host).exists("bank")
    real = Identity.generate().public_key
    assert run(host, "key", "trust", "bank", real) == 0
    capsys.readouterr()
    assert run(host, "bank", "key") == 0
    assert capsys.readouterr().out.strip() == real
    assert not KeyStore(host).exists("bank")


@pytest.mark.nats
async def test_a_refused_key_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    admitted, stranger = Identity.generate(), Identity.generate()
    port = free_port()
    conf = write_config(tmp_path / "nats.conf", render_principals(
        [Principal(admitted.public_key, "user", "u")], port=port))
    async with NatsServer(port=port, config=conf) as server:
        with pytest.raises(Rejected) as info:
            await open_bus(server.url, stranger, auth_refusals=3)
        assert info.value.code == "forbidden" and "tycoon admit" in info.value.message
        bus = await open_bus(server.url, admitted, deadline=5.0)
        await bus.close()


async def _serve(home: Path, url: str, *argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tycoon.cli.main", "--nats", url, "--home", str(home), *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.nats
@pytest.mark.slow
async def test_bank_serve_as_documented_and_a_stranger_bank_exits(tmp_path: Path) -> None:
    """The bank machine holds only the bank's secret and the operator's PUBLIC key; a bank
    whose key the server does not admit exits non-zero instead of retrying forever."""
    box, bank_home, rogue = tmp_path / "box", tmp_path / "bank", tmp_path / "rogue"
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    bank = KeyStore(bank_home).create("bank").public_key
    assert run(box, "admit", "bank", "bank", bank) == 0
    assert run(box, "key", "show", "operator", "--create") == 0
    operator = KeyStore(box).load("operator").public_key
    assert run(box, "admit", "operator", "operator", operator) == 0
    assert run(box, "admit", "sls", "sls", Identity.generate().public_key) == 0
    assert run(box, "--nats", url, "init") == 0
    assert run(bank_home, "key", "trust", "operator", operator) == 0
    KeyStore(rogue).create("bank")
    assert run(rogue, "key", "trust", "operator", operator) == 0
    async with NatsServer(port=port, config=box / "nats.conf"):
        proc = await _serve(bank_home, url, "bank", "serve", "--operator-key", "operator",
                            "--db", str(tmp_path / "bank.db"))
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert b"ready" in line, await proc.stderr.read(2000)
        finally:
            proc.terminate()
            await proc.wait()
        strangers = [await _serve(rogue, url, "bank", "serve", "--operator-key", "operator",
                                  "--db", str(tmp_path / "rogue.db")),
                     await _serve(rogue, url, "--as", "bank", "sls", "serve")]
        outs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in strangers)),
                                      60)
        for stranger, (_, err) in zip(strangers, outs, strict=True):
            assert stranger.returncode == 1, err
            assert b"forbidden" in err and b"Authorization Violation" in err
            assert b"Traceback" not in err


@pytest.mark.nats
async def test_a_health_check_per_service(nats_url: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`status --check --service bank` is the bank's own health check: it does not fail
    because no SLS or auctioneer runs (the market-wide `--check` does)."""
    from tycoon.testing.localmarket import LocalMarket

    market = LocalMarket(nats_url, tmp_path / "m", Identity.generate(), Identity.generate())
    await market.start_bank()
    try:
        home = str(tmp_path / "home")

        def check(*extra: str) -> int:
            return main(["--home", home, "--nats", nats_url, "status", "--check", *extra])

        assert await asyncio.to_thread(check, "--service", "bank") == 0
        assert await asyncio.to_thread(check, "--service", "sls") == 1
        assert await asyncio.to_thread(check) == 1
        assert "missing: tycoon-sls, tycoon-auctioneer" in capsys.readouterr().out
    finally:
        await market.close()
