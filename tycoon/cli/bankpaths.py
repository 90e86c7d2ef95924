"""Where ``tycoon bank …`` finds its files and keys: the home, ``tycoon.toml``, ``bank.db``,
the bank key's name and the operator's public key, from the command line's arguments.

Shared by :mod:`tycoon.cli.bank` and :mod:`tycoon.cli.verifylog` (which ``bank`` registers).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tycoon.bus.keys import default_home, is_public_key
from tycoon.cli.common import keystore
from tycoon.deploy import CONFIG_NAME, Deployment
from tycoon.errors import Rejected

DB_NAME = "bank.db"


def home_dir(args: argparse.Namespace) -> Path:
    """``--home``, else the default key home."""
    return Path(args.home) if getattr(args, "home", None) else default_home()


def load_deployment(args: argparse.Namespace) -> Deployment | None:
    """The home's ``tycoon.toml``, if it has one."""
    home = home_dir(args)
    return Deployment.load(home) if (home / CONFIG_NAME).exists() else None


def db_path(args: argparse.Namespace) -> Path:
    """``--db``, else ``--state``/bank.db, else ``<home>/bank.db``."""
    if args.db is not None:
        return Path(args.db)
    return (Path(args.state) if args.state is not None else home_dir(args)) / DB_NAME


def bank_key_name(args: argparse.Namespace) -> str:
    """``--bank-key``, else the deployment's bank key name, else ``bank``."""
    if args.bank_key:
        return str(args.bank_key)
    deployment = load_deployment(args)
    return deployment.bank_key if deployment else "bank"


def operator_key(args: argparse.Namespace) -> str:
    """The operator's public key: ``--operator``, else that of ``--operator-key`` (or the
    deployment's operator name) as known in the key store."""
    if args.operator:
        if not is_public_key(args.operator):
            raise Rejected("malformed", "--operator must be a public key (U…)")
        return str(args.operator)
    deployment = load_deployment(args)
    name = args.operator_key or (deployment.operator_key if deployment else "operator")
    from tycoon.cli.admit import known_public_key  # lazy, as in cli/bank.py

    found = known_public_key(keystore(args).home, name)
    if found is None:
        raise Rejected("unknown_account", f"no public key known for operator {name!r}: pass "
                                          f"--operator PUBKEY, or run `tycoon key trust {name} "
                                          "PUBKEY` here first")
    return found
