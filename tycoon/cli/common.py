"""Helpers shared by the command modules: one home, one URL, identity, output, connecting.

The CLI resolves where it talks and who it is in one order, everywhere: the NATS URL from
``--nats`` / ``$TYCOON_NATS``, then ``[market] nats_url`` of ``$TYCOON_HOME/tycoon.toml``,
then ``nats://127.0.0.1:4222``; keys from ``--home`` / ``$TYCOON_HOME``, then
``~/.config/tycoon``. ``tycoon status`` prints which source won.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tycoon.bus import subjects
from tycoon.bus.connection import Bus, open_bus
from tycoon.bus.keys import SUBJECT_ID, Identity, KeyStore, subject_id
from tycoon.errors import Rejected
from tycoon.money import format_credits

DEFAULT_URL = "nats://127.0.0.1:4222"
CONFIG_NAME = "tycoon.toml"
URL_SCHEMES = ("nats", "tls", "ws", "wss")


def home_of(args: argparse.Namespace) -> tuple[Path, str]:
    """The key store directory (absolute) and where it came from."""
    if getattr(args, "home", None):
        return Path(args.home).expanduser().absolute(), "--home"
    env = os.environ.get("TYCOON_HOME")
    if env:
        return Path(env).expanduser().absolute(), "TYCOON_HOME"
    return Path.home() / ".config" / "tycoon", "default"


def market_config(home: Path) -> dict[str, Any]:
    """``<home>/tycoon.toml`` as a dict ({} when absent or unreadable)."""
    try:
        return tomllib.loads((home / CONFIG_NAME).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def resolve_url(args: argparse.Namespace) -> tuple[str, str]:
    """The NATS URL and its source; ``Rejected`` for an empty or malformed one."""
    given, source = getattr(args, "nats", None), "--nats"
    if given is None and "TYCOON_NATS" in os.environ:
        given, source = os.environ["TYCOON_NATS"], "TYCOON_NATS"
    if given is None:
        home, _ = home_of(args)
        url = str(market_config(home).get("market", {}).get("nats_url", "") or "")
        if url:
            return url, str(home / CONFIG_NAME)
        return DEFAULT_URL, "default"
    if not given.strip():
        fix = "unset it" if source == "TYCOON_NATS" else "leave it out"
        raise Rejected("malformed", f"{source} is empty: give a URL such as {DEFAULT_URL}, "
                                    f"or {fix} to use $TYCOON_HOME/tycoon.toml")
    for one in given.split(","):
        parts = urlsplit(one.strip())
        try:
            port_ok = parts.port is None or 0 < parts.port < 65536
        except ValueError:
            port_ok = False
        if parts.scheme not in URL_SCHEMES or not parts.hostname or not port_ok:
            raise Rejected("malformed", f"{source} {one.strip()!r} is not a NATS URL "
                                        f"(e.g. {DEFAULT_URL})")
    return given.strip(), source


def keystore(args: argparse.Namespace) -> KeyStore:
    """The key store named by ``--home`` / ``$TYCOON_HOME``."""
    return KeyStore(home_of(args)[0])


def key_name(args: argparse.Namespace, name: str | None = None) -> str:
    """The name of the key that signs for this command."""
    return name or getattr(args, "as_name", None) or "default"


def identity(args: argparse.Namespace, name: str | None = None) -> Identity:
    """The identity that signs for this command (``--as NAME``).

    In a market's home (one with ``tycoon.toml``) an unknown name is refused: the server
    would not admit a key made on the spot, and a typo must not mint a new identity. In a
    bare key store (an open server, tests) the name is created on first use.
    """
    store, who = keystore(args), key_name(args, name)
    try:
        if store.exists(who):
            return store.load(who)
    except ValueError as exc:
        raise Rejected("malformed", str(exc)) from exc
    if (store.home / CONFIG_NAME).exists():
        raise Rejected("unknown_account", f"no key named {who!r} in {store.keys_dir}; "
                                          f"run: tycoon init --user {who}")
    return store.load_or_create(who)


def service_identity(args: argparse.Namespace, name: str, role: str) -> Identity:
    """The key a service (``bank``/``sls``/``auctioneer serve``) signs with. A service never
    makes its key: a key made on the spot is admitted nowhere (and a bank key made so
    would be one clients do not trust). Missing: ``unknown_account`` naming the two steps."""
    store = keystore(args)
    try:
        return store.load(name)
    except FileNotFoundError:
        raise Rejected("unknown_account", f"no key named {name!r} in {store.keys_dir} (a "
                                          "service never makes its key): on this machine run "
                                          f"`tycoon key show {name} --role {role} --create`, "
                                          "then on the operator box the line it prints: "
                                          f"tycoon admit {role} {name} PUBKEY") from None
    except ValueError as exc:
        raise Rejected("malformed", str(exc)) from exc


async def probe(url: str, ident: Identity, who: str, timeout: float = 2.0) -> None:
    """Say plainly why a connection cannot work: no server at ``url``, or a server that
    does not admit this key. A quick handshake of the NATS protocol (no reconnect loop,
    no log lines); TLS and WebSocket URLs are left to the client."""
    first = url.split(",")[0].strip()
    parts = urlsplit(first)
    if parts.scheme != "nats":
        return
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 4222), timeout)
    except (OSError, TimeoutError) as exc:
        reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else \
            (str(exc) or type(exc).__name__)
        raise Rejected("unavailable", f"no NATS server at {first} ({reason}): start one with "
                                      "`tycoon up`, or pass --nats URL") from exc
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line.startswith(b"INFO "):
            return
        info = json.loads(line[5:])
        if info.get("tls_required") or not info.get("nonce"):
            return
        signature = base64.urlsafe_b64encode(ident.sign(info["nonce"].encode()))
        connect = {"verbose": False, "pedantic": False, "protocol": 1, "lang": "python3",
                   "name": "tycoon-probe", "nkey": ident.public_key,
                   "sig": signature.rstrip(b"=").decode()}
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), timeout)
        if reply.startswith(b"-ERR") and b"uthori" in reply:
            raise Rejected("forbidden", f"the server at {first} does not admit key {who!r} "
                                        f"({ident.public_key[:10]}…); run: tycoon init --user "
                                        f"{who}")
    except (OSError, TimeoutError, ValueError):
        return  # the client proper reports anything else
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def bus_for(args: argparse.Namespace, name: str | None = None, *,
                  deadline: float = 5.0, connect_timeout: float = 2.0) -> Bus:
    """A connected bus for this command's identity and URL (see :func:`probe`)."""
    ident = identity(args, name)
    try:
        await probe(args.nats, ident, key_name(args, name))
    except Rejected as error:
        source = getattr(args, "nats_source", "")
        if error.code != "unavailable" or not source:
            raise
        # a stale TYCOON_NATS is the usual cause: say where the URL came from
        raise Rejected("unavailable", f"{error.message} [URL from {source}]") from error
    return await open_bus(args.nats, ident, name=f"tycoon-cli-{args.command}",
                          deadline=deadline, connect_timeout=connect_timeout)


