"""``tycoon init``: create the key store, the config of a deployment and its nats-server config."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit

from tycoon.cli.common import home_of, probe
from tycoon.deploy import Deployment
from tycoon.errors import Rejected
from tycoon.natsconf import (
    CONFIG_NAME,
    PRINCIPALS_NAME,
    TLS,
    Principal,
    deployment_principals,
    load_principals,
    render_config,
    write_config,
)
from tycoon.web.config import VIEWER_KEY, viewer_principal, websocket_port

CLI_KEY = "default"
"""The key the ``tycoon`` command signs with unless ``--as`` says otherwise."""


def register(sub: argparse._SubParsersAction) -> None:
    init = sub.add_parser("init", help="create keys and a config for a deployment")
    init.add_argument("--hosts", type=int, default=0, help="also make this many host keys")
    init.add_argument("--agents", type=int, default=0, help="also make this many agent keys")
    init.add_argument("--force", action="store_true", help="rewrite an existing config")
    init.add_argument("--tls-cert", default=None, help="server certificate (PEM): turn on TLS")
    init.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    init.add_argument("--tls-ca", default=None,
                      help="CA of client certificates: clients must then present one")
    init.add_argument("--http-port", type=int, default=None,
                      help="also serve nats-server monitoring on this port (loopback)")
    init.add_argument("--user", action="append", default=[], metavar="NAME",
                      help="admit a principal: make key NAME (if new), list it in "
                           "principals.conf, and reload a running server (repeatable)")
    init.add_argument("--role", default="agent",
                      choices=("user", "agent", "broker", "operator"),
                      help="role of the --user principals: agent may also publish its own "
                           "agent's events (tycoon agent run); user may only make requests")
    init.set_defaults(func=cmd_init)


def admit(deployment: Deployment, name: str, role: str) -> bool:
    """Make key ``name`` and list it in principals.conf as ``role``; False if listed."""
    try:
        key = deployment.store.load_or_create(name).public_key
    except ValueError as exc:
        raise Rejected("malformed", str(exc)) from exc
    path = deployment.home / PRINCIPALS_NAME
    if key in {p.public_key for p in load_principals(path)}:
        return False
    with path.open("a") as f:
        f.write(f"{role:<9} {key}  {name}\n")
    return True


def reload_server(home: Path) -> bool:
    """SIGHUP the nats-server that ``tycoon up`` runs for ``home``, if there is one."""
    pid_file = home / "pids" / "nats.pid"
    try:
        os.kill(int(pid_file.read_text()), signal.SIGHUP)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return False
    return True


def write_nats_config(deployment: Deployment, url: str = "", *, tls: TLS | None = None,
                      http_port: int | None = None) -> Path:
    """Write ``<home>/nats.conf`` for a server listening at ``url`` (default: the
    deployment's): every key of the deployment, the CLI's own key (an agent that may
    also ask for service stats) and the
    extra principals listed in ``<home>/principals.conf``; JetStream under ``<home>``."""
    where = urlsplit(url or deployment.nats_url or "nats://127.0.0.1:4222")
    cli = deployment.store.load_or_create(CLI_KEY)
    extra = load_principals(deployment.home / PRINCIPALS_NAME)
    if cli.public_key not in {p.public_key for p in [*extra, *deployment_principals(deployment)]}:
        # The home's own CLI key may also ask services for their stats ($SRV): `tycoon
        # status` works without --as (whoever holds this home holds the operator key too).
        extra.append(Principal(cli.public_key, "agent", CLI_KEY, frozenset({"monitor"})))
    # The web dashboard's read-only key and WebSocket listener (docs/dashboard.md).
    viewer = deployment.store.load_or_create(VIEWER_KEY).public_key
    if viewer not in {p.public_key for p in extra}:
        extra.append(viewer_principal(viewer))
    text = render_config(
        deployment, port=where.port or 4222, host=where.hostname or "127.0.0.1",
        jetstream_dir=str(deployment.home / "jetstream"), http_port=http_port,
        extra_users=extra, tls=tls,
        websocket_port=websocket_port(deployment.home, where.hostname or "127.0.0.1"),
    )  # fmt: skip
    return write_config(deployment.home / CONFIG_NAME, text)


def tls_from(args: argparse.Namespace) -> TLS | None:
    """The ``--tls-*`` options as a :class:`TLS` (None without a certificate)."""
    if not (args.tls_cert or args.tls_key):
        return None
    if not (args.tls_cert and args.tls_key):
        raise SystemExit("error: --tls-cert and --tls-key go together")
    return TLS(args.tls_cert, args.tls_key, ca_file=args.tls_ca, verify=bool(args.tls_ca))


RELOAD_CHECK_S = 5.0
"""How long init waits for a reloaded server to let the new keys in."""


def admitted_by_server(deployment: Deployment, names: list[str],
                       timeout: float | None = None) -> bool:
    """Whether the running server now lets every key of ``names`` in (a reload that
    nats-server refused is otherwise visible only in its log)."""
    url = deployment.nats_url or "nats://127.0.0.1:4222"
    timeout = RELOAD_CHECK_S if timeout is None else timeout

    async def check() -> bool:
        end = time.monotonic() + timeout
        while True:
            try:
                for name in names:
                    await probe(url, deployment.store.load(name), name)
                return True
            except Rejected:
                if time.monotonic() > end:
                    return False
                await asyncio.sleep(0.1)

    return asyncio.run(check())


def cmd_init(args: argparse.Namespace) -> int:
    home = home_of(args)[0]
    existing = (home / "tycoon.toml").exists()
    if existing and not args.force:
        deployment = Deployment.load(home)
        print(f"{home / 'tycoon.toml'} exists (use --force to rewrite); checking its keys")
    else:
        deployment = Deployment.default(home, args.hosts, args.agents, args.nats)
    made = deployment.ensure_keys()
    before = set(deployment.store.names())
    admitted = [name for name in args.user if admit(deployment, name, args.role)]
    made += [name for name in args.user if name not in before and name not in made]
    path = deployment.save()
    conf = write_nats_config(deployment, deployment.nats_url or args.nats, tls=tls_from(args),
                             http_port=args.http_port)
    print(f"config: {path}")
    print(f"nats:   {conf} (one nkey per principal; start: nats-server -c {conf})")
    print(f"keys:   {deployment.store.keys_dir} (mode 0600)")
    for name in made:
        print(f"  made {name:<12} {deployment.public_key(name)}")
    if not made:
        print("  every key already existed")
    for name in admitted:
        print(f"  admitted {name} as {args.role}: {deployment.public_key(name)}")
    if admitted and not reload_server(home):
        print(f"  no tycoon up runs for {home}: its server admits {', '.join(admitted)} "
              "when it starts (another nats-server: reload it with this nats.conf)")
    elif admitted:
        if admitted_by_server(deployment, admitted):
            print(f"  reloaded the running nats-server: it admits {', '.join(admitted)}")
        else:
            print(f"error: the running nats-server did not take the new config; see "
                  f"{home / 'logs' / 'nats.log'}")
            return 1
    return 0
