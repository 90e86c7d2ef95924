"""Service config files: ``tycoon --config bank.toml bank serve``.

A config file is flat TOML whose keys are the long options of the command it runs (and the
global ones), spelled with ``_`` or ``-``: ``nats``, ``home``, ``as``, ``log_level``,
``db``, ``operator_key``, ``driver``, ``cgroup_root``, ... plus ``log_file`` (JSON log lines
to a size-rotated file, as ``TYCOON_LOG_FILE``), ``tls_ca`` (the servers' CA, as
``SSL_CERT_FILE``) and ``tls_cert``/``tls_key`` (the client certificate a server that
verifies its clients asks for, as ``TYCOON_TLS_CERT``/``TYCOON_TLS_KEY``). Precedence:
the command line, then the file, then the environment, then the defaults. An unknown key
is refused, naming the options it could be, so a typo never passes silently.
Samples: ``deploy/*.toml``.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from tycoon.errors import Rejected

EXTRA_KEYS = ("log_file", "tls_ca", "tls_cert", "tls_key")
"""Keys that are not options: applied by :func:`apply_config`'s caller (``log_file`` as
``TYCOON_LOG_FILE``; ``tls_ca``, the CA that signed the NATS servers' certificates, as
``SSL_CERT_FILE``, which Python's default TLS context trusts; ``tls_cert``/``tls_key`` as
``TYCOON_TLS_CERT``/``TYCOON_TLS_KEY``, tycoon.bus.tls)."""


def load_config(path: str | Path) -> dict[str, Any]:
    """The file's keys (``-`` read as ``_``); ``Rejected(malformed)`` if it is not TOML."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise Rejected("malformed", f"config {path}: {exc}") from exc
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise Rejected("malformed", f"config {path}: flat keys only (found tables "
                                    f"{', '.join(nested)})")
    return {k.replace("-", "_"): v for k, v in data.items()}


def options_of(parser: argparse.ArgumentParser, args: argparse.Namespace
               ) -> dict[str, argparse.Action]:
    """The long options of the command ``args`` selected (global ones included), by name."""
    out: dict[str, argparse.Action] = {}
    current: argparse.ArgumentParser | None = parser
    while current is not None:
        nxt = None
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = getattr(args, action.dest, None)
                nxt = action.choices.get(chosen) if isinstance(chosen, str) else None
                if nxt is None:  # the dest was reused by an argument of the command
                    nxt = next((p for p in action.choices.values()
                                if _leads_to(p, getattr(args, "func", None))), None)
            for opt in action.option_strings:
                if opt.startswith("--") and action.dest != "help":
                    out[opt[2:].replace("-", "_")] = action
        current = nxt
    return out


def _leads_to(parser: argparse.ArgumentParser, func: Any) -> bool:
    """Whether ``parser`` or one of its subcommands runs ``func``."""
    if func is not None and parser._defaults.get("func") is func:
        return True
    return any(_leads_to(p, func) for a in parser._actions
               if isinstance(a, argparse._SubParsersAction) for p in a.choices.values())


def apply_config(parser: argparse.ArgumentParser, args: argparse.Namespace,
                 config: dict[str, Any], source: str) -> dict[str, Any]:
    """Set each option of ``config`` that the command line left at its default; return
    the keys that are not options (:data:`EXTRA_KEYS`)."""
    options = options_of(parser, args)
    extra = {k: v for k, v in config.items() if k in EXTRA_KEYS}
    for key, value in config.items():
        if key in EXTRA_KEYS or key == "config":
            continue
        action = options.get(key)
        if action is None:
            raise Rejected("malformed", f"{source}: {key!r} is not an option of this command "
                                        f"(one of: {', '.join(sorted(options))})")
        if getattr(args, action.dest, None) != action.default:
            continue  # given on the command line: it wins
        setattr(args, action.dest, _convert(action, value, f"{source}: {key}"))
    return extra


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise Rejected("malformed", f"{where} must be true or false")
        return value
    if isinstance(action, argparse._AppendAction):
        return [str(v) for v in (value if isinstance(value, list) else [value])]
    if isinstance(value, bool | list | dict):
        raise Rejected("malformed", f"{where}: expected a string or a number")
    try:
        out = action.type(str(value)) if callable(action.type) else str(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        raise Rejected("malformed", f"{where}: {exc}") from exc
    if action.choices is not None and out not in action.choices:
        raise Rejected("malformed", f"{where}: {out!r} is not one of "
                                    f"{', '.join(map(str, action.choices))}")
    return out
