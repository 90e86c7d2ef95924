"""Deploying on many machines: secret keys stay home, renders are safe, cluster URLs work.

Each "machine" is its own TYCOON_HOME; the operator box only ever sees public keys.
"""

from __future__ import annotations

import asyncio
import signal
import tomllib
from pathlib import Path

import pytest
from polling import refused, until

from tycoon.bus.connection import open_bus
from tycoon.bus.keys import Identity, KeyStore
from tycoon.cli.main import main
from tycoon.deploy import Deployment
from tycoon.natsserver import NatsServer, free_port


def run(home: Path, *argv: str) -> int:
    return main(["--home", str(home), *argv])


def show(home: Path, name: str, role: str, capsys: pytest.CaptureFixture[str]) -> str:
    """`tycoon key show` on the principal's machine; returns the admit line it prints."""
    capsys.readouterr()
    assert run(home, "key", "show", name, "--role", role, "--create") == 0
    out = capsys.readouterr().out
    seed = KeyStore(home).load(name).seed
    assert (seed.decode() if isinstance(seed, bytes) else seed) not in out  # never a seed
    line = next(x.strip() for x in out.splitlines() if x.strip().startswith("tycoon admit"))
    assert line == f"tycoon admit {role} {name} {KeyStore(home).load(name).public_key}"
    return line


def admit_line(box: Path, line: str, *extra: str) -> int:
    return run(box, *line.split()[1:], *extra)


def test_key_show_never_makes_a_key_unasked(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "key", "show", "laptop") == 1
    assert "tycoon key show laptop --create" in capsys.readouterr().err
    assert not KeyStore(tmp_path).exists("laptop")


