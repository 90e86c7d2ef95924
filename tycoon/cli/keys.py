"""``tycoon keys new|list|show``: the local key store."""

from __future__ import annotations

import argparse

from tycoon.bus.keys import subject_id
from tycoon.cli.common import fail, keystore, print_json


def register(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="manage identities in the key store")
    ops = keys.add_subparsers(dest="op", required=True)
    new = ops.add_parser("new", help="generate a new key pair")
    new.add_argument("name")
    new.set_defaults(func=cmd_new)
    lst = ops.add_parser("list", help="list stored keys")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)
    show = ops.add_parser("show", help="show a key's public key and ids")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)


def cmd_new(args: argparse.Namespace) -> int:
    store = keystore(args)
    try:
        if store.exists(args.name):
            return fail(f"key {args.name!r} already exists in {store.keys_dir}")
    except ValueError as error:
        return fail(str(error))
    ident = store.create(args.name)
    print(f"{args.name}\t{ident.public_key}\t{subject_id(ident.public_key)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = keystore(args)
    rows = [(n, store.load(n).public_key) for n in store.names()]
    if args.json:
        print_json([{"name": n, "public_key": k, "id": subject_id(k)} for n, k in rows])
    else:
        for name, key in rows:
            print(f"{name}\t{key}\t{subject_id(key)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = keystore(args)
    try:
        ident = store.load(args.name)
    except (FileNotFoundError, ValueError):
        return fail(f"no key {args.name!r} in {store.keys_dir} (tycoon keys list shows them)")
    info = {"name": args.name, "public_key": ident.public_key, "id": subject_id(ident.public_key)}
    if args.json:
        print_json(info)
    else:
        for k, v in info.items():
            print(f"{k}: {v}")
    return 0
