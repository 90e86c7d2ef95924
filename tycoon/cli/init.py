"""``tycoon init``: create the key store and the config of a deployment."""

from __future__ import annotations

import argparse
from pathlib import Path

from tycoon.bus.keys import default_home
from tycoon.deploy import Deployment


def register(sub: argparse._SubParsersAction) -> None:
    init = sub.add_parser("init", help="create keys and a config for a deployment")
    init.add_argument("--hosts", type=int, default=0, help="also make this many host keys")
    init.add_argument("--agents", type=int, default=0, help="also make this many agent keys")
    init.add_argument("--force", action="store_true", help="rewrite an existing config")
    init.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else default_home()
    existing = (home / "tycoon.toml").exists()
    if existing and not args.force:
        deployment = Deployment.load(home)
        print(f"{home / 'tycoon.toml'} exists (use --force to rewrite); checking its keys")
    else:
        deployment = Deployment.default(home, args.hosts, args.agents, args.nats)
    made = deployment.ensure_keys()
    path = deployment.save()
    print(f"config: {path}")
    print(f"keys:   {deployment.store.keys_dir} (mode 0600)")
    for name in made:
        print(f"  made {name:<12} {deployment.public_key(name)}")
    if not made:
        print("  every key already existed")
    return 0
