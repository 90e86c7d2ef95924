"""Render a deployment's nats-server config(s) from its ``tycoon.toml`` alone.

Everything a render needs lives in the deployment's config: the principals' public keys
(``[bank]``, ``[[hosts]]``, ... and ``principals.conf``) and the ``[server]`` section (listen
address, monitoring, TLS, cluster nodes, JetStream limits). A render never creates a key and
never reads a secret one: a name without a public key is an error naming ``tycoon admit``.
One config for a single server (``nats.conf``), one per node for a cluster
(``nats-<node>.conf``). See docs/operations.md.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tycoon.deploy import Deployment
from tycoon.errors import Rejected
from tycoon.natsconf import (
    CONFIG_NAME,
    LOOPBACK,
    PRINCIPALS_NAME,
    TLS,
    Principal,
    deployment_principals,
    load_principals,
    render_principals,
)
from tycoon.streams.config import file_store_needed

CLI_KEY = "default"
CLIENT_PORT = 4222
ROUTE_PORT = 6222


@dataclass(frozen=True)
class Node:
    """One cluster node: where clients and routes reach it, and its server name."""

    name: str
    host: str
    port: int = CLIENT_PORT
    route_port: int = ROUTE_PORT
    http_port: int | None = None
    """This node's monitoring port; None: ``[server] http_port``."""

    @property
    def config_name(self) -> str:
        return f"nats-{self.name}.conf"


@dataclass(frozen=True)
class ServerSettings:
    """The ``[server]`` section of tycoon.toml (every field kept across renders)."""

    listen: str = ""
    """``HOST:PORT`` clients connect to; empty: the market URL's first host and port."""
    http_port: int | None = None
    http_host: str = LOOPBACK
    """Monitoring is unauthenticated: loopback unless the operator says otherwise."""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    cluster: tuple[str, ...] = ()
    """Nodes as ``HOST[:PORT[:ROUTE_PORT[:HTTP_PORT]]]``; empty: a single server."""
    cluster_name: str = "tycoon"
    cluster_ca: str = ""
    """CA of the nodes' certificates: with TLS on, routes use TLS too and verify each
    other against it (empty: routes are plain)."""
    max_file_store: int = 0
    """Bytes; 0: sized from the streams (their max_bytes plus a quarter)."""
    max_memory_store: str = "256MB"
    store_dir: str = ""
    """JetStream's directory on the server's machine (a node's in ``<store_dir>/<node>``);
    empty: ``<home>/jetstream``."""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerSettings:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "extra"}
        if "cluster" in known:
            known["cluster"] = tuple(str(n) for n in known["cluster"])
        settings = cls(**known, extra={k: v for k, v in data.items()
                                       if k not in cls.__dataclass_fields__})
        settings.nodes()  # refuse a bad node list before anything is written
        return settings

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        defaults = ServerSettings()
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name != "extra" and value != getattr(defaults, name):
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def tls(self) -> TLS | None:
        if not self.tls_cert:
            return None
        return TLS(self.tls_cert, self.tls_key, ca_file=self.tls_ca or None,
                   verify=bool(self.tls_ca))

    def nodes(self) -> list[Node]:
        """The cluster's nodes (names: the hosts if distinct, else n1, n2, ...)."""
        parsed = []
        for spec in self.cluster:
            parts = spec.strip().split(":")
            if not parts[0] or len(parts) > 4 or not all(p.isdigit() for p in parts[1:]):
                raise Rejected("malformed", f"cluster node {spec!r}: expected "
                                            "HOST[:PORT[:ROUTE_PORT[:HTTP_PORT]]]")
            ports = [int(p) for p in parts[1:]] + [CLIENT_PORT, ROUTE_PORT][len(parts) - 1:]
            http = ports[2] if len(ports) > 2 else None
            parsed.append((parts[0], ports[0], ports[1], http))
        hosts = [h for h, _, _, _ in parsed]
        unique = len(set(hosts)) == len(hosts)
        return [Node(h if unique else f"n{i + 1}", h, p, r, w)
                for i, (h, p, r, w) in enumerate(parsed)]


