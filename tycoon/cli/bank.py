"""``tycoon bank``: serve the bank, use it (open, mint, transfer, balance, history, close),
print its key and audit its database. Amounts on the command line are decimal credits."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from tycoon.bank.audit import audit
from tycoon.bank.client import BankClient
from tycoon.bank.launch import Guard
from tycoon.bank.launch import launch as launch_bank
from tycoon.bank.ledger import Ledger
from tycoon.bank.receipt import Receipt
from tycoon.bank.service import OPEN_BURST, OPEN_RATE
from tycoon.bank.sqlite_store import SqliteStore, StoreLocked
from tycoon.bus import ratelimit
from tycoon.bus.connection import Bus
from tycoon.bus.keys import is_public_key
from tycoon.bus.ratelimit import rate_limit_arg
from tycoon.cli.bankpaths import (
    bank_key_name,
    db_path,
    home_dir,
    load_deployment,
    operator_key,
)
from tycoon.cli.common import (
    bus_for,
    fail,
    keystore,
    local_time,
    market_config,
    names_of,
    print_json,
    receipt_line,
    service_identity,
    who,
)
from tycoon.cli.serving import serve_until_signal
from tycoon.cli.verifylog import add_verify_log
from tycoon.errors import Rejected
from tycoon.log import get_logger
from tycoon.messages.bank import BankCloseReply, BankEntry, BankMintReply, BankOpenReply
from tycoon.metrics.server import add_arguments as add_metrics_arguments
from tycoon.money import format_amount, format_credits, parse_amount
from tycoon.streams.settlements import SettlementLog, sqlite_source
from tycoon.supervisor import add_ready_argument

PUB_NAME = "bank.pub"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``tycoon bank …``."""
    bank = sub.add_parser("bank", help="the bank: accounts, transfers, receipts, audit")
    cmds = bank.add_subparsers(dest="bank_command", metavar="OP", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument("--bank", default=None,
                        help="the bank's public key or key name (env TYCOON_BANK; default: "
                             "tycoon.toml, <home>/bank.pub, then the key named 'bank')")

    serve = cmds.add_parser("serve", help="run the bank service")
    _db_options(serve)
    who = serve.add_mutually_exclusive_group()
    who.add_argument("--operator", help="public key (U…) allowed to mint")
    who.add_argument("--operator-key",
                     help="the operator's public key or a name whose PUBLIC key is known here "
                          "(tycoon.toml, principals.conf, <home>/NAME.pub; never needs its "
                          "secret)")
    serve.add_argument("--bank-key", default=None, help="name of the bank's key (default 'bank')")
    serve.add_argument("--max-batch", type=int, default=2048, help="operations per commit")
    serve.add_argument("--no-settlement-log", action="store_true",
                       help="do not copy receipts to the JetStream SETTLEMENTS stream")
    serve.add_argument("--open-fee", default="0",
                       help="credits a sponsor pays to open an account (default 0: free)")
    serve.add_argument("--open-rate", type=float, default=OPEN_RATE,
                       help="accounts opened per second, all keys together (0: no limit)")
    serve.add_argument("--open-burst", type=int, default=OPEN_BURST,
                       help="accounts opened at once before --open-rate applies")
    serve.add_argument("--rate-limit", type=rate_limit_arg(ratelimit.BANK),
                       default=ratelimit.BANK, help="requests/s per signer key, "
                       "RATE[/BURST] or 'off' (default 400/2000; the operator is exempt)")
    add_metrics_arguments(serve)
    add_ready_argument(serve)
    serve.set_defaults(func=cmd_serve)

    key = cmds.add_parser("key", help="print the bank's public key")
    key.add_argument("--bank-key", default=None, help="name of the bank's key (default 'bank')")
    key.add_argument("--create", action="store_true",
                     help="make the bank's key here if missing (on the bank's machine only)")
    key.set_defaults(func=cmd_key)

    opener = cmds.add_parser("open", parents=[common], help="open the account of --as KEY")
    opener.add_argument("--name", default=None, help="display name")
    opener.add_argument("--for", dest="account", default=None,
                        help="open this key's account as its sponsor (public key or key name)")
    opener.set_defaults(func=cmd_open)

    mint = cmds.add_parser("mint", parents=[common], help="create money (operator key only)")
    mint.add_argument("account", help="public key or key name")
    mint.add_argument("amount", help="credits, e.g. 12.5")
    mint.add_argument("--id", default=None, help="mint id (retry with the same id)")
    mint.add_argument("--memo", default="")
    mint.set_defaults(func=cmd_mint)

    pay = cmds.add_parser("transfer", parents=[common], help="pay another account")
    pay.add_argument("payee", help="public key or key name")
    pay.add_argument("amount", help="credits, e.g. 12.5")
    pay.add_argument("--id", default=None, help="transfer id (retry with the same id)")
    pay.add_argument("--memo", default="")
    pay.add_argument("--receipt", type=Path, default=None, help="write the raw receipt here")
    pay.set_defaults(func=cmd_transfer)

    bal = cmds.add_parser("balance", parents=[common], help="an account's balance")
    bal.add_argument("account", nargs="?", default=None, help="default: your own")
    bal.set_defaults(func=cmd_balance)

    hist = cmds.add_parser("history", parents=[common], help="an account's history")
    hist.add_argument("account", nargs="?", default=None, help="default: your own")
    hist.add_argument("--offset", type=int, default=0)
    hist.add_argument("--limit", type=int, default=100)
    hist.set_defaults(func=cmd_history)

    close = cmds.add_parser("close", parents=[common], help="close your (empty) account")
    close.add_argument("--for", dest="account", default=None,
                       help="the operator, in maintenance: re-enter the lost close of this "
                            "(empty) account (public key or key name)")
    close.set_defaults(func=cmd_close)

    aud = cmds.add_parser("audit", help="check conservation and that history replays")
    _db_options(aud)
    aud.add_argument("--json", action="store_true", help="print one JSON object")
    aud.set_defaults(func=cmd_audit)
    add_verify_log(cmds, _db_options)


def _db_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", type=Path, default=None, help="the bank's SQLite file")
    where.add_argument("--state", type=Path, default=None, help="state dir: uses DIR/bank.db")


def resolve_account(args: argparse.Namespace, text: str) -> str:
    """A public key as given, or the public key of the named key in the key store."""
    from tycoon.cli.admit import known_public_key

    found = known_public_key(keystore(args).home, text)
    if found is None:
        raise Rejected("unknown_account", f"{text!r} is neither a public key nor a name whose "
                                          f"public key is known here: run `tycoon key trust "
                                          f"{text} PUBKEY` (PUBKEY from `tycoon key show` on "
                                          "its machine)")
    return found


def resolve_bank_key(args: argparse.Namespace) -> str:
    """Where a client learns the bank's public key (never from the wire)."""
    given = getattr(args, "bank", None) or os.environ.get("TYCOON_BANK")
    if given:
        return resolve_account(args, given)
    listed = str(market_config(home_dir(args)).get("bank", {}).get("public_key", ""))
    if is_public_key(listed):  # a user's home may hold tycoon.toml without the bank's seed
        return listed
    deployment = load_deployment(args)
    if deployment is not None:
        try:
            return deployment.public_key(deployment.bank_key)
        except (FileNotFoundError, Rejected):
            pass
    pub = home_dir(args) / PUB_NAME
    if pub.exists():
        text = pub.read_text().strip()
        if is_public_key(text):
            return text
    if keystore(args).exists("bank"):
        return keystore(args).load("bank").public_key
    raise Rejected("unknown_account", "the bank's public key is unknown: pass --bank KEY or "
                                      "set TYCOON_BANK")





def restore_guard(path: Path) -> Guard:
    """Before serving: re-enter what SETTLEMENTS holds past a restored ledger; the reason
    for maintenance if an event with no receipt is missing first (tycoon.cli.bankguard)."""

    async def guard(ledger: Ledger, bus: Bus) -> str | None:
        from tycoon.cli.bankguard import behind_message, log_seq, reenter_from_log

        js = bus.nc.jetstream(timeout=10.0)
        logged = await log_seq(js, ledger.bank.public_key)
        if logged is None or logged <= ledger.seq:
            return None
        entered, stopped = await reenter_from_log(ledger, js)
        get_logger("bank").warning("restored ledger behind SETTLEMENTS", re_entered=entered,
                                   seq=ledger.seq, log_seq=logged)
        print(f"re-entered {entered} transfers from SETTLEMENTS; seq {ledger.seq}", flush=True)
        if stopped is None:
            return None
        maintenance = behind_message(ledger.seq, logged, str(path), stopped)
        print(maintenance, file=sys.stderr, flush=True)
        return maintenance

    return guard


async def cmd_serve(args: argparse.Namespace) -> int:
    """Run the bank until SIGTERM/SIGINT (requests in flight are answered first)."""
    operator = operator_key(args)
    bank = service_identity(args, bank_key_name(args), "bank")
    path = db_path(args)
    journal = not args.no_settlement_log  # a restored backup must not reuse its seqs
    async with contextlib.AsyncExitStack() as stack:
        try:
            running = await stack.enter_async_context(launch_bank(
                args.nats, bank, db=path, operator=operator, max_batch=args.max_batch,
                settlement_log=(lambda bus: SettlementLog(
                    bus.nc, bank.public_key, sqlite_source(path))) if journal else None,
                guard=restore_guard(path) if journal else None,
                open_fee=parse_amount(args.open_fee) if args.open_fee != "0" else 0,
                open_rate=args.open_rate, open_burst=args.open_burst,
                rate_limit=args.rate_limit))  # bundles: `tycoon store serve`
        except (StoreLocked, ValueError) as error:  # another bank holds it, or owns it
            return fail(str(error))
        pub = home_dir(args) / PUB_NAME
        pub.parent.mkdir(parents=True, exist_ok=True)
        pub.write_text(bank.public_key + "\n")
        ledger = running.ledger
        get_logger("bank").info("bank ready", bank=bank.public_key, operator=operator,
                                db=str(path), seq=ledger.seq, accounts=len(ledger.accounts))
        await serve_until_signal(
            args, f"bank {bank.public_key} {'in MAINTENANCE' if running.maintenance else 'ready'}"
                  f": db {path}, seq {ledger.seq}", running.service)
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    """Print the bank's public key: the local bank key's, else the one known here
    (tycoon.toml, bank.pub); ``--create`` makes it on the bank's machine. Never mints a
    key a client would then trust on a machine that is not the bank's."""
    store, name = keystore(args), bank_key_name(args)
    if store.exists(name) or args.create:
        print(store.load_or_create(name).public_key)
        return 0
    try:
        print(resolve_bank_key(args))
    except Rejected as exc:
        raise Rejected("unknown_account", "the bank's public key is unknown here: on the "
                                          "bank's machine run `tycoon bank key --create`; "
                                          "here `tycoon key trust bank PUBKEY`") from exc
    return 0


async def _with_client(args: argparse.Namespace, action: Any) -> int:
    bank_key = resolve_bank_key(args)
    bus = await bus_for(args)
    try:
        return int(await action(BankClient(bus, bank_key)))
    finally:
        await bus.close()


def _out(args: argparse.Namespace, obj: dict[str, Any], text: str) -> int:
    if args.json:
        print_json(obj)
    else:
        print(text)
    return 0


async def cmd_open(args: argparse.Namespace) -> int:
    async def act(c: BankClient) -> int:
        account = resolve_account(args, args.account) if args.account else None
        reply = await c.open(args.name, account=account)
        opened = BankOpenReply.from_body(reply)
        return _out(args, reply, "opened the account of "
                                 f"{who(names_of(keystore(args)), opened.account)}")
    return await _with_client(args, act)


async def cmd_mint(args: argparse.Namespace) -> int:
    account, amount = resolve_account(args, args.account), parse_amount(args.amount)

    async def act(c: BankClient) -> int:
        reply = await c.mint(account, amount, args.id, memo=args.memo)
        minted = BankMintReply.from_body(reply)
        return _out(args, reply, f"minted {format_credits(amount)} credits into "
                                 f"{who(names_of(keystore(args)), account)} "
                                 f"(mint id {minted.mint_id}, seq {minted.seq})")
    return await _with_client(args, act)


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    """A receipt's fields, with the raw signed bytes in hex."""
    return {**receipt.to_body(), "receipt": receipt.raw.hex()}


async def cmd_transfer(args: argparse.Namespace) -> int:
    payee, amount = resolve_account(args, args.payee), parse_amount(args.amount)

    async def act(c: BankClient) -> int:
        receipt = await c.transfer(payee, amount, transfer_id=args.id, memo=args.memo)
        if args.receipt is not None:
            args.receipt.write_bytes(receipt.raw)
        return _out(args, receipt_json(receipt),
                    f"paid {format_credits(amount)} credits to "
                    f"{who(names_of(keystore(args)), payee)}: "
                    f"{receipt_line(receipt, names_of(keystore(args)))} (verified; transfer id "
                    f"{receipt.transfer_id}, seq {receipt.seq})")
    return await _with_client(args, act)


async def cmd_balance(args: argparse.Namespace) -> int:
    account = resolve_account(args, args.account) if args.account else None

    async def act(c: BankClient) -> int:
        balance = await c.balance(account)
        owner = account or c.account
        return _out(args, {"account": owner, "balance": balance}, format_credits(balance))
    return await _with_client(args, act)


async def cmd_history(args: argparse.Namespace) -> int:
    account = resolve_account(args, args.account) if args.account else None

    async def act(c: BankClient) -> int:
        entries = await c.history(args.offset, args.limit, account=account)
        if args.json:
            print_json({"account": account or c.account, "offset": args.offset,
                        "entries": entries})
            return 0
        names = names_of(keystore(args))
        for e in map(BankEntry.from_body, entries):
            amount = format_credits(e.amount) if e.amount else ""
            other = names.get(e.counterparty, e.counterparty[:12])
            print(f"{e.seq:>8} {local_time(e.ts_ns):<25} {e.kind:<8} {amount:>14} {other:<14} "
                  f"{e.id[:32]:<32} {e.memo}")
        return 0
    return await _with_client(args, act)


async def cmd_close(args: argparse.Namespace) -> int:
    account = resolve_account(args, args.account) if args.account else None

    async def act(c: BankClient) -> int:
        reply = await c.close(account)
        return _out(args, reply, f"closed account {BankCloseReply.from_body(reply).account}")
    return await _with_client(args, act)


def cmd_audit(args: argparse.Namespace) -> int:
    """Replay the ledger read-only; exit 0 when every invariant holds, else 1."""
    path = db_path(args)
    try:
        store = SqliteStore(path, readonly=True)
    except FileNotFoundError as error:
        return fail(str(error))
    try:
        report = audit(store)
    finally:
        store.close()
    if args.json:
        print_json({"db": str(path), **report.to_dict()})
    else:
        print(f"{path}: {report.events} events, {report.transfers} transfers, "
              f"{report.accounts} accounts")
        print(f"Σ balances {format_amount(report.total_balances)}, "
              f"Σ minted {format_amount(report.total_minted)}")
        for problem in report.problems:
            print(f"PROBLEM: {problem}")
        print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1
