"""The nats-server configuration of a deployment: one nkey per principal, least privilege.

Every principal connects with its own user nkey (the same key that signs its envelopes)
and gets only the subjects its role needs. Nobody else can connect at all: there is no
anonymous or default user. See docs/security.md for the layout and the reasons.

``render_config(deployment, port=...)`` is what ``tycoon init`` writes and ``tycoon up``
starts the server with; :func:`render_principals` does the same from a plain list of
:class:`Principal` (tests, hand-made clusters); :func:`permissions` is the pure rule set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tycoon.bus import subjects
from tycoon.bus.keys import is_public_key, subject_id
from tycoon.deploy import Deployment

ROLES = ("bank", "sls", "host", "agent", "broker", "user", "operator")
"""Every role a principal can play."""

CAPABILITIES = ("requests", "monitor", "jetstream")
"""Extra grants on top of a role: ``requests`` (send requests to the bank, SLS, hosts and
brokers: an operator that mints), ``monitor`` (``$SRV.>`` discovery requests, for
``tycoon status``), ``jetstream`` (the whole JetStream API: create, change and delete any
stream, e.g. ``tycoon streams``)."""

CONFIG_NAME = "nats.conf"
LOG_SIZE_LIMIT = "10MB"
LOG_MAX_FILES = 5
"""nats-server's log: rotated at 10 MB, the current file and 4 older ones kept."""
PRINCIPALS_NAME = "principals.conf"
OPERATOR_CAPABILITIES = frozenset({"requests", "monitor", "jetstream"})
"""What ``render_config`` grants the deployment's operator key: it mints at the bank, runs
``tycoon status`` and manages the streams. A watch-only operator (``tap``/``top``) gets
no capability and publishes nothing."""

SRV_ALL = "$SRV.>"
JS_ADMIN = ("$JS.API.>", "$JS.ACK.>")
NOTHING = ">"
INBOXES = "_INBOX.>"
"""Where a service's replies go: ordinary publishes to the requester's inbox. No role has
``allow_responses`` (which would let it publish to ANY reply subject a request names); the
Service base answers only under the signer's own ``_INBOX.<id>.`` (tycoon.bus.connection)."""
NEVER_FROM_SERVICES = (
    "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.UPDATE.>",
    "$JS.API.STREAM.MSG.DELETE.>", "$JS.API.STREAM.SNAPSHOT.>", "$JS.API.STREAM.RESTORE.>",
    "$JS.API.STREAM.PEER.>", "$JS.API.STREAM.LEADER.>", "$JS.API.CONSUMER.>",
    "$JS.API.ACCOUNT.>", "$JS.API.SERVER.>", "$JS.API.META.>", "$JS.ACK.>", "$JS.FC.>",
    "$KV.>", "$O.>", "$SYS.>", SRV_ALL,
)
"""Denied to every service role whatever its allow list says (deny wins in NATS): no
JetStream administration, no consumers, no key-value or object stores, no system account,
no micro-services requests. See docs/security.md for each role's exact JetStream rights."""
# The JetStream streams (names as in tycoon/streams/config.py). Each service owns its
# stream (creates it, reads it with direct gets); no other role holds any JetStream API
# right: a JetStream answer goes to whatever reply subject the request names, so even a
# read right would let a user steer the server's own answers (onto the purge API, say).
PRICES_STREAM = "PRICES"
SETTLEMENTS_STREAM = "SETTLEMENTS"
SETTLEMENTS_ALL = f"{subjects.PREFIX}.settlement.>"
# Requests a client may send: every service's request subjects. The two event subjects
# that share those prefixes are denied explicitly (deny wins over allow in NATS).
CLIENT_REQUESTS = (
    f"{subjects.PREFIX}.bank.*",
    f"{subjects.PREFIX}.sls.*",
    f"{subjects.PREFIX}.host.*.*",
    f"{subjects.PREFIX}.broker.*.*",
)
SERVICE_EVENTS = (subjects.BANK_SETTLED, subjects.SLS_SNAPSHOT)
# What anybody may read: the public market feeds.
PUBLIC_FEEDS = (subjects.PRICES_ALL, subjects.ALLOCS_ALL, subjects.SLS_SNAPSHOT)
# What no client role may ever publish (defence in depth over the allow lists).
NEVER_FROM_CLIENTS = (
    f"{subjects.PREFIX}.price.>",
    f"{subjects.PREFIX}.alloc.>",
    SETTLEMENTS_ALL,
    *SERVICE_EVENTS,
    "$JS.>", "$KV.>", "$O.>", "$SYS.>",
)


def js_owner(stream: str) -> tuple[str, ...]:
    """The JetStream API subjects of one stream's owning service: create it if missing,
    read its info, read its messages with (batch) direct gets. Nothing else: no update,
    purge or delete, no consumers (tycoon.streams.reader reads without one)."""
    api = "$JS.API"
    return (f"{api}.STREAM.INFO.{stream}", f"{api}.STREAM.CREATE.{stream}",
            f"{api}.DIRECT.GET.{stream}")


@dataclass(frozen=True)
class Principal:
    """One key allowed to connect, the role it plays and any extra capabilities."""

    public_key: str
    role: str
    name: str = ""
    capabilities: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not is_public_key(self.public_key):
            raise ValueError(f"not a user public nkey: {self.public_key!r}")
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; one of {', '.join(ROLES)}")
        unknown = set(self.capabilities) - set(CAPABILITIES)
        if unknown:
            raise ValueError(f"unknown capabilities {sorted(unknown)}")
        object.__setattr__(self, "capabilities", frozenset(self.capabilities))

    @property
    def id(self) -> str:
        """The principal's subject id (its host id, agent id, broker id, inbox token)."""
        return subject_id(self.public_key)


