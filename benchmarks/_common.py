"""Shared benchmark helpers: argument parsing, table printing, the JSON last line, services
started as child processes."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tycoon.supervisor import Child

ROOT = Path(__file__).resolve().parents[1]


async def serve(name: str, url: str, home: Path, *args: str) -> Child:
    """``tycoon <args>`` (a ``serve`` command) as a child process, ready once it says so
    (``--ready-fd``, as ``tycoon up`` starts it); its output goes to ``<home>/logs``."""
    child = Child(name, ["--nats", url, "--home", str(home), "--log-level", "error", *args],
                  home / "logs", {"PYTHONPATH": str(ROOT)})
    await child.start(notify=True)
    if not await child.ready(30):
        await child.stop(5)
        raise RuntimeError(f"{name} did not start:\n{child.tail(20)}")
    return child


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="end with one JSON object on a line")
    return p


def table(title: str, rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """Print an aligned plain-text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of ``samples``."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=1000, method="inclusive")[max(0, int(q * 10) - 1)]


def emit_json(result: dict[str, Any], enabled: bool) -> None:
    if enabled:
        print(json.dumps(result, sort_keys=True))
