"""``tycoon store serve``: the bundle store (docs/jobs.md, "Bundles"; docs/operations.md).

It serves ``bundle.put`` / ``bundle.get`` on ``tycoon.bundle.<op>`` (queue group
``bundles``) and is the only key with JetStream rights on the per-account buckets (role
``store``). Its key is admitted like the others (``tycoon key show store --role store
--create`` here, ``tycoon admit store store PUBKEY`` on the operator box)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tycoon.bundles.buckets import MAKE_BURST, MAKE_RATE, MAX_BUCKETS
from tycoon.bundles.client import BUCKET_BYTES
from tycoon.bundles.launch import launch as launch_store
from tycoon.bundles.service import RATE
from tycoon.bus.ratelimit import rate_limit_arg
from tycoon.cli.common import home_of, key_name, service_identity
from tycoon.cli.serving import serve_until_signal
from tycoon.log import get_logger
from tycoon.supervisor import add_ready_argument

DB_NAME = "store.db"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``tycoon store …``."""
    store = sub.add_parser("store", help="the bundle store: code and results of jobs")
    ops = store.add_subparsers(dest="store_command", metavar="OP", required=True)
    serve = ops.add_parser("serve", help="serve bundle.put / bundle.get (queue 'bundles')")
    where = serve.add_mutually_exclusive_group()
    where.add_argument("--db", type=Path, default=None,
                       help="the store's SQLite file (proof budgets, buckets made)")
    where.add_argument("--state", type=Path, default=None,
                       help=f"state dir: uses DIR/{DB_NAME} (default: the key home)")
    serve.add_argument("--store-key", default=None,
                       help="name of the store's key (default: --as, else 'store')")
    serve.add_argument("--bucket-bytes", type=int, default=BUCKET_BYTES,
                       help="size limit of each account's bucket, made at its first push "
                            "(0: make none, serve those that exist)")
    serve.add_argument("--max-buckets", type=int, default=MAX_BUCKETS,
                       help="buckets this store makes at most (size the disk for "
                            "max-buckets × bucket-bytes)")
    serve.add_argument("--bucket-rate", type=float, default=MAKE_RATE,
                       help="buckets made per second, all keys together (0: no limit)")
    serve.add_argument("--bucket-burst", type=int, default=MAKE_BURST,
                       help="buckets made at once before --bucket-rate applies")
    serve.add_argument("--replicas", type=int, default=1, help="JetStream replicas of a bucket")
    serve.add_argument("--rate-limit", type=rate_limit_arg(RATE), default=RATE,
                       help="chunks/s per signer key, RATE[/BURST] or 'off' (default 400/800)")
    add_ready_argument(serve)
    serve.set_defaults(func=cmd_serve)


def db_of(args: argparse.Namespace) -> Path:
    if args.db is not None:
        return Path(args.db)
    return Path(args.state or home_of(args)[0]) / DB_NAME


async def cmd_serve(args: argparse.Namespace) -> int:
    """Run the store until SIGTERM/SIGINT."""
    given = getattr(args, "as_name", None)
    name = args.store_key or (given if given and given != "default" else "store")
    me = service_identity(args, key_name(args, name), "store")
    path = db_of(args)
    async with launch_store(args.nats, me, db=path, bucket_bytes=args.bucket_bytes,
                            replicas=args.replicas, max_buckets=args.max_buckets,
                            make_rate=args.bucket_rate, make_burst=args.bucket_burst,
                            rate_limit=args.rate_limit):
        get_logger("store").info("store ready", store=me.public_key, db=str(path),
                                 bucket_bytes=args.bucket_bytes)
        await serve_until_signal(args, f"store {me.public_key} ready: db {path}, buckets of "
                                       f"{args.bucket_bytes} bytes; Ctrl-C stops")
    return 0
