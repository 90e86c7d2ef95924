"""The nats-server configuration of a deployment: one nkey per principal, least privilege.

Every principal connects with its own user nkey (the same key that signs its envelopes)
and gets only the subjects its role needs. Nobody else can connect at all: there is no
anonymous or default user. See docs/security.md for the layout and the reasons.

``render_config(deployment, port=...)`` is what ``tycoon init`` writes and ``tycoon up``
starts the server with; :func:`render_principals` does the same from a plain list of
:class:`Principal` (tests, hand-made clusters); :func:`permissions` is the pure rule set
(tycoon.natspolicy).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tycoon.deploy import Deployment
from tycoon.natspolicy import (  # the pure policy; re-exported here
    OPERATOR_CAPABILITIES,
    PRICES_STREAM,
    ROLES,
    SETTLEMENTS_ALL,
    SETTLEMENTS_STREAM,
    Permissions,
    Principal,
    inbox,
    permissions,
)

__all__ = [
    "CONFIG_NAME",
    "OPERATOR_CAPABILITIES",
    "PRICES_STREAM",
    "PRINCIPALS_NAME",
    "ROLES",
    "SETTLEMENTS_ALL",
    "SETTLEMENTS_STREAM",
    "TLS",
    "Permissions",
    "Principal",
    "deployment_principals",
    "inbox",
    "load_principals",
    "permissions",
    "render_config",
    "render_principals",
    "write_config",
]


CONFIG_NAME = "nats.conf"
LOG_SIZE_LIMIT = "10MB"
LOG_MAX_FILES = 5
"""nats-server's log: rotated at 10 MB, the current file and 4 older ones kept."""
PRINCIPALS_NAME = "principals.conf"
LOOPBACK = "127.0.0.1"
STORE_KEY = "store"
"""The bundle store's key on a single machine (``tycoon up`` makes it); a store elsewhere is
admitted like a host (``tycoon admit store NAME PUBKEY``: principals.conf)."""

@dataclass(frozen=True)
class TLS:
    """Server TLS: certificate and key; with ``ca_file`` and ``verify`` clients need certs."""

    cert_file: str
    key_file: str
    ca_file: str | None = None
    verify: bool = False



def deployment_principals(
    deployment: Deployment,
    *,
    operator_capabilities: Iterable[str] = OPERATOR_CAPABILITIES,
    jetstream_roles: Iterable[str] = (),
) -> list[Principal]:
    """Every key a deployment names, with its role (bank, sls, operator, hosts, agents)."""
    js = set(jetstream_roles)

    def make(key: str, role: str, extra: Iterable[str] = ()) -> Principal:
        caps = set(extra) | ({"jetstream"} if role in js else set())
        return Principal(deployment.public_key(key), role, key, frozenset(caps))

    out = [
        make(deployment.bank_key, "bank"),
        make(deployment.sls_key, "sls"),
        make(deployment.operator_key, "operator", operator_capabilities),
    ]
    if STORE_KEY in deployment.pins or deployment.store.exists(STORE_KEY):
        out.append(make(STORE_KEY, "store"))  # bundles (tycoon store serve); else admitted
    out += [make(h.key, "host") for h in deployment.hosts]
    out += [make(a.key, "agent") for a in deployment.agents]
    return out


def render_config(
    deployment: Deployment,
    *,
    port: int,
    host: str = "127.0.0.1",
    jetstream_dir: str | None = None,
    http_port: int | None = None,
    extra_users: Iterable[Principal] = (),
    tls: TLS | None = None,
    operator_capabilities: Iterable[str] = OPERATOR_CAPABILITIES,
    jetstream_roles: Iterable[str] = (),
    max_payload: str = "1MB",
    websocket_port: int | None = None,
) -> str:
    """The nats-server config of ``deployment``: its keys, plus ``extra_users``.

    The server runs JetStream only when ``jetstream_dir`` is given (or ``-js`` is on its
    command line). The bank and the SLS always own their streams (SETTLEMENTS, PRICES),
    clients may read PRICES; ``jetstream_roles`` (e.g. ``("bank",)``) grants whole roles
    the full JetStream API, as ``operator_capabilities`` does the operator by default.
    """
    principals = deployment_principals(
        deployment, operator_capabilities=operator_capabilities, jetstream_roles=jetstream_roles
    )
    return render_principals(
        [*principals, *extra_users], port=port, host=host, jetstream_dir=jetstream_dir,
        http_port=http_port, tls=tls, max_payload=max_payload,
        title=f"deployment {deployment.home}", websocket_port=websocket_port,
    )  # fmt: skip