def test_three_machines_admit_public_keys_only(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    box, bank, sls, host, laptop = (tmp_path / n for n in ("box", "bank", "sls", "h", "lap"))
    lines = [show(bank, "bank", "bank", capsys), show(sls, "sls", "sls", capsys),
             show(host, "host-1", "host", capsys), show(laptop, "alice", "user", capsys)]
    for line in lines:
        assert admit_line(box, line) == 0
    # the operator's own key is made on the operator box; then the first render
    assert admit_line(box, show(box, "operator", "operator", capsys)) == 0
    assert run(box, "--nats", "nats://n1:4222,nats://n2:4222", "init") == 0
    conf = (box / "nats.conf").read_text()
    for home, name in ((bank, "bank"), (sls, "sls"), (host, "host-1"), (laptop, "alice")):
        assert f"nkey: {KeyStore(home).load(name).public_key}" in conf
        assert not KeyStore(box).exists(name)  # its secret never came here
    assert set(KeyStore(box).names()) == {"operator"}


def test_render_never_makes_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A host key handed out and deleted on the operator box: a re-render kept a brand-new
    host-1 key (locking the real host out). Now the pinned public key is rendered."""
    box = tmp_path / "box"
    assert run(box, "init", "--local", "--hosts", "1") == 0
    handed_out = KeyStore(box).load("host-1").public_key
    (KeyStore(box).keys_dir / "host-1.nk").unlink()
    assert not KeyStore(box).exists("host-1")
    assert run(box, "init") == 0
    assert not KeyStore(box).exists("host-1")
    assert f"nkey: {handed_out}" in (box / "nats.conf").read_text()


def files(home: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in home.rglob("*") if p.is_file()} if home.exists() else {}


def test_operator_box_lacking_a_key_renders_nothing(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A render never makes a key, not even the box's own CLI (`default`) or dashboard
    (`viewer`) key: a missing one is an error naming the commands that make and admit it,
    and nothing is written (no key, no principals.conf line, no config)."""
    box = tmp_path / "box"
    assert run(box, "init") == 1  # a fresh box: nothing admitted, no --local
    err = capsys.readouterr().err
    assert "tycoon admit bank bank" in err and "tycoon init --local" in err
    assert files(box) == {}
    for name, role in (("bank", "bank"), ("sls", "sls"), ("host-1", "host")):
        assert admit_line(box, show(tmp_path / name, name, role, capsys)) == 0
    before = files(box)
    assert run(box, "init", "--user", "carol", "--http-port", "8222", "--cluster", "a,b,c") == 1
    err = capsys.readouterr().err
    assert "tycoon key show operator --role operator" in err
    assert "tycoon admit operator operator" in err
    assert files(box) == before and KeyStore(box).names() == []
    assert run(box, "init", "--hosts", "2") == 1  # making keys is --local's job only
    assert files(box) == before


def test_missing_key_is_an_error_naming_admit(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    box = tmp_path / "box"
    assert run(box, "init", "--local") == 0
    text = (box / "tycoon.toml").read_text()
    (box / "tycoon.toml").write_text(text + '\n[[hosts]]\nkey = "host-9"\n')
    capsys.readouterr()
    assert run(box, "init") == 1
    err = capsys.readouterr().err
    assert "tycoon key show host-9 --role host" in err and "tycoon admit host host-9" in err
    assert not KeyStore(box).exists("host-9")


def test_bank_and_operator_keys_are_pinned(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    box, real = tmp_path / "box", tmp_path / "bank"
    assert run(box, "init", "--local") == 0
    pinned = Deployment.load(box).pins["bank"]
    line = show(real, "bank", "bank", capsys)
    before = (box / "tycoon.toml").read_text()
    assert admit_line(box, line) == 1
    assert "needs --rotate" in capsys.readouterr().err
    assert (box / "tycoon.toml").read_text() == before
    assert admit_line(box, line, "--rotate") == 0
    new = KeyStore(real).load("bank").public_key
    assert Deployment.load(box).pins["bank"] == new != pinned
    # the stale local bank secret no longer matches: a render refuses it without --rotate
    capsys.readouterr()
    assert run(box, "init") == 1
    assert "needs --rotate" in capsys.readouterr().err
    assert f"nkey: {new}" in (box / "nats.conf").read_text()


def test_edited_public_key_is_honoured(tmp_path: Path) -> None:
    box = tmp_path / "box"
    assert run(box, "init", "--local", "--hosts", "1") == 0
    old = Deployment.load(box).pins["host-1"]
    (KeyStore(box).keys_dir / "host-1.nk").unlink()
    other = KeyStore(tmp_path / "other").create("x").public_key
    path = box / "tycoon.toml"
    path.write_text(path.read_text().replace(old, other))
    assert run(box, "init") == 0
    assert old not in (box / "nats.conf").read_text()
    assert f"nkey: {other}" in (box / "nats.conf").read_text()
    assert Deployment.load(box).pins["host-1"] == other


def test_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = tmp_path / "box"
    assert run(box, "init", "--local") == 0
    assert admit_line(box, show(tmp_path / "lap", "carol", "user", capsys)) == 0
    carol = KeyStore(tmp_path / "lap").load("carol").public_key
    assert f"nkey: {carol}" in (box / "nats.conf").read_text()
    # the same name with another key needs --rotate
    assert run(box, "admit", "user", "carol", KeyStore(tmp_path / "o").create("z").public_key) == 1
    assert run(box, "revoke", "carol") == 0
    assert carol not in (box / "nats.conf").read_text()
    assert carol not in (box / "principals.conf").read_text()
    assert run(box, "revoke", "carol") == 1
    assert run(box, "revoke", "bank") == 1
    assert run(box, "admit", "user", "eve", "not-a-key") == 1


def test_renders_keep_tls_monitoring_and_listen(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`init --user carol` dropped the tls {} block and the monitoring port."""
    box = tmp_path / "box"
    assert run(box, "init", "--local", "--listen", "0.0.0.0:4333", "--http-port", "8222",
               "--tls-cert", "/etc/c.pem", "--tls-key", "/etc/k.pem") == 0
    first = (box / "nats.conf").read_text()
    assert 'listen: "0.0.0.0:4333"' in first
    assert 'http: "127.0.0.1:8222"' in first  # monitoring stays on loopback
    assert run(box, "init", "--user", "carol") == 0
    out = capsys.readouterr().out
    text = (box / "nats.conf").read_text()
    assert 'cert_file: "/etc/c.pem"' in text and 'http: "127.0.0.1:8222"' in text
    assert 'listen: "0.0.0.0:4333"' in text
    assert "changes:" in out and "+" in out  # the diff of what it changed (carol)
    server = tomllib.loads((box / "tycoon.toml").read_text())["server"]
    assert server["tls_cert"] == "/etc/c.pem" and server["http_port"] == 8222
    assert run(box, "init", "--http-host", "0.0.0.0") == 0  # only when told
    assert 'http: "0.0.0.0:8222"' in (box / "nats.conf").read_text()


def test_render_refuses_to_drop_tls_silently(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    box = tmp_path / "box"
    assert run(box, "init", "--local") == 0
    conf = box / "nats.conf"  # TLS added by hand (or by an older tycoon)
    conf.write_text(conf.read_text() + '\ntls {\n  cert_file: "/c"\n  key_file: "/k"\n}\n')
    before = conf.read_text()
    assert run(box, "init") == 1
    assert "would drop" in capsys.readouterr().err
    assert conf.read_text() == before
    assert run(box, "init", "--dry-run", "--no-tls") == 0
    assert "-tls {" in capsys.readouterr().out and conf.read_text() == before
    assert run(box, "init", "--no-tls") == 0
    assert "\ntls {" not in conf.read_text()


def test_comma_separated_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TYCOON_NATS=nats://n1:4222,nats://n2:4222 crashed init with ValueError and was
    saved into tycoon.toml, so every later init crashed too."""
    monkeypatch.setenv("TYCOON_NATS", "nats://n1:4222,nats://n2:4222")
    box = tmp_path / "box"
    assert run(box, "init", "--local") == 0
    assert Deployment.load(box).nats_url == "nats://n1:4222,nats://n2:4222"
    assert 'listen: "n1:4222"' in (box / "nats.conf").read_text()
    assert run(box, "init") == 0
    bad = tmp_path / "bad"
    monkeypatch.setenv("TYCOON_NATS", "nats://n1:4222,nats:")
    assert run(bad, "init", "--local") == 1
    assert not (bad / "tycoon.toml").exists()
    assert run(box, "init", "--listen", "n1:port") == 1
    assert 'listen: "n1:4222"' in (box / "nats.conf").read_text()


@pytest.mark.nats
async def test_admitted_key_connects_and_revoked_key_is_shut_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box, lap = tmp_path / "box", tmp_path / "lap"
    port = free_port()
    assert await asyncio.to_thread(run, box, "--nats", f"nats://127.0.0.1:{port}", "init",
                                   "--local") == 0
    line = await asyncio.to_thread(show, lap, "dave", "user", capsys)
    assert await asyncio.to_thread(admit_line, box, line) == 0
    dave = KeyStore(lap).load("dave")
    async with NatsServer(port=port, config=box / "nats.conf") as server:
        bus = await open_bus(server.url, dave, deadline=5.0)
        await bus.close()
        assert await asyncio.to_thread(run, box, "revoke", "dave") == 0
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        await until(lambda: refused(server.url, dave.seed), timeout=10, every=0.1,
                    what="a revoked key refused after the reload")


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    box = tmp_path / "box"
    assert run(box, "init", "--dry-run") == 1
    assert not box.exists() or not any(box.iterdir())
    assert run(box, "init", "--local") == 0
    before = {p: p.read_bytes() for p in box.rglob("*") if p.is_file()}
    assert run(box, "init", "--dry-run", "--http-port", "8222", "--cluster", "a,b,c") == 0
    assert {p: p.read_bytes() for p in box.rglob("*") if p.is_file()} == before


SOMEONE = Identity.generate().public_key


@pytest.mark.parametrize(("argv", "name", "role"), [
    (["bank", "serve", "--operator", SOMEONE, "--db", "b.db"], "bank", "bank"),
    (["--as", "sls-2", "sls", "serve"], "sls-2", "sls"),
    (["--as", "host-1", "auctioneer", "serve", "--bank", SOMEONE], "host-1", "host"),
    (["--as", "host-1", "auctioneer", "key"], "host-1", "host"),
])
def test_a_service_without_its_key_writes_none(tmp_path: Path, argv: list[str], name: str,
                                               role: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Attack: a service started on a machine without its key must not make one (a key made
    on the spot is admitted nowhere; a bank key made so is one clients do not trust). It
    exits non-zero naming the two steps, before any connection, and writes nothing."""
    home = tmp_path / "machine"
    KeyStore(home).create("someone-else")  # a key store, but not this service's key
    before = sorted(p.name for p in home.rglob("*"))
    argv = [str(tmp_path / a) if a == "b.db" else a for a in argv]
    assert run(home, "--nats", "nats://127.0.0.1:1", *argv) == 1
    err = capsys.readouterr().err
    assert f"tycoon key show {name} --role {role} --create" in err
    assert f"tycoon admit {role} {name} PUBKEY" in err
    assert not KeyStore(home).exists(name)
    assert sorted(p.name for p in home.rglob("*")) == before
    assert not (tmp_path / "b.db").exists()


def test_the_dashboard_without_its_viewer_key_makes_none(tmp_path: Path) -> None:
    from tycoon.cli.web import page_config

    box = tmp_path / "box"
    for name in ("bank", "operator", "sls"):
        KeyStore(box).create(name)
    assert run(box, "init") == 0
    with pytest.raises(RuntimeError, match="tycoon key show viewer --role viewer --create"):
        page_config(Deployment.load(box), "ws://127.0.0.1:1")
    assert not KeyStore(box).exists("viewer")
