"""``tycoon-pub``: manual bids and funding from the shell, in the original Tycoon syntax.

    tycoon-pub bid HOST 1h cpu:1,0.1,1.0 memory:1,512MB,1GB
    tycoon-pub fund HOST 25
    tycoon-pub refund HOST
    tycoon-pub status HOST
    tycoon-pub settle          (redeem receipts no host redeemed yet, e.g. a host was down)
    tycoon-pub exec HOST -- CMD ARGS...   (run in your sandbox there; streams, exits with it)
    tycoon-pub exec HOST --bundle DIR --collect out --results got -- CMD ARGS...
    tycoon-pub push DIR|FILE              (upload a bundle to your bucket; prints its digest)
    tycoon-pub pull DIGEST DIR            (fetch a bundle or a job's results into DIR)
    tycoon-pub jobs HOST
    tycoon-pub signal HOST JOB SIG

It is ``tycoon host OP …`` under the name users of the original know: it prints the
auctioneer's signed reply, or its error code and message and exits non-zero on refusal.
Global options (``--nats``, ``--home``, ``--as``) may come first.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from tycoon.cli.main import build_parser
from tycoon.cli.main import main as tycoon_main

OPS = ("bid", "fund", "refund", "account", "status", "settle", "exec", "jobs", "signal", "push",
       "pull")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tycoon-pub`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    at = next((i for i, a in enumerate(args) if a in OPS), None)
    if at is None or args[0] in ("-h", "--help"):
        print(__doc__.strip() if __doc__ else "", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    if args[at] == "bid" and len(args) > at + 2 and re.match(r"^-\d", args[at + 2]):
        # argparse would take "-5h" for an option and blame `tycoon host bid`
        print(f"error: bad_bid: a bid lasts a positive time (30s, 2h, 1d), not {args[at + 2]!r}",
              file=sys.stderr)
        return 2
    return tycoon_main([*args[:at], "host", *args[at:]], parser=_pub_parser())


def _pub_parser() -> argparse.ArgumentParser:
    """``tycoon``'s parser with each ``host OP`` named ``tycoon-pub OP`` in usage and errors
    (argparse names a subcommand by its parents, which a tycoon-pub user never typed)."""
    parser = build_parser()
    for action in parser._actions:  # argparse has no public walk of its subcommands
        if isinstance(action, argparse._SubParsersAction) and "host" in action.choices:
            for inner in action.choices["host"]._actions:
                if isinstance(inner, argparse._SubParsersAction):
                    for name, op in inner.choices.items():
                        op.prog = f"tycoon-pub {name}"
    return parser


if __name__ == "__main__":
    sys.exit(main())
