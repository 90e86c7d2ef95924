"""The ``tycoon`` command: one console script, a subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import Sequence

from tycoon import __version__
from tycoon.cli.common import resolve_url
from tycoon.cli.examples import EXAMPLES
from tycoon.config import apply_config, load_config
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
    "admit",
    "agent",
    "up",
    "run",
    "bank",
    "sls",
    "store",
    "auctioneer",
    "history",
    "web",
)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
OFFLINE = {"best-response", "sim", "keys", "demo", "init", "up", "run", "key", "admit",
           "revoke", "web"}
"""Commands that never connect with the global URL (an empty one is not their concern)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; a default shown where there is one and the help does not
    already say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = (None, False, argparse.SUPPRESS, [], "")
        if action.default in quiet or "default" in text or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every command module registered."""
    parser = argparse.ArgumentParser(
        prog="tycoon", description="A market for a cluster's resources.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tycoon {__version__}")
    parser.add_argument(
        "--nats", default=None,
        help="NATS URL (env TYCOON_NATS; default: [market] nats_url of "
             "$TYCOON_HOME/tycoon.toml, then nats://127.0.0.1:4222)",
    )
    parser.add_argument("--home", default=None,
                        help="key store directory (env TYCOON_HOME; default ~/.config/tycoon)")
    parser.add_argument(
        "--as", dest="as_name", default=os.environ.get("TYCOON_KEY", "default"),
        help="name of the key that signs (env TYCOON_KEY)",
    )
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="options from a TOML file (keys: the long options, e.g. db, "
                             "operator_key, log_file; see deploy/); the command line wins")
    parser.add_argument("--log-level", default=os.environ.get("TYCOON_LOG", "").lower() or None,
                        type=str.lower, choices=LOG_LEVELS,
                        help="env TYCOON_LOG (default: warning for services, error for the "
                             "commands a person runs)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"tycoon.cli.{name}").register(sub)
    _decorate(parser, "")
    return parser


def _decorate(parser: argparse.ArgumentParser, path: str) -> None:
    """Every (sub)command: defaults shown, and its examples as the epilog."""
    parser.formatter_class = HelpFormatter
    if path in EXAMPLES and not parser.epilog:
        parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[path])
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                _decorate(child, f"{path} {name}".strip())


def split_config(argv: list[str]) -> tuple[list[str], str | None]:
    """``--config FILE`` taken out wherever it stands (``tycoon bank serve --config
    bank.toml`` as well as ``tycoon --config bank.toml bank serve``)."""
    for i, word in enumerate(argv):
        if word == "--":
            break
        if word == "--config" and i + 1 < len(argv):
            return argv[:i] + argv[i + 2:], argv[i + 1]
        if word.startswith("--config="):
            return argv[:i] + argv[i + 1:], word.split("=", 1)[1]
    return argv, None


def main(argv: Sequence[str] | None = None,
         parser: argparse.ArgumentParser | None = None) -> int:
    """Entry point of the ``tycoon`` console script (``parser``: one built by
    :func:`build_parser` and adapted, as ``tycoon-pub`` does)."""
    parser = parser or build_parser()
    if os.environ.get("TYCOON_LOG") and os.environ["TYCOON_LOG"].lower() not in LOG_LEVELS:
        print(f"error: TYCOON_LOG={os.environ['TYCOON_LOG']!r} is not a log level "
              f"({', '.join(LOG_LEVELS)})", file=sys.stderr)
        return 2
    argv, config = split_config(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    args.config = config or args.config
    if args.config:
        try:
            extra = apply_config(parser, args, load_config(args.config), args.config)
        except Rejected as error:
            print(f"error: {error.message}", file=sys.stderr)
            return 2
        if extra.get("log_file"):
            os.environ["TYCOON_LOG_FILE"] = str(extra["log_file"])
        if extra.get("tls_ca"):  # the NATS servers' CA (docs/operations.md, step 5)
            os.environ["SSL_CERT_FILE"] = str(extra["tls_ca"])
        for key, env in (("tls_cert", "TYCOON_TLS_CERT"), ("tls_key", "TYCOON_TLS_KEY")):
            if extra.get(key):  # a client certificate (mutual TLS: tycoon.bus.tls)
                os.environ[env] = str(extra[key])
    if args.log_level is None:  # a service logs its warnings; a command speaks for itself
        serves = getattr(args.func, "__name__", "") == "cmd_serve"
        args.log_level = "warning" if serves else "error"
    configure_logging(args.log_level)
    try:
        args.nats, args.nats_source = resolve_url(args)
    except Rejected as error:
        if args.command not in OFFLINE:
            print(f"error: {error.message}", file=sys.stderr)
            return 2
        args.nats, args.nats_source = "", "none"
        args.nats_error = error  # `tycoon init` refuses to save a bad URL
    try:
        result = args.func(args)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    except Rejected as error:
        print(f"error: {error.code}: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `tycoon … | head`: the reader has what it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (OSError, ValueError) as error:  # one line, not a traceback
        if args.log_level == "debug":
            raise
        print(f"error: {type(error).__name__}: {error} (--log-level debug shows where)",
              file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
