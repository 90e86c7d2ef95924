"""Chaos benchmark: a market of real processes SIGKILLed on a long seeded schedule.

    python benchmarks/chaos.py [--seed 1] [--agents 3] [--hosts 4] [--deadline 120]
                               [--kills 30] [--commit-kills 6] [--json]

The same run as ``tests/test_chaos.py`` (see ``tests/chaos_kit.py``) with a longer
schedule: bank, SLS, hosts, agents and nats-server are SIGKILLed at random, within 2 s of
each agent's deadline and right after agents' journal commits, and restarted after
0.5-3 s with the same command; a user pays random hosts all along. It reports the kills
survived, the money still outstanding at the end (goal 0: the run fails otherwise) and
the time from the last restart to all money home (0 when the money was home before the
last restart).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import emit_json, parser, table
from chaos_kit import ChaosConfig, run_chaos

from tycoon.log import configure_logging


def main() -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "chaos")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--agents", type=int, default=3)
    p.add_argument("--hosts", type=int, default=4)
    p.add_argument("--deadline", type=float, default=120.0, help="the last agent's, seconds")
    p.add_argument("--kills", type=int, default=30, help="random kills")
    p.add_argument("--commit-kills", type=int, default=6)
    p.add_argument("--grace", default="3m")
    args = p.parse_args()
    configure_logging("error")
    budgets = [50 * 2 ** n for n in range(args.agents)]
    deadlines = [args.deadline * (n + 1) / args.agents for n in range(args.agents)]
    config = ChaosConfig(
        seed=args.seed, hosts=args.hosts, agents=tuple(zip(budgets, deadlines, strict=True)),
        random_kills=args.kills, commit_kills=args.commit_kills, grace=args.grace,
        timeout_s=args.deadline + 600)
    with tempfile.TemporaryDirectory(prefix="tycoon-chaos-") as tmp:
        result = asyncio.run(run_chaos(config, Path(tmp)))
    table("kills survived", sorted(result["kills_by_target"].items()), ["target", "kills"])
    table("agents", [(n, a["budget"], a["spent"], a["bank"], a["held_at_hosts"],
                      a["pending_moves"], a["exit"]) for n, a in sorted(result["agents"].items())],
          ["agent", "budget µc", "charged µc", "bank µc", "at hosts", "pending", "exit"])
    table("chaos run", [(result["seed"], result["kills"], result["outstanding_uc"],
                         result["home_after_last_restart_s"], result["wall_s"])],
          ["seed", "kills", "outstanding µc", "home after last restart s", "wall s"])
    emit_json(result, args.json)
    return 0 if result["outstanding_uc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
