"""Helpers shared by the command modules: key store, identity, output, async running."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tycoon.bus import subjects
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import Identity, KeyStore, subject_id
from tycoon.errors import Rejected


def keystore(args: argparse.Namespace) -> KeyStore:
    """The key store named by ``--home`` / ``$TYCOON_HOME``."""
    return KeyStore(Path(args.home) if getattr(args, "home", None) else None)


def identity(args: argparse.Namespace, name: str | None = None) -> Identity:
    """The identity that signs for this command (``--as NAME``, created on first use)."""
    return keystore(args).load_or_create(name or getattr(args, "as_name", None) or "default")


async def bus_for(args: argparse.Namespace, name: str | None = None) -> Bus:
    """A connected bus for this command's identity and ``--nats`` URL."""
    return await open_bus(
        args.nats, identity(args, name), name=f"tycoon-cli-{args.command}", deadline=5.0
    )


def host_id_of(args: argparse.Namespace, text: str) -> str:
    """A host id given as is, or the id of the host key of that name in the key store."""
    try:
        return subject_id(keystore(args).load(text).public_key)
    except (FileNotFoundError, ValueError, OSError):
        pass
    try:
        return subjects.token(text)
    except ValueError as exc:
        raise Rejected("unknown_host", f"{text!r} is neither a host id nor a key name") from exc


def print_json(obj: Any) -> None:
    """One JSON document on stdout (bytes shown as hex)."""
    print(json.dumps(obj, default=_default, sort_keys=True))


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if hasattr(value, "__dict__"):
        return vars(value)
    return str(value)


def fail(error: Rejected | str, code: int = 1) -> int:
    """Print a refusal on stderr and return the exit code."""
    if isinstance(error, Rejected):
        print(f"error: {error.code}: {error.message}", file=sys.stderr)
    else:
        print(f"error: {error}", file=sys.stderr)
    return code