def listen_of(url: str) -> tuple[str, int]:
    """Host and port of the first URL of a comma-separated list (default loopback:4222)."""
    first = (url or f"nats://{LOOPBACK}:{CLIENT_PORT}").split(",")[0].strip()
    parts = urlsplit(first if "://" in first else f"nats://{first}")
    try:
        return parts.hostname or LOOPBACK, parts.port or CLIENT_PORT
    except ValueError as exc:
        raise Rejected("malformed", f"{first!r} is not a NATS URL ({exc})") from exc


def principals_of(deployment: Deployment) -> list[Principal]:
    """Every principal a render lists: the deployment's keys, principals.conf and the
    home's own CLI key if it holds one (it may also ask services for their stats)."""
    extra = load_principals(deployment.home / PRINCIPALS_NAME)
    listed = [*deployment_principals(deployment), *extra]
    if deployment.store.exists(CLI_KEY):
        cli = deployment.store.load(CLI_KEY).public_key
        if cli not in {p.public_key for p in listed}:
            extra.append(Principal(cli, "agent", CLI_KEY, frozenset({"monitor"})))
    return [*deployment_principals(deployment), *extra]


def render_deployment(deployment: Deployment, *, url: str = "",
                      extra_users: Iterable[Principal] = (),
                      websocket_port: int | None = None) -> dict[str, str]:
    """File name -> config text: ``nats.conf``, or one ``nats-<node>.conf`` per node.
    A single server listens at ``url`` if given, else at ``[server] listen``, else at the
    market URL's first host and port."""
    settings = ServerSettings.from_dict(deployment.server)
    principals = principals_of(deployment)
    known = {p.public_key for p in principals}
    principals += [p for p in extra_users if p.public_key not in known]
    host, port = (settings.listen.rsplit(":", 1)[0], int(settings.listen.rsplit(":", 1)[1])) \
        if settings.listen and not url else listen_of(url or deployment.nats_url)
    common: dict[str, Any] = dict(
        http_port=settings.http_port, http_host=settings.http_host, tls=settings.tls,
        max_file_store=str(settings.max_file_store or file_store_needed()),
        max_memory_store=settings.max_memory_store, title=f"deployment {deployment.home}")
    nodes = settings.nodes()
    store = Path(settings.store_dir) if settings.store_dir else deployment.home / "jetstream"
    if not nodes:
        return {CONFIG_NAME: render_principals(
            principals, port=port, host=host, websocket_port=websocket_port,
            jetstream_dir=str(store), **common)}
    out = {}
    for node in nodes:
        routes = [f'    "nats-route://{o.host}:{o.route_port}",' for o in nodes if o != node]
        block = ["# Routes to every other node (docs/operations.md, 'The runbook').",
                 "cluster {", f'  name: "{settings.cluster_name}"',
                 f'  listen: "{node.host}:{node.route_port}"', "  routes: [", *routes, "  ]",
                 *route_tls(settings), "}"]
        per_node = {**common, "http_port": node.http_port or settings.http_port}
        out[node.config_name] = render_principals(
            principals, port=node.port, host=node.host, server_name=node.name, cluster=block,
            jetstream_dir=str(store / node.name), **per_node)
    return out


def route_tls(settings: ServerSettings) -> list[str]:
    """A cluster block's ``tls { }``: the node's certificate, peers verified against
    ``cluster_ca`` (nats-server asks a route's peer for its certificate too)."""
    if not (settings.tls_cert and settings.cluster_ca):
        return []
    return ["  # Routes over TLS: each node presents its certificate, verified against the CA.",
            "  tls {", f"    cert_file: {json.dumps(settings.tls_cert)}",
            f"    key_file: {json.dumps(settings.tls_key)}",
            f"    ca_file: {json.dumps(settings.cluster_ca)}", "    timeout: 5", "  }"]


def diff(home: Path, rendered: dict[str, str]) -> str:
    """A unified diff of what writing ``rendered`` would change under ``home``."""
    chunks = []
    for name, text in rendered.items():
        path = home / name
        old = path.read_text() if path.exists() else ""
        chunks += difflib.unified_diff(old.splitlines(keepends=True),
                                       text.splitlines(keepends=True),
                                       f"{name} (now)", f"{name} (rendered)")
    return "".join(chunks)


def drops_tls(home: Path, rendered: dict[str, str]) -> list[str]:
    """Configs under ``home`` that have a ``tls { }`` block the new render lacks."""
    return [name for name, text in rendered.items()
            if (home / name).exists() and "\ntls {" in (home / name).read_text()
            and "\ntls {" not in text]