def render_principals(
    principals: Iterable[Principal],
    *,
    port: int,
    host: str = "127.0.0.1",
    jetstream_dir: str | None = None,
    http_port: int | None = None,
    tls: TLS | None = None,
    max_payload: str = "1MB",
    title: str = "",
    log_file: str | None = None,
    log_size_limit: str = LOG_SIZE_LIMIT,
    log_max_files: int = LOG_MAX_FILES,
    websocket_port: int | None = None,
    http_host: str | None = None,
    max_file_store: str = "4GB",
    max_memory_store: str = "256MB",
    server_name: str | None = None,
    cluster: list[str] | None = None,
) -> str:
    """A complete nats-server config allowing exactly ``principals`` (one entry per key).

    The server's own log rotates by size (``logfile_size_limit``, keeping
    ``logfile_max_num`` files) whenever it logs to a file: ``log_file`` here, or ``-l`` on
    its command line (as ``tycoon up`` starts it). Monitoring (``http_port``) listens on
    ``http_host``, loopback unless told. ``cluster`` is a node's ``cluster { }`` block."""
    users: dict[str, Principal] = {}
    for p in principals:
        if p.public_key in users and users[p.public_key] != p:
            raise ValueError(f"key {p.public_key} is listed with two roles")
        users[p.public_key] = p
    if not users:
        raise ValueError("a config needs at least one principal")
    lines = [
        "# nats-server config for Tycoon, written by tycoon.natsconf"
        + (f" ({title})" if title else "") + ".",
        "# Every principal connects with its own nkey; see docs/security.md.",
        "",
        *([f"server_name: {_q(server_name)}"] if server_name else []),
        f"listen: {_q(f'{host}:{port}')}",
        f"max_payload: {max_payload}",
        "max_pending: 64MB",
        'ping_interval: "20s"',
        'write_deadline: "5s"',
        "",
        "# Its own log rotates by size, whoever floods it (docs/operations.md).",
        *([f"log_file: {_q(log_file)}"] if log_file else []),
        f"logfile_size_limit: {log_size_limit}",
        f"logfile_max_num: {log_max_files}",
    ]  # fmt: skip
    if http_port is not None:
        lines += ["", "# Monitoring (/varz, /connz): unauthenticated, keep it on loopback.",
                  f"http: {_q(f'{http_host or LOOPBACK}:{http_port}')}"]
    if jetstream_dir is not None:
        lines += ["", "# Sized from the streams (docs/operations.md, 'JetStream storage').",
                  "jetstream {", f"  store_dir: {_q(jetstream_dir)}",
                  f"  max_memory_store: {max_memory_store}",
                  f"  max_file_store: {max_file_store}", "}"]
    if cluster:
        lines += ["", *cluster]
    if tls is not None:
        lines += ["", *render_tls(tls)]
    if websocket_port is not None:
        lines += ["", *render_websocket(host, websocket_port, tls)]
    lines += ["", "authorization {", "  timeout: 2", "  users = ["]
    for p in users.values():
        lines += _render_user(p)
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def render_tls(tls: TLS) -> list[str]:
    """The ``tls { }`` block (server certificate; client certificates if ``verify``)."""
    out = ["tls {", f"  cert_file: {_q(tls.cert_file)}", f"  key_file: {_q(tls.key_file)}"]
    if tls.ca_file:
        out.append(f"  ca_file: {_q(tls.ca_file)}")
    if tls.verify:
        out.append("  verify: true")
    return [*out, "  timeout: 2", "}"]


def render_websocket(host: str, port: int, tls: TLS | None = None) -> list[str]:
    """The ``websocket { }`` listener the web dashboard's browser connects to (same users,
    same nkeys, same permissions): plain on loopback, the server's certificate (wss://)
    when the server has TLS (docs/dashboard.md)."""
    secure = ["  tls {", f"    cert_file: {_q(tls.cert_file)}",
              f"    key_file: {_q(tls.key_file)}", "  }"] if tls else ["  no_tls: true"]
    return ["# The web dashboard's browsers (docs/dashboard.md): same users and permissions.",
            "websocket {", f"  listen: {_q(f'{host}:{port}')}", *secure,
            "  compression: false", "}"]


def load_principals(path: Path) -> list[Principal]:
    """Extra principals from a text file (absent: none), one per line, ``#`` comments::

        user      UABC...  alice
        broker    UDEF...  broker-1
        operator  UGHI...  night-shift +monitor
    """
    if not path.exists():
        return []
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        caps = {c for w in words[2:] if w.startswith("+") for c in w[1:].split(",") if c}
        names = [w for w in words[2:] if not w.startswith("+")]
        try:
            if len(words) < 2 or len(names) > 1:
                raise ValueError("expected: ROLE PUBLIC_KEY [NAME] [+CAPABILITY,...]")
            out.append(Principal(words[1], words[0], names[0] if names else "",
                                 frozenset(caps)))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc
    return out


def write_config(path: Path, text: str) -> Path:
    """Write a config atomically (no secrets inside: public keys only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _render_user(p: Principal) -> list[str]:
    perms = permissions(p)
    caps = f" +{','.join(sorted(p.capabilities))}" if p.capabilities else ""
    out = [f"    # {p.role}{caps}: {p.name or p.id} (id {p.id})", "    {",
           f"      nkey: {p.public_key}", "      permissions: {"]
    out += _render_rule("publish", perms.publish_allow, perms.publish_deny)
    out += _render_rule("subscribe", perms.subscribe_allow, perms.subscribe_deny)
    if perms.allow_responses:
        out.append("        allow_responses: true")
    return [*out, "      }", "    }"]


def _render_rule(name: str, allow: tuple[str, ...], deny: tuple[str, ...]) -> list[str]:
    out = [f"        {name}: {{"]
    for label, items in (("allow", allow), ("deny", deny)):
        line = f"          {label}: [{', '.join(_q(s) for s in items)}]"
        if len(line) <= 100:
            out += [line] if items else []
        else:
            out += [f"          {label}: [", *(f"            {_q(s)}," for s in items)]
            out.append("          ]")
    return [*out, "        }"]


def _q(text: str) -> str:
    return json.dumps(text)

