"""Mutual TLS for clients, on a real nats-server rendered by ``tycoon init --tls-ca`` (the
server verifies its clients): a client without a certificate, or with one its CA did not
sign, is refused; one whose certificate the CA signed connects. Certificates are made with
the openssl CLI, as docs/operations.md's runbook makes them."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from tycoon.bus.connection import open_bus
from tycoon.bus.keys import KeyStore
from tycoon.bus.tls import client_tls
from tycoon.cli.main import main
from tycoon.errors import Rejected
from tycoon.natsserver import NatsServer, free_port

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*argv: str) -> None:
    done = subprocess.run(["openssl", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (argv, done.stderr)


def ca(d: Path, name: str) -> None:
    openssl("req", "-x509", *EC, "-days", "2", "-subj", f"/CN={name}",
            "-keyout", str(d / f"{name}-key.pem"), "-out", str(d / f"{name}.pem"))


def signed(d: Path, name: str, by: str, san: str = "") -> None:
    extra = ["-addext", f"subjectAltName={san}"] if san else []
    openssl("req", *EC, "-subj", f"/CN={name}", *extra, "-keyout", str(d / f"{name}-key.pem"),
            "-out", str(d / f"{name}.csr"))
    openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / f"{by}.pem"),
            "-CAkey", str(d / f"{by}-key.pem"), "-CAcreateserial", "-days", "2",
            "-copy_extensions", "copy", "-out", str(d / f"{name}.pem"))


def test_a_client_certificate_needs_both_halves(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TYCOON_TLS_CERT", raising=False)
    monkeypatch.delenv("TYCOON_TLS_KEY", raising=False)
    assert client_tls() is None  # nothing set: nats.py's default context
    monkeypatch.setenv("TYCOON_TLS_CERT", str(tmp_path / "c.pem"))
    with pytest.raises(Rejected, match="TYCOON_TLS_KEY"):
        client_tls()
    monkeypatch.setenv("TYCOON_TLS_KEY", str(tmp_path / "k.pem"))
    with pytest.raises(Rejected, match="cannot load the client certificate"):
        client_tls()  # files that are not there: said plainly, not a TLS error later


def test_tls_cert_and_key_of_a_config_file_reach_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_deploy_config import assert_config_reaches_environment

    assert_config_reaches_environment(tmp_path, monkeypatch, {
        "tls_cert": ("TYCOON_TLS_CERT", "c.pem"), "tls_key": ("TYCOON_TLS_KEY", "k.pem")})


@pytest.mark.nats
@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("openssl") is None, reason="certificates need openssl")
async def test_a_server_that_verifies_clients_admits_only_the_cas_certificates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "pki"
    d.mkdir()
    ca(d, "ca")
    ca(d, "rogue-ca")  # attack: a certificate from another CA
    signed(d, "server", "ca", "IP:127.0.0.1")
    signed(d, "client", "ca")
    signed(d, "rogue", "rogue-ca")
    box = tmp_path / "box"
    keys = KeyStore(box)
    for name in ("bank", "sls"):
        keys.create(name)
    operator = keys.create("operator")
    port = free_port()
    assert main(["--home", str(box), "--nats", f"nats://127.0.0.1:{port}", "init",
                 "--tls-cert", str(d / "server.pem"), "--tls-key", str(d / "server-key.pem"),
                 "--tls-ca", str(d / "ca.pem")]) == 0
    conf = (box / "nats.conf").read_text()
    assert "verify: true" in conf, conf
    monkeypatch.setenv("SSL_CERT_FILE", str(d / "ca.pem"))  # the servers' CA (tls_ca)
    monkeypatch.delenv("TYCOON_TLS_CERT", raising=False)
    monkeypatch.delenv("TYCOON_TLS_KEY", raising=False)
    url = f"nats://127.0.0.1:{port}"

    def context(name: str) -> ssl.SSLContext:
        made = client_tls(str(d / f"{name}.pem"), str(d / f"{name}-key.pem"))
        assert made is not None
        return made

    async with NatsServer(port=port, config=box / "nats.conf"):
        # an admitted nkey is not enough: without a certificate the handshake fails
        with pytest.raises(Rejected) as refused:
            await open_bus(url, operator, deadline=2.0)
        assert refused.value.code == "unavailable"
        with pytest.raises(Rejected):
            await open_bus(url, operator, deadline=2.0, tls=context("rogue"))
        bus = await open_bus(url, operator, deadline=5.0, tls=context("client"))
        try:
            await bus.flush()
            assert bus.nc.is_connected
        finally:
            await bus.close()
        # the same through the environment (a config file's tls_cert/tls_key)
        monkeypatch.setenv("TYCOON_TLS_CERT", str(d / "client.pem"))
        monkeypatch.setenv("TYCOON_TLS_KEY", str(d / "client-key.pem"))
        bus = await open_bus(url, operator, deadline=5.0)
        try:
            await bus.flush()
        finally:
            await bus.close()
