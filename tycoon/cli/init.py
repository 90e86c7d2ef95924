"""``tycoon init``: create the key store, the config of a deployment and its nats-server config."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from pathlib import Path

from tycoon.cli.common import home_of, probe
from tycoon.deploy import Deployment
from tycoon.errors import Rejected
from tycoon.natsconf import PRINCIPALS_NAME, TLS, load_principals, write_config
from tycoon.natsrender import (
    CLI_KEY,
    ServerSettings,
    diff,
    drops_tls,
    listen_of,
    render_deployment,
)
from tycoon.web.config import VIEWER_KEY, viewer_principal, websocket_port

__all__ = ["CLI_KEY", "admit", "write_nats_config"]
"""``CLI_KEY`` (tycoon.natsrender): the key ``tycoon`` signs with unless ``--as`` says."""


def register(sub: argparse._SubParsersAction) -> None:
    init = sub.add_parser("init", help="render a deployment's server config (--local: "
                                       "make the keys of a market on this one machine)")
    init.add_argument("--local", action="store_true",
                      help="a market on this one machine: make every key it names that has "
                           "no public key yet (bank, operator, sls, hosts, agents, the CLI's "
                           "'default' and the dashboard's 'viewer'); without it no key is made")
    init.add_argument("--hosts", type=int, default=0,
                      help="with --local: also make this many host keys")
    init.add_argument("--agents", type=int, default=0,
                      help="with --local: also make this many agent keys")
    init.add_argument("--force", action="store_true", help="rewrite an existing config")
    init.add_argument("--tls-cert", default=None, help="server certificate (PEM): turn on TLS")
    init.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    init.add_argument("--tls-ca", default=None,
                      help="CA of client certificates: clients must then present one")
    init.add_argument("--http-port", type=int, default=None,
                      help="also serve nats-server monitoring on this port (0: off; kept "
                           "in tycoon.toml)")
    init.add_argument("--http-host", default=None,
                      help="monitoring is unauthenticated: it binds to 127.0.0.1 unless "
                           "this says otherwise")
    init.add_argument("--no-tls", action="store_true",
                      help="drop the TLS settings kept in tycoon.toml (else a render that "
                           "would drop TLS is refused)")
    init.add_argument("--listen", default=None, metavar="HOST:PORT",
                      help="where the server listens (default: the market URL's first "
                           "host and port; kept in tycoon.toml)")
    init.add_argument("--cluster", default=None, metavar="NODE,NODE,...",
                      help="render one config per node, NODE = HOST[:PORT[:ROUTE_PORT]] "
                           "(ports default 4222 and 6222; kept in tycoon.toml)")
    init.add_argument("--cluster-ca", default=None, metavar="PEM",
                      help="CA of the nodes' certificates: with TLS on, routes between nodes "
                           "use TLS and verify each other against it (kept in tycoon.toml)")
    init.add_argument("--store-dir", default=None, metavar="DIR",
                      help="JetStream's directory on the server's machine (a cluster node "
                           "uses DIR/<node>; default <home>/jetstream; kept in tycoon.toml)")
    init.add_argument("--max-file-store", type=int, default=None, metavar="BYTES",
                      help="JetStream file store per node (default: sized from the streams)")
    init.add_argument("--rotate", action="store_true",
                      help="pin the local bank/operator keys although tycoon.toml pins others")
    init.add_argument("--dry-run", action="store_true",
                      help="show what the render would change and write nothing")
    init.add_argument("--user", action="append", default=[], metavar="NAME",
                      help="admit a principal of this machine: make key NAME here (if "
                           "new), list it in principals.conf, and reload a running server "
                           "(repeatable; another machine's key: tycoon admit)")
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


def show_diff(deployment: Deployment) -> int:
    """Print what a render of ``deployment`` would change in its server config(s)."""
    text = diff(deployment.home, render_all(deployment))
    print(f"changes:\n{text}" if text else "changes: none to the server config")
    return 0


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
    """Write the server config(s) of ``deployment`` (tycoon.natsrender): every key it
    names, principals.conf, the home's own CLI and viewer keys if it holds them; a server
    listening at ``url`` if given (``tycoon up``), else as tycoon.toml's ``[server]``
    says. Never makes a key (a missing one is ``unknown_account`` naming the fix).
    Returns the first config written."""
    if tls is not None:
        deployment.server.update(tls_cert=tls.cert_file, tls_key=tls.key_file,
                                 tls_ca=tls.ca_file or "")
    if http_port is not None:
        deployment.server["http_port"] = http_port
    rendered = render_all(deployment, url)
    paths = [write_config(deployment.home / name, text) for name, text in rendered.items()]
    return paths[0]


def render_all(deployment: Deployment, url: str = "") -> dict[str, str]:
    """What :func:`write_nats_config` writes, by file name (reads public keys only)."""
    extra = []
    # The web dashboard's read-only key and WebSocket listener (docs/dashboard.md).
    if deployment.store.exists(VIEWER_KEY):
        extra.append(viewer_principal(deployment.store.load(VIEWER_KEY).public_key))
    host, _ = listen_of(url or deployment.nats_url)
    ws_port = deployment.server.get("websocket_port")
    if url or not isinstance(ws_port, int):  # `tycoon up` picks a free one each start
        try:
            ws_port = websocket_port(deployment.home, host)
        except OSError:  # another machine's name (a cluster node): probe the port here
            ws_port = websocket_port(deployment.home, "0.0.0.0")
    if not url:  # a re-render must not move a listener: nats-server cannot reload that
        deployment.server["websocket_port"] = ws_port
    return render_deployment(deployment, url=url, extra_users=extra, websocket_port=ws_port)


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


def settings_from(args: argparse.Namespace, server: dict) -> dict:
    """tycoon.toml's ``[server]`` with the options given on this run applied."""
    out = dict(server)
    tls = tls_from(args)
    if tls is not None:
        out.update(tls_cert=tls.cert_file, tls_key=tls.key_file, tls_ca=tls.ca_file or "")
    elif args.no_tls:
        for name in ("tls_cert", "tls_key", "tls_ca"):
            out.pop(name, None)
    if args.http_port is not None:
        out["http_port"] = args.http_port or None
    if args.http_host is not None:
        out["http_host"] = args.http_host
    if args.listen is not None:
        listen_of(args.listen)  # refused before it is saved
        out["listen"] = args.listen
    if args.cluster is not None:
        out["cluster"] = [n.strip() for n in args.cluster.split(",") if n.strip()]
    if args.cluster_ca is not None:
        out["cluster_ca"] = args.cluster_ca
    if args.max_file_store is not None:
        out["max_file_store"] = args.max_file_store
    if args.store_dir is not None:
        out["store_dir"] = args.store_dir
    return ServerSettings.from_dict(out).to_dict()  # a bad value is refused here


