"""``tycoon web``: the live market in a browser (docs/dashboard.md).

Serves a static page on localhost; the browser connects straight to nats-server's
WebSocket listener as the home's read-only ``viewer`` and verifies every envelope's
signature itself, so neither this server nor the NATS relay can make it show a price a
host did not sign. The page's price history comes from ``/history``: this process, under
the deployment's operator key (which may send ``sls.history`` and read PRICES; the page
never sees it), fetches each host's stored envelopes and hands them over unchanged for the
browser to verify (tycoon.web.history).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from tycoon.bus.keys import subject_id
from tycoon.cli.common import home_of, names_of
from tycoon.deploy import Deployment
from tycoon.errors import Rejected
from tycoon.money import parse_amount
from tycoon.web.config import VIEWER_KEY, websocket_url
from tycoon.web.history import HistorySource
from tycoon.web.server import DashboardServer, PageConfig


def register(sub: argparse._SubParsersAction) -> None:
    web = sub.add_parser("web", help="serve the live market dashboard on localhost")
    web.add_argument("--port", type=int, default=0, help="HTTP port (0: any free port)")
    web.add_argument("--bind", default="127.0.0.1",
                     help="HTTP address (the page hands out the viewer's seed: keep it local)")
    web.add_argument("--ws-url", default=None,
                     help="nats-server's WebSocket URL (default: from <home>/nats.conf)")
    web.add_argument("--history-key", default=None, metavar="NAME",
                     help="the key (in the store) that fetches price history for the page: "
                          "one that may send sls.history (default: the operator's)")
    web.add_argument("--no-history", action="store_true",
                     help="draw live data only (fetch no price history)")
    web.set_defaults(func=cmd_web)


def page_config(deployment: Deployment, ws_url: str | None = None) -> PageConfig:
    """What the page is told: where to connect, as whom, the bank's key, names, budgets."""
    url = ws_url or websocket_url(deployment.home)
    if url is None:
        raise RuntimeError(f"no websocket listener in {deployment.home / 'nats.conf'}: run "
                           "`tycoon init --force` (or `tycoon up`) to write one")
    if not deployment.store.exists(VIEWER_KEY):  # starting the page never makes a key
        raise RuntimeError(f"no key named {VIEWER_KEY!r} in {deployment.store.keys_dir}: run "
                           f"`tycoon key show {VIEWER_KEY} --role viewer --create`, then "
                           f"`tycoon init` (it admits the viewer key it finds)")
    viewer = deployment.store.load(VIEWER_KEY)
    names = {k: v for k, v in names_of(deployment.store).items() if len(k) == 56}
    budgets = {}
    for spec in deployment.agents:
        with contextlib.suppress(ValueError, OSError):
            budgets[deployment.public_key(spec.key)] = parse_amount(spec.budget)
    hosts = []  # the page fetches these hosts' history first (others when they speak)
    for h in deployment.hosts:
        with contextlib.suppress(Rejected):
            hosts.append(subject_id(deployment.public_key(h.key)))
    return PageConfig(ws_url=url, viewer_seed=viewer.seed,
                      bank_key=deployment.public_key(deployment.bank_key),
                      names=names, budgets=budgets, hosts=hosts)


def dashboard(deployment: Deployment, bind: str, port: int, *, ws_url: str | None = None,
              nats_url: str | None = None, history_key: str | None = None,
              history: bool = True) -> DashboardServer:
    """The dashboard's server (not started), with ``/history`` fetched from ``nats_url``
    (default: the deployment's) under ``history_key`` (default: the operator key, which
    may send ``sls.history`` and read PRICES); without that key's seed, live data only."""
    config = page_config(deployment, ws_url)
    url = nats_url or deployment.nats_url
    try:
        identity = deployment.store.load(history_key or deployment.operator_key)
    except (OSError, ValueError) as error:
        if history_key:
            raise RuntimeError(f"cannot load the history key {history_key!r}: {error}") from error
        identity = None  # no operator seed here: the page draws live data only
    if not url or not history or identity is None:
        return DashboardServer(config, bind, port)
    source = HistorySource(url, identity)
    try:
        return DashboardServer(config, bind, port, history=source.fetch, on_stop=source.close)
    except OSError:
        source.close()
        raise


async def cmd_web(args: argparse.Namespace) -> int:
    home, _ = home_of(args)
    if not (home / "tycoon.toml").exists():
        print(f"error: no deployment in {home} (tycoon init, or tycoon up --state DIR)")
        return 1
    try:
        server = dashboard(Deployment.load(home), args.bind, args.port, ws_url=args.ws_url,
                           nats_url=getattr(args, "nats", None),
                           history_key=args.history_key, history=not args.no_history).start()
    except (RuntimeError, OSError) as error:
        print(f"error: {error}")
        return 1
    print(f"dashboard at {server.url} (NATS WebSocket {server.config.ws_url}; price history "
          f"{'on' if server.history else 'off'}); Ctrl-C stops it", flush=True)
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        pass
    finally:
        server.stop()
    return 0
