"""The ``tycoon`` command: one console script, a subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Sequence

from tycoon import __version__
from tycoon.errors import Rejected
from tycoon.log import configure_logging

# Each module defines register(subparsers); subcommands set func=callable(args) -> int.
COMMAND_MODULES: tuple[str, ...] = (
    "best_response",
    "sim",
    "keys",
    "demo",
    "tap",
    "top",
    "status",
    "init",
    "agent",
    "up",
    "run",
    "bank",
    "sls",
    "auctioneer",
    "history",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every command module registered."""
    parser = argparse.ArgumentParser(
        prog="tycoon", description="A market for a cluster's resources."
    )
    parser.add_argument("--version", action="version", version=f"tycoon {__version__}")
    parser.add_argument(
        "--nats",
        default=os.environ.get("TYCOON_NATS", "nats://127.0.0.1:4222"),
        help="NATS URL (env TYCOON_NATS)",
    )
    parser.add_argument("--home", default=None, help="key store directory (env TYCOON_HOME)")
    parser.add_argument(
        "--as", dest="as_name", default=os.environ.get("TYCOON_KEY", "default"),
        help="name of the key that signs (env TYCOON_KEY)",
    )
    parser.add_argument("--log-level", default=os.environ.get("TYCOON_LOG", "warning"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"tycoon.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tycoon`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        result = args.func(args)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    except Rejected as error:
        print(f"error: {error.code}: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
