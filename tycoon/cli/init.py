"""``tycoon init``: create the key store, the config of a deployment and its nats-server config."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from urllib.parse import urlsplit

from tycoon.bus.keys import default_home
from tycoon.deploy import Deployment
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
    init.add_argument("--role", default="user",
                      choices=("user", "agent", "broker", "operator"),
                      help="role of the --user principals (default user)")
    init.set_defaults(func=cmd_init)


def admit(deployment: Deployment, name: str, role: str) -> bool:
    """Make key ``name`` and list it in principals.conf as ``role``; False if listed."""
    key = deployment.store.load_or_create(name).public_key
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
    deployment's): every key of the deployment, the CLI's own key (as an agent) and the
    extra principals listed in ``<home>/principals.conf``; JetStream under ``<home>``."""
    where = urlsplit(url or deployment.nats_url or "nats://127.0.0.1:4222")
    cli = deployment.store.load_or_create(CLI_KEY)
    extra = load_principals(deployment.home / PRINCIPALS_NAME)
    if cli.public_key not in {p.public_key for p in [*extra, *deployment_principals(deployment)]}:
        extra.append(Principal(cli.public_key, "agent", CLI_KEY))
    text = render_config(
        deployment, port=where.port or 4222, host=where.hostname or "127.0.0.1",
        jetstream_dir=str(deployment.home / "jetstream"), http_port=http_port,
        extra_users=extra, tls=tls,
    )  # fmt: skip
    return write_config(deployment.home / CONFIG_NAME, text)


def tls_from(args: argparse.Namespace) -> TLS | None:
    """The ``--tls-*`` options as a :class:`TLS` (None without a certificate)."""
    if not (args.tls_cert or args.tls_key):
        return None
    if not (args.tls_cert and args.tls_key):
        raise SystemExit("error: --tls-cert and --tls-key go together")
    return TLS(args.tls_cert, args.tls_key, ca_file=args.tls_ca, verify=bool(args.tls_ca))


def cmd_init(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else default_home()
    existing = (home / "tycoon.toml").exists()
    if existing and not args.force:
        deployment = Deployment.load(home)
        print(f"{home / 'tycoon.toml'} exists (use --force to rewrite); checking its keys")
    else:
        deployment = Deployment.default(home, args.hosts, args.agents, args.nats)
    made = deployment.ensure_keys()
    admitted = [name for name in args.user if admit(deployment, name, args.role)]
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
    if admitted and reload_server(home):
        print("  reloaded the running nats-server (SIGHUP)")
    return 0