@dataclass(frozen=True)
class Permissions:
    """A principal's NATS permissions (allow, deny; deny wins) and responder flag."""

    publish_allow: tuple[str, ...]
    publish_deny: tuple[str, ...]
    subscribe_allow: tuple[str, ...]
    subscribe_deny: tuple[str, ...]
    allow_responses: bool

    def may_publish(self, subject: str) -> bool:
        """Whether the server lets this principal publish on ``subject`` (not replies)."""
        return _permitted(subject, self.publish_allow, self.publish_deny)

    def may_subscribe(self, subject: str) -> bool:
        """Whether the server lets this principal subscribe to exactly ``subject``."""
        return _permitted(subject, self.subscribe_allow, self.subscribe_deny)


@dataclass(frozen=True)
class TLS:
    """Server TLS: certificate and key; with ``ca_file`` and ``verify`` clients need certs."""

    cert_file: str
    key_file: str
    ca_file: str | None = None
    verify: bool = False


def inbox(principal_id: str) -> str:
    """The reply-inbox subjects of one principal (the Bus's ``inbox_prefix``)."""
    return f"_INBOX.{principal_id}.>"


def permissions(p: Principal) -> Permissions:
    """The least-privilege permissions of one principal (pure; the whole policy)."""
    pid = p.id
    pub: list[str] = []
    pub_deny: list[str] = []
    sub: list[str] = [inbox(pid)]
    sub_deny: list[str] = []
    responds = False
    if p.role == "bank":
        pub += [INBOXES, subjects.BANK_SETTLED, SETTLEMENTS_ALL, *js_owner(SETTLEMENTS_STREAM)]
        pub_deny += NEVER_FROM_SERVICES
        sub += [f"{subjects.PREFIX}.bank.*", SRV_ALL]
        sub_deny += [subjects.BANK_SETTLED]
    elif p.role == "sls":
        pub += [INBOXES, subjects.SLS_SNAPSHOT, *js_owner(PRICES_STREAM)]
        pub_deny += [*NEVER_FROM_SERVICES, SETTLEMENTS_ALL]
        sub += [subjects.PRICES_ALL, f"{subjects.PREFIX}.sls.*", SRV_ALL]
        sub_deny += [subjects.SLS_SNAPSHOT]
    elif p.role == "host":
        # A host answers its own requests, publishes its own prices and allocations, and
        # talks to the bank (its own account, refunds) — nothing else, no JetStream at all
        # (PRICES captures its price updates).
        pub += [INBOXES, subjects.price(pid), subjects.alloc(pid), f"{subjects.PREFIX}.bank.*"]
        pub_deny += [subjects.BANK_SETTLED, SETTLEMENTS_ALL, "$JS.>", *NEVER_FROM_SERVICES]
        sub += [subjects.host_all(pid), SRV_ALL]
    elif p.role in ("agent", "broker", "user"):
        pub += [*CLIENT_REQUESTS]  # no JetStream right at all: see PRICES_STREAM above
        pub_deny += NEVER_FROM_CLIENTS
        sub += PUBLIC_FEEDS
        if p.role == "agent":
            pub += [subjects.agent_all(pid)]
        if p.role == "broker":
            # A broker's jobs run on its connection, each signed by a job key made at
            # enrolment, so their event ids cannot be listed in advance. It answers its
            # requests (Service: the requester's own inbox only).
            pub += [subjects.AGENTS_ALL, INBOXES]
            pub_deny += ["$JS.>", *NEVER_FROM_SERVICES]
            sub += [f"{subjects.PREFIX}.broker.{pid}.>", SRV_ALL]
    else:  # operator: watches everything; publishes nothing without a capability
        sub += [subjects.ALL]
    if "requests" in p.capabilities and p.role not in ("agent", "broker", "user"):
        pub += CLIENT_REQUESTS
        pub_deny += [s for s in SERVICE_EVENTS if s not in pub]
    if "monitor" in p.capabilities:
        pub += [SRV_ALL]
    if "jetstream" in p.capabilities:  # the whole JetStream API, on purpose
        pub += JS_ADMIN
        pub_deny = [d for d in pub_deny if not d.startswith("$JS.")]
    if not pub:
        pub_deny = [NOTHING]
    return Permissions(
        publish_allow=_unique(pub),
        publish_deny=_unique(pub_deny),
        subscribe_allow=_unique(sub),
        subscribe_deny=_unique(sub_deny),
        allow_responses=responds,
    )


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
        title=f"deployment {deployment.home}",
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
) -> str:
    """A complete nats-server config allowing exactly ``principals`` (one entry per key).

    The server's own log rotates by size (``logfile_size_limit``, keeping
    ``logfile_max_num`` files) whenever it logs to a file: ``log_file`` here, or ``-l`` on
    its command line (as ``tycoon up`` starts it)."""
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
                  f"http: {_q(f'{host}:{http_port}')}"]
    if jetstream_dir is not None:
        lines += ["", "jetstream {", f"  store_dir: {_q(jetstream_dir)}",
                  "  max_memory_store: 256MB", "  max_file_store: 4GB", "}"]
    if tls is not None:
        lines += ["", *render_tls(tls)]
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


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` one token, ``>`` one or more trailing tokens."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, token in enumerate(pat):
        if token == ">":
            return len(sub) > i
        if i >= len(sub) or (token != "*" and token != sub[i]):
            return False
    return len(pat) == len(sub)


def _permitted(subject: str, allow: tuple[str, ...], deny: tuple[str, ...]) -> bool:
    if any(subject_matches(d, subject) for d in deny):
        return False
    return any(subject_matches(a, subject) for a in allow)
