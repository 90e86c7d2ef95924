"""A NATS cluster on one machine: one config per node, routes to every other node.

For tests, benchmarks and trying a cluster out; a real deployment writes the same
``cluster { name, listen, routes }`` block per machine (see docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from pathlib import Path

import nats

from tycoon.natsserver import NatsServer, free_port


def cluster_config(index: int, client_port: int, route_ports: list[int], *,
                   host: str = "127.0.0.1", name: str = "tycoon",
                   jetstream_dir: str | Path | None = None, http_port: int | None = None) -> str:
    """The config of node ``index`` of a cluster whose route ports are ``route_ports``."""
    routes = ", ".join(f'"nats-route://{host}:{port}"' for i, port in enumerate(route_ports)
                       if i != index)
    lines = [
        f"server_name: n{index}",
        f'listen: "{host}:{client_port}"',
        "cluster {",
        f"  name: {name}",
        f'  listen: "{host}:{route_ports[index]}"',
        f"  routes: [{routes}]",
        "}",
    ]
    if http_port is not None:
        lines.append(f'http: "{host}:{http_port}"')
    if jetstream_dir is not None:
        lines += ["jetstream {", f'  store_dir: "{jetstream_dir}"', "}"]
    return "\n".join(lines) + "\n"


def write_cluster(directory: Path, nodes: int = 3, *, jetstream: bool = False,
                  name: str = "tycoon") -> list[NatsServer]:
    """Write the configs of a loopback cluster; return its (not yet started) servers."""
    directory.mkdir(parents=True, exist_ok=True)
    clients = [free_port() for _ in range(nodes)]
    routes = [free_port() for _ in range(nodes)]
    servers = []
    for i in range(nodes):
        path = directory / f"n{i}.conf"
        path.write_text(cluster_config(
            i, clients[i], routes, name=name,
            jetstream_dir=directory / f"js-{i}" if jetstream else None))
        servers.append(NatsServer(port=clients[i], config=path,
                                  log_file=directory / f"n{i}.log"))
    return servers


async def start_cluster(directory: Path, nodes: int = 3, *, jetstream: bool = False,
                        timeout: float = 30.0) -> list[NatsServer]:
    """Start a loopback cluster and wait until a message crosses every route."""
    servers = write_cluster(directory, nodes, jetstream=jetstream)
    await asyncio.gather(*(s.start() for s in servers))
    await wait_routed([s.url for s in servers], timeout)
    return servers


async def wait_routed(urls: Iterable[str], timeout: float = 30.0) -> None:
    """Until a message published on each node reaches a subscriber on every node."""
    urls = list(urls)
    clients = [await nats.connect(u) for u in urls]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        for i, listener in enumerate(clients):
            got: asyncio.Queue[bytes] = asyncio.Queue()

            async def on_msg(msg: nats.aio.msg.Msg, q: asyncio.Queue[bytes] = got) -> None:
                await q.put(msg.data)

            await listener.subscribe(f"_probe.{i}", cb=on_msg)
            await listener.flush()
            for j, sender in enumerate(clients):
                token = f"{j}".encode()
                while True:
                    await sender.publish(f"_probe.{i}", token)
                    await sender.flush()
                    with contextlib.suppress(TimeoutError):
                        if await asyncio.wait_for(_until(got, token), 0.2):
                            break
                    if loop.time() > deadline:
                        raise TimeoutError(f"no route from node {j} to node {i}")
    finally:
        for c in clients:
            await c.close()


async def _until(queue: asyncio.Queue[bytes], token: bytes) -> bool:
    while await queue.get() != token:
        pass
    return True