def pin_check(deployment: Deployment, rotate: bool) -> list[str]:
    """Refuse a local bank/operator key that differs from the pinned one (unless
    ``rotate``: then pin the local one); warn of other stale local keys."""
    notes = []
    for name in deployment.stale_secrets():
        local = deployment.store.load(name).public_key
        if name in (deployment.bank_key, deployment.operator_key):
            if not rotate:
                raise Rejected("conflict", f"keys/{name}.nk is {local} but tycoon.toml pins "
                                           f"{deployment.pins[name]}: a change of the "
                                           f"{name} key needs --rotate")
            deployment.pins[name] = local
            notes.append(f"  rotated {name}: now pinned to {local}")
        else:
            notes.append(f"  note: keys/{name}.nk differs from the admitted {name} key; the "
                         "admitted (pinned) key is rendered")
    return notes


NO_KEYS = ("or, for a market on this one machine, `tycoon init --local` makes every key "
           "here")


def layout(args: argparse.Namespace, home: Path, existing: bool) -> Deployment:
    """The deployment to render: tycoon.toml's, or a new one (``--force``, a first init)."""
    if existing and not args.force:
        deployment = Deployment.load(home)
        print(f"{home / 'tycoon.toml'} exists (use --force to rewrite); rendering it")
    else:
        deployment = Deployment.default(home, args.hosts, args.agents, args.nats)
        if existing:  # --force: a new layout that keeps the pinned service keys and [server]
            old = Deployment.load(home)
            deployment.pins = {k: v for k, v in old.pins.items()
                               if k in (old.bank_key, old.operator_key, old.sls_key)}
            deployment.server = old.server
    if existing and args.nats_source == "--nats" and args.nats != deployment.nats_url:
        deployment.nats_url = args.nats  # an explicit --nats is the market's URL now
    if (args.hosts or args.agents) and not args.local:
        raise Rejected("malformed", "--hosts and --agents make keys here: add --local (a "
                                    "market on this one machine), or admit each machine's "
                                    "key with tycoon admit")
    return deployment


def cmd_init(args: argparse.Namespace) -> int:
    if getattr(args, "nats_error", None) is not None:
        raise args.nats_error  # a bad URL is refused before it is saved
    home = home_of(args)[0]
    existing = (home / "tycoon.toml").exists()
    if args.dry_run and (not existing or args.force):
        raise Rejected("malformed", "--dry-run shows what a re-render of an existing "
                                    "deployment changes, and makes no key")
    if args.dry_run and args.local:
        raise Rejected("malformed", "--dry-run makes no key: drop --local")
    try:
        deployment = layout(args, home, existing)
        notes = pin_check(deployment, args.rotate)
        deployment.server = settings_from(args, deployment.server)
        made = deployment.ensure_keys() if args.local else []  # the one step that makes keys
        rendered = render_all(deployment)  # every key known, before anything is written
    except Rejected as exc:
        if exc.code == "unknown_account" and not args.local:
            exc = Rejected(exc.code, f"{exc.message}; {NO_KEYS}")
        raise exc from None
    if args.dry_run:
        return show_diff(deployment)
    if existing and not args.no_tls:
        gone = drops_tls(home, rendered)
        if gone:
            raise Rejected("conflict", f"{', '.join(gone)} has TLS that this render would "
                                       "drop: give --tls-cert/--tls-key (kept in tycoon.toml "
                                       "from then on) or --no-tls")
    before = set(deployment.store.names())
    admitted = [name for name in args.user if admit(deployment, name, args.role)]
    made += [name for name in args.user if name not in before and name not in made]
    if existing:
        show_diff(deployment)
    conf = write_nats_config(deployment)
    path = deployment.save()  # after the render: it keeps what the render settled
    print(f"config: {path}")
    print(f"nats:   {conf} (one nkey per principal; start: nats-server -c {conf})")
    print(f"keys:   {deployment.store.keys_dir} (mode 0600)")
    for name in made:
        print(f"  made {name:<12} {deployment.public_key(name)}")
    if not made:
        print("  no key made (tycoon admit adds a principal's public key)")
    settings = ServerSettings.from_dict(deployment.server)
    if settings.cluster and settings.tls_cert and not settings.cluster_ca:
        notes.append("  note: routes between the nodes are plain TCP: --cluster-ca PEM (the CA "
                     "of the nodes' certificates) puts them on TLS")
    for note in notes:
        print(note)
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
