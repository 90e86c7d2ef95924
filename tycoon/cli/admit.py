"""``tycoon key show``, ``tycoon admit`` and ``tycoon revoke``: secret keys stay home.

A principal runs ``tycoon key show`` on its own machine: it prints the public key and the
one-line ``tycoon admit ROLE NAME PUBKEY`` to run on the operator box, which records the
public key (``tycoon.toml`` for the bank, operator and SLS keys, ``principals.conf`` for
everyone else), re-renders the server config and reloads a server ``tycoon up`` runs.
The bank and operator keys are pinned once: another key needs ``--rotate``.
See docs/operations.md ("Admitting a machine") and docs/security.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tycoon.bus.keys import KEY_NAME, KeyStore, is_public_key, subject_id
from tycoon.cli.common import home_of, keystore
from tycoon.cli.init import reload_server, show_diff, write_nats_config
from tycoon.deploy import Deployment
from tycoon.errors import Rejected
from tycoon.natsconf import PRINCIPALS_NAME, Principal, load_principals
from tycoon.natspolicy import CAPABILITIES, ROLES

PINNED_ROLES = ("bank", "operator", "sls")


def register(sub: argparse._SubParsersAction) -> None:
    key = sub.add_parser("key", help="this machine's key: its public half, to be admitted")
    ops = key.add_subparsers(dest="op", required=True)
    show = ops.add_parser("show", help="print a key's public key and the admit command "
                                       "for the operator box (never the secret)")
    show.add_argument("name", nargs="?", default=None, help="key name (default: --as)")
    show.add_argument("--role", default="agent", choices=ROLES,
                      help="the role to write into the admit command")
    show.add_argument("--create", action="store_true", help="make the key if it is missing")
    show.set_defaults(func=cmd_key_show)
    trust = ops.add_parser("trust", help="record another machine's PUBLIC key under a name "
                                         "(<home>/NAME.pub), e.g. the bank's on a host")
    trust.add_argument("name")
    trust.add_argument("public_key")
    trust.set_defaults(func=cmd_key_trust)
    admit = sub.add_parser("admit", help="let a public key in (on the operator box)")
    admit.add_argument("role", choices=ROLES)
    admit.add_argument("name")
    admit.add_argument("public_key")
    admit.add_argument("--cap", action="append", default=[], choices=sorted(CAPABILITIES),
                       help="an extra capability (repeatable), e.g. monitor")
    admit.add_argument("--rotate", action="store_true",
                       help="replace the key already admitted under this name")
    admit.set_defaults(func=cmd_admit)
    revoke = sub.add_parser("revoke", help="shut a principal out (on the operator box)")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_revoke)


def cmd_key_show(args: argparse.Namespace) -> int:
    store, name = keystore(args), args.name or args.as_name
    if not store.exists(name):
        if not args.create:
            raise Rejected("unknown_account", f"no key {name!r} in {store.keys_dir}: make it "
                                              f"here with `tycoon key show {name} --create`")
        store.create(name)
    public = store.load(name).public_key
    print(f"name: {name}\npublic_key: {public}\nid: {subject_id(public)}")
    print(f"on the operator box run:\n  tycoon admit {args.role} {name} {public}")
    return 0


def cmd_key_trust(args: argparse.Namespace) -> int:
    home = home_of(args)[0]
    if not is_public_key(args.public_key):
        raise Rejected("malformed", f"{args.public_key!r} is not a user public nkey (U...)")
    path = home / f"{keystore(args)._path(args.name).stem}.pub"  # the name's own checks
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(args.public_key + "\n")
    print(f"{args.name} is {args.public_key} here ({path})")
    return 0


def known_public_key(home: Path, text: str) -> str | None:
    """``text`` if it is a public key, else the PUBLIC key known here under that name:
    tycoon.toml's pins, principals.conf, ``<home>/NAME.pub``, then the local key store.
    Never makes a key; None if nothing is known."""
    if is_public_key(text):
        return text
    if (home / "tycoon.toml").exists():
        pinned = Deployment.load(home).pins.get(text)
        if pinned:
            return pinned
    for p in load_principals(home / PRINCIPALS_NAME):
        if p.name == text:
            return p.public_key
    store = KeyStore(home)
    try:
        pub = home / f"{store._path(text).stem}.pub"
        if pub.exists() and is_public_key(pub.read_text().strip()):
            return pub.read_text().strip()
        return store.load(text).public_key if store.exists(text) else None
    except ValueError:  # not a valid key name
        return None


NAME_RE = KEY_NAME
"""An admitted name: a key name's characters. principals.conf is split on whitespace, so a
name with a space, ``+``, ``#`` or a newline would add a capability, a comment or a whole
principal (tests/test_redteam_deploy.py)."""


def cmd_admit(args: argparse.Namespace) -> int:
    if not NAME_RE.fullmatch(args.name):
        raise Rejected("malformed", f"bad name {args.name[:80]!r}: 1-64 letters, digits, "
                                    "'_', '.', '-' (starting with a letter or digit)")
    deployment = _deployment(args)
    if not is_public_key(args.public_key):
        raise Rejected("malformed", f"{args.public_key!r} is not a user public nkey (U...): "
                                    "copy it from `tycoon key show` on the principal's machine")
    slot = {"bank": deployment.bank_key, "operator": deployment.operator_key,
            "sls": deployment.sls_key}.get(args.role)
    path = deployment.home / PRINCIPALS_NAME
    before = path.read_text() if path.exists() else None
    try:
        if (args.role in PINNED_ROLES and args.name == slot) or _is_spec(deployment, args.name):
            _pin(deployment, args.name, args.public_key, args.role, args.rotate)
        else:
            _list(path, Principal(args.public_key, args.role, args.name, frozenset(args.cap)),
                  args.rotate)
        return _render(deployment, f"admitted {args.name} as {args.role}: {args.public_key}")
    except BaseException:  # e.g. the key is another principal's: leave no line that would
        if before is None:  # make every later render fail
            path.unlink(missing_ok=True)
        else:
            path.write_text(before)
        raise


def cmd_revoke(args: argparse.Namespace) -> int:
    deployment = _deployment(args)
    if args.name in (deployment.bank_key, deployment.operator_key, deployment.sls_key):
        raise Rejected("conflict", f"{args.name!r} is a service key: admit its successor with "
                                   f"`tycoon admit ROLE {args.name} PUBKEY --rotate` instead")
    path = deployment.home / PRINCIPALS_NAME
    listed = any(p.name == args.name for p in load_principals(path))
    if listed:
        kept = [line for line in path.read_text().splitlines(keepends=True)
                if not _names(line, args.name)]
        path.write_text("".join(kept))
    before = len(deployment.hosts) + len(deployment.agents)
    deployment.hosts = [h for h in deployment.hosts if h.key != args.name]
    deployment.agents = [a for a in deployment.agents if a.key != args.name]
    if not listed and before == len(deployment.hosts) + len(deployment.agents):
        raise Rejected("unknown_account", f"no principal named {args.name!r} is admitted")
    deployment.pins.pop(args.name, None)
    return _render(deployment, f"revoked {args.name}")


def _deployment(args: argparse.Namespace) -> Deployment:
    """The operator box's deployment; a new one (no keys made) on a fresh home, so the
    bank's and SLS's keys can be admitted before the first render."""
    home = home_of(args)[0]
    if not (home / "tycoon.toml").exists():
        return Deployment(home, nats_url=args.nats if args.nats_source != "default" else "")
    return Deployment.load(home)


def _is_spec(deployment: Deployment, name: str) -> bool:
    return any(s.key == name for s in [*deployment.hosts, *deployment.agents])


def _pin(deployment: Deployment, name: str, public: str, role: str, rotate: bool) -> None:
    old = deployment.pins.get(name)
    if old and old != public and not rotate and role in ("bank", "operator", "host", "agent"):
        raise Rejected("conflict", f"{name} is pinned to {old}; replacing it needs --rotate")
    deployment.pins[name] = public


def _list(path: Path, principal: Principal, rotate: bool) -> None:
    listed = load_principals(path)
    same = [p for p in listed if p.name == principal.name]
    if any(p.public_key == principal.public_key and p.name != principal.name for p in listed):
        raise Rejected("conflict", f"{principal.public_key} is already admitted under "
                                   "another name")
    if same and not rotate:
        if same[0] == principal:
            return
        raise Rejected("conflict", f"{principal.name} is already admitted as "
                                   f"{same[0].role} {same[0].public_key}; replacing it needs "
                                   "--rotate")
    lines = [line for line in (path.read_text().splitlines(keepends=True)
                               if path.exists() else []) if not _names(line, principal.name)]
    caps = f" +{','.join(sorted(principal.capabilities))}" if principal.capabilities else ""
    lines.append(f"{principal.role:<9} {principal.public_key}  {principal.name}{caps}\n")
    path.write_text("".join(lines))


def _names(line: str, name: str) -> bool:
    words = line.split("#", 1)[0].split()
    return name in [w for w in words[2:] if not w.startswith("+")]


def _render(deployment: Deployment, what: str) -> int:
    try:
        show_diff(deployment)
    except Rejected as exc:  # a key still to admit: record this one, render later
        if exc.code != "unknown_account":
            raise
        deployment.save()
        print(f"{what}\n  recorded in {deployment.config_path}; not rendered yet: {exc.message}")
        return 0
    deployment.save()
    conf = write_nats_config(deployment)
    print(f"{what}\nnats:   {conf}")
    if reload_server(deployment.home):
        print("  reloaded the running nats-server (tycoon up)")
    else:
        print(f"  no tycoon up runs here: reload your nats-server (kill -HUP) with {conf.parent}"
              "/nats*.conf (each node's file on that node)")
    return 0
