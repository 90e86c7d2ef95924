"""Clusters are first class: `tycoon init --cluster` renders one config per node, and a
3-node cluster starts from those configs alone; `streams ensure --replicas 3` reconciles
streams that services created with one replica (it was a silent no-op)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from pathlib import Path

import pytest

from tycoon.bus.connection import open_bus
from tycoon.bus.keys import KeyStore
from tycoon.cli.main import main
from tycoon.natsserver import NatsServer, free_port, nats_server_binary
from tycoon.streams.config import SETTLEMENTS_SPEC, ensure_stream, file_store_needed


def cluster_box(tmp_path: Path) -> tuple[Path, list[tuple[int, int]]]:
    box = tmp_path / "box"
    ports = [(free_port(), free_port()) for _ in range(3)]
    nodes = ",".join(f"127.0.0.1:{c}:{r}" for c, r in ports)
    urls = ",".join(f"nats://127.0.0.1:{c}" for c, _ in ports)
    assert main(["--home", str(box), "--nats", urls, "init", "--local", "--cluster", nodes]) == 0
    return box, ports


def test_one_config_per_node(tmp_path: Path) -> None:
    box, ports = cluster_box(tmp_path)
    for i, (client, route) in enumerate(ports, 1):
        text = (box / f"nats-n{i}.conf").read_text()
        assert f'server_name: "n{i}"' in text and f'listen: "127.0.0.1:{client}"' in text
        assert f'listen: "127.0.0.1:{route}"' in text
        others = [r for c, r in ports if c != client]
        assert all(f'"nats-route://127.0.0.1:{r}"' in text for r in others)
        assert f"nats-route://127.0.0.1:{route}" not in text  # no route to itself
        assert f"max_file_store: {file_store_needed()}" in text
        assert f"jetstream/n{i}" in text
        run = subprocess.run([nats_server_binary(), "-c", str(box / f"nats-n{i}.conf"), "-t"],
                             capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stdout + run.stderr
    # kept in tycoon.toml: a re-render (say, admitting a user) keeps the cluster
    assert main(["--home", str(box), "init", "--user", "carol"]) == 0
    assert "cluster {" in (box / "nats-n2.conf").read_text()
    assert main(["--home", str(box), "init", "--cluster", "n1:x"]) == 1


def test_tls_routes_and_a_monitoring_port_per_node(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    box = tmp_path / "box"
    assert main(["--home", str(box), "init", "--local", "--cluster", "a:4222:6222:8222,b,c",
                 "--tls-cert", "/c.pem", "--tls-key", "/k.pem", "--http-port", "8300"]) == 0
    assert "routes between the nodes are plain" in capsys.readouterr().out  # said, not hidden
    assert main(["--home", str(box), "init", "--cluster-ca", "/ca.pem"]) == 0
    a, b = ((box / f"nats-{n}.conf").read_text() for n in "ab")
    assert 'http: "127.0.0.1:8222"' in a and 'http: "127.0.0.1:8300"' in b  # loopback
    route = b[b.index("cluster {"):]
    assert 'cert_file: "/c.pem"' in route and 'ca_file: "/ca.pem"' in route
    assert main(["--home", str(box), "init", "--cluster", "a:1:2:3:4"]) == 1


def test_storage_is_sized_from_the_streams() -> None:
    """1 GiB left the bank looping on 'insufficient storage': the two streams reserve
    3 GiB on every node holding a replica."""
    assert file_store_needed() >= SETTLEMENTS_SPEC.max_bytes + (1 << 30)


@pytest.mark.nats
@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_three_nodes_from_the_rendered_configs(tmp_path: Path) -> None:
    box, ports = cluster_box(tmp_path)
    servers = [NatsServer(port=c, config=box / f"nats-n{i}.conf",
                          log_file=tmp_path / f"n{i}.log")
               for i, (c, _) in enumerate(ports, 1)]
    await asyncio.gather(*(s.start() for s in servers))
    urls = [s.url for s in servers]
    operator = KeyStore(box).load("operator")
    bank = KeyStore(box).load("bank")
    try:
        bus = await open_bus(urls, bank, deadline=10.0)
        js = bus.nc.jetstream(timeout=5.0)
        for _ in range(60):  # the JetStream meta leader is elected
            with contextlib.suppress(Exception):
                await ensure_stream(js, SETTLEMENTS_SPEC)  # as the bank does: 1 replica
                break
            await asyncio.sleep(0.3)
        info = await js.stream_info("SETTLEMENTS")
        assert info.config.num_replicas == 1
        await bus.close()
        code = await asyncio.to_thread(
            main, ["--home", str(box), "--as", "operator", "--nats", ",".join(urls),
                   "streams", "ensure", "--replicas", "3", "--json"])
        assert code == 0
        bus = await open_bus(urls, operator, deadline=10.0)
        js = bus.nc.jetstream(timeout=5.0)
        info = await js.stream_info("SETTLEMENTS")
        assert info.config.num_replicas == 3
        assert info.config.max_bytes == SETTLEMENTS_SPEC.max_bytes
        prices = await js.stream_info("PRICES")
        assert prices.config.num_replicas == 3
        await bus.close()
        log = (tmp_path / "n1.log").read_text()
        assert re.search(r"insufficient storage", log) is None
    finally:
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)