def host_id_of(args: argparse.Namespace, text: str) -> str:
    """A host id given as is, or the id of the host key of that name in the key store."""
    store = keystore(args)
    with contextlib.suppress(FileNotFoundError, ValueError, OSError):
        return subject_id(store.load(text).public_key)
    if SUBJECT_ID.fullmatch(text):
        return subjects.token(text)
    raise Rejected("unknown_host", f"no host named {text} (tycoon hosts lists them)")


def names_of(store: KeyStore) -> dict[str, str]:
    """Every key in the store by public key and by id: the names people read for them."""
    names: dict[str, str] = {}
    for name in store.names():
        with contextlib.suppress(ValueError, OSError):
            key = store.load(name).public_key
            names[key] = names[subject_id(key)] = name
    return names


def who(names: dict[str, str], key: str) -> str:
    """``alice (UB6YFC3KX3…)`` for a known key, else the key shortened."""
    short = key[:10] + "…" if len(key) > 12 else key
    return f"{names[key]} ({short})" if key in names else short


def local_time(ts_ns: int) -> str:
    """Nanoseconds since the epoch as a local ISO time, to the second."""
    return datetime.datetime.fromtimestamp(ts_ns / 1e9).astimezone().isoformat(
        timespec="seconds")


def receipt_line(receipt: Any, names: dict[str, str]) -> str:
    """A receipt summarised: ``receipt 3f2a91c0… for 24.93 credits, alice → host-1``."""
    digest = hashlib.sha256(bytes(receipt.raw)).hexdigest()[:8]
    return (f"receipt {digest}… for {format_credits(receipt.amount)} credits, "
            f"{names.get(receipt.payer, receipt.payer[:10] + '…')} → "
            f"{names.get(receipt.payee, receipt.payee[:10] + '…')}")


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
