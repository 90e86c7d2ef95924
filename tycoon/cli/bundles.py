"""``tycoon-pub push DIR|FILE`` and ``tycoon-pub pull DIGEST DIR`` (``tycoon host push|pull``):
bundles in your own object-store bucket (docs/jobs.md, "Bundles")."""

from __future__ import annotations

import argparse
from pathlib import Path

from tycoon.bundles.client import pull, push
from tycoon.cli.common import bus_for, print_json
from tycoon.errors import Rejected


def register(ops: argparse._SubParsersAction) -> None:
    """Add ``push`` and ``pull`` to ``tycoon host`` (they name no host)."""
    up = ops.add_parser("push", help="upload DIR|FILE as a bundle to your bucket; prints "
                                     "its SHA-256 digest (for exec --bundle)")
    up.add_argument("path", type=Path)
    up.add_argument("--json", action="store_true", help="print one JSON object")
    up.set_defaults(func=cmd_push)
    down = ops.add_parser("pull", help="fetch bundle DIGEST from your bucket and unpack it "
                                       "into DIR (e.g. the results of exec --collect)")
    down.add_argument("digest")
    down.add_argument("dest", type=Path)
    down.add_argument("--json", action="store_true", help="print one JSON object")
    down.set_defaults(func=cmd_pull)


async def cmd_push(args: argparse.Namespace) -> int:
    if not args.path.exists():
        raise Rejected("malformed", f"{args.path}: no such file or directory")
    bus = await bus_for(args)
    try:
        digest = await push(bus, args.path)
    finally:
        await bus.close()
    print_json({"digest": digest, "path": str(args.path)}) if args.json else print(digest)
    return 0


async def cmd_pull(args: argparse.Namespace) -> int:
    bus = await bus_for(args)
    try:
        dest = await pull(bus, args.digest, args.dest)
    finally:
        await bus.close()
    print_json({"digest": args.digest, "dest": str(dest)}) if args.json else print(dest)
    return 0


async def bundle_of(args: argparse.Namespace, bus: object) -> str | None:
    """``exec --bundle DIGEST|PATH``: an existing path is pushed first; None without it."""
    value = getattr(args, "bundle", None)
    if not value:
        return None
    if Path(value).exists():
        return await push(bus, Path(value))
    return str(value)
