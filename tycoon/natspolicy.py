"""The NATS permission policy of Tycoon: roles, capabilities and what each may publish and
subscribe to (pure: no I/O). :func:`permissions` is the whole rule set; tycoon.natsconf
renders it into a nats-server config. See docs/security.md for the layout and the reasons.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tycoon.bundles import names as bundles
from tycoon.bus import subjects
from tycoon.bus.keys import is_public_key, subject_id

ROLES = ("bank", "sls", "store", "host", "agent", "broker", "user", "operator", "viewer")
"""Every role a principal can play."""

CAPABILITIES = ("requests", "monitor", "jetstream")
"""Extra grants on top of a role: ``requests`` (send requests to the bank, SLS, hosts and
brokers: an operator that mints), ``monitor`` (``$SRV.>`` discovery requests, for
``tycoon status``), ``jetstream`` (the whole JetStream API: create, change and delete any
stream, e.g. ``tycoon streams``)."""
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
    bundles.REQUESTS,  # bundle.put / bundle.get, served by the store in the signer's bucket
)
SERVICE_EVENTS = (subjects.BANK_SETTLED, subjects.SLS_SNAPSHOT)
# What anybody may read: the public market feeds.
PUBLIC_FEEDS = (subjects.PRICES_ALL, subjects.ALLOCS_ALL, subjects.SLS_SNAPSHOT)
# What a viewer (the web dashboard, docs/dashboard.md) may read: the public feeds, the
# bank's settled receipts and the agents' decisions. It publishes nothing at all.
VIEWER_FEEDS = (*PUBLIC_FEEDS, subjects.BANK_SETTLED, subjects.AGENTS_ALL)
# A host publishes its jobs' output and exits on tycoon.job.<account id>.<job id>.<event>;
# any host may publish there (a job id is the host's), so a reader checks the signer is the
# host it ran the job on (tycoon.auctioneer.jobclient). Each client reads only its own id's.
JOB_EVENTS = f"{subjects.PREFIX}.job.*.*.*"
# What no client role may ever publish (defence in depth over the allow lists).
NEVER_FROM_CLIENTS = (
    f"{subjects.PREFIX}.price.>",
    f"{subjects.PREFIX}.alloc.>",
    subjects.JOBS_ALL,
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
        pub_deny += NEVER_FROM_SERVICES  # bundles are the store's: no object-store right
        sub += [f"{subjects.PREFIX}.bank.*", SRV_ALL]
        sub_deny += [subjects.BANK_SETTLED]
    elif p.role == "store":  # the only key with rights on bundle buckets (docs/security.md)
        pub += [INBOXES, *bundles.store_publish()]  # make a bucket, put chunks, get messages
        pub_deny += [*(d for d in NEVER_FROM_SERVICES if d != "$O.>"), SETTLEMENTS_ALL,
                     *(s for s in CLIENT_REQUESTS if s != bundles.REQUESTS)]
        sub += [bundles.REQUESTS, SRV_ALL]
    elif p.role == "sls":
        pub += [INBOXES, subjects.SLS_SNAPSHOT, *js_owner(PRICES_STREAM)]
        pub_deny += [*NEVER_FROM_SERVICES, SETTLEMENTS_ALL]
        sub += [subjects.PRICES_ALL, f"{subjects.PREFIX}.sls.*", SRV_ALL]
        sub_deny += [subjects.SLS_SNAPSHOT]
    elif p.role == "host":
        # A host answers its own requests, publishes its own prices and allocations, and
        # talks to the bank (its own account, refunds) — nothing else, no JetStream at all
        # (PRICES captures its price updates).
        pub += [INBOXES, subjects.price(pid), subjects.alloc(pid), f"{subjects.PREFIX}.bank.*",
                JOB_EVENTS, bundles.REQUESTS]  # a job's bundle and results: through the store
        pub_deny += [subjects.BANK_SETTLED, SETTLEMENTS_ALL, "$JS.>", *NEVER_FROM_SERVICES]
        sub += [subjects.host_all(pid), SRV_ALL]
    elif p.role in ("agent", "broker", "user"):
        pub += [*CLIENT_REQUESTS]  # no JetStream right at all: see PRICES_STREAM above
        pub_deny += NEVER_FROM_CLIENTS
        sub += [*PUBLIC_FEEDS, subjects.job_all(pid)]  # its own jobs' output only
        if p.role == "agent":
            pub += [subjects.agent_all(pid)]
        if p.role == "broker":
            # A broker's jobs run on its connection, each signed by a job key made at
            # enrolment, so their event ids cannot be listed in advance. It answers its
            # requests (Service: the requester's own inbox only).
            pub += [subjects.AGENTS_ALL, INBOXES]
            pub_deny += ["$JS.>", *NEVER_FROM_SERVICES]
            sub += [f"{subjects.PREFIX}.broker.{pid}.>", SRV_ALL]
    elif p.role == "viewer":  # read-only: no inbox, no requests, no JetStream, no capability
        sub = list(VIEWER_FEEDS)
        pub_deny = [NOTHING]
    else:  # operator: watches everything; publishes nothing without a capability
        sub += [subjects.ALL]
    if p.role == "viewer":
        pass  # capabilities never widen a viewer
    elif "requests" in p.capabilities and p.role not in ("agent", "broker", "user"):
        pub += CLIENT_REQUESTS
        pub_deny += [s for s in SERVICE_EVENTS if s not in pub]
    if "monitor" in p.capabilities and p.role != "viewer":
        pub += [SRV_ALL]
    if "jetstream" in p.capabilities and p.role != "viewer":  # the whole JetStream API, on purpose
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


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
