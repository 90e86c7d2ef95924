"""PNG plots of simulator runs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tycoon.sim.dynamic import Run
from tycoon.sim.equilibrium import Equilibrium


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path


def plot_equilibrium(eq: Equilibrium, directory: Path) -> list[Path]:
    """Prices of the first hosts per round, and the largest bid move per round."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    if eq.prices:
        prices = np.array(eq.prices)[:, :8]
        rounds = np.arange(1, prices.shape[0] + 1)
        for j in range(prices.shape[1]):
            top.plot(rounds, prices[:, j], label=f"host {j}")
        top.legend(fontsize=7, ncol=4)
    top.set_ylabel("price (Σ bids)")
    top.set_title("Best-response dynamics: prices per round")
    bottom.semilogy(np.arange(1, len(eq.history) + 1), np.maximum(eq.history, 1e-300))
    bottom.set_xlabel("round")
    bottom.set_ylabel("largest relative bid move")
    return [_save(fig, directory, "equilibrium.png")]


def plot_dynamic(runs: dict[str, Run], directory: Path) -> list[Path]:
    """Market prices over time; cluster shares of the first jobs under both policies."""
    plt = _pyplot()
    paths = []
    market = runs.get("market")
    if market is not None and market.prices.size:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for j in range(market.prices.shape[1]):
            ax.plot(market.times, market.prices[:, j], lw=0.8, label=f"host {j}")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("price (Σ bid rates)")
        ax.set_title("Market prices over time")
        ax.legend(fontsize=7, ncol=4)
        paths.append(_save(fig, directory, "prices.png"))
    fig, axes = plt.subplots(1, len(runs), figsize=(7, 3.5), sharey=True, squeeze=False)
    for ax, (name, run) in zip(axes[0], runs.items(), strict=True):
        for i in range(run.tracked.shape[1] if run.tracked.ndim == 2 else 0):
            ax.plot(run.times, run.tracked[:, i], lw=1.0, label=f"job {i}")
        ax.set_title(name)
        ax.set_xlabel("time (s)")
    axes[0][0].set_ylabel("share of the cluster")
    if any(ax.get_lines() for ax in axes[0]):
        axes[0][-1].legend(fontsize=7, ncol=2, title="tracked jobs", title_fontsize=7)
    span = runs[next(iter(runs))].tracked
    if span.size and np.isfinite(span).any():
        rows = np.nonzero(np.isfinite(span).any(axis=1))[0]
        times = runs[next(iter(runs))].times
        for ax in axes[0]:
            ax.set_xlim(times[rows[0]] - 5, times[rows[-1]] + 5)
    paths.append(_save(fig, directory, "shares.png"))
    return paths


def plot_sweep(result: dict[str, Any], directory: Path) -> list[Path]:
    """Efficiency and fairness (equilibrium sweep) or completion (dynamic sweep) against load."""
    plt = _pyplot()
    rows = result["rows"]
    if result["mode"] == "sweep-equilibrium":
        x = [r["users"] for r in rows]
        panels = [
            ("efficiency", "efficiency"),
            ("min_envy_ratio", "min envy ratio"),
            ("uniformity", "utility uniformity"),
        ]
        xlabel = f"users (on {result['hosts']} hosts)"
        names = [("market", "market (equilibrium)"), ("proportional_share", "proportional share")]
    else:
        x = [r["load"] for r in rows]
        panels = [
            ("value_weighted_completion", "value-weighted completion"),
            ("deadline_hits", "deadline hits"),
            ("utilization", "utilization"),
        ]
        xlabel = "offered load"
        names = [("market", "market"), ("proportional", "proportional share")]
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 3.3))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for name, legend in names:
            ax.plot(x, [r.get(f"{name}.{key}", np.nan) for r in rows], marker="o", label=legend)
        if key == "min_envy_ratio":
            ax.axhline(2 * np.sqrt(2) - 2, color="grey", ls="--", lw=0.8, label="0.828 bound")
        ax.set_xlabel(xlabel)
        ax.set_title(label)
    axes[0].legend(fontsize=7)
    return [_save(fig, directory, "load.png")]


def plot_strategic(rows: list[dict[str, Any]], data: dict[str, Any], path: Path) -> Path:
    """Gain per credit of each strategy (bars, log scale) and resource-seconds against spend.

    ``path`` is a PNG file, or a directory to write ``strategic.png`` into.
    """
    from tycoon.sim.strategic import LIMIT, honest_curve

    plt = _pyplot()
    if path.suffix.lower() != ".png":
        path = path / "strategic.png"
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(12, 4.8))
    names = [r["name"] for r in rows]
    gains = [r["gain"] if r["gain"] is not None else np.inf for r in rows]
    shown = [min(max(g, 1e-3), 1e12) for g in gains]
    colours = ["tab:red" if r["ahead"] else "tab:green" for r in rows]
    bars.bar(range(len(rows)), shown, color=colours)
    bars.set_yscale("log")
    bars.set_ylim(min(0.1, min(shown, default=1.0) / 2), max(10.0, max(shown, default=1.0) * 2))
    bars.axhline(1.0, color="black", lw=0.8, label="honest bidder (1.0)")
    bars.axhline(LIMIT, color="tab:red", ls="--", lw=0.8, label=f"limit ({LIMIT:g})")
    from matplotlib.patches import Patch

    handles = bars.get_legend_handles_labels()[0] + [
        Patch(color="tab:red", label=f"ahead (gain > {LIMIT:g})"),
        Patch(color="tab:green", label="not ahead"),
    ]
    bars.set_xticks(range(len(rows)), names, rotation=35, ha="right", fontsize=8)
    bars.set_ylabel("resource-seconds per credit / honest's")
    bars.set_title("Gain over an honest bidder spending the same")
    bars.legend(handles=handles, fontsize=7)
    spends = [s for s, _ in data["honest"]] + [r["spent"] / 1e6 for r in rows]
    grid = np.linspace(0.0, max(max(spends, default=1.0), 1e-6) * 1.05, 200)
    curves.plot(grid, honest_curve(data, grid), color="black", lw=2,
                label="honest constant rate (theory)")  # fmt: skip
    if data["honest"]:
        hs, hr = zip(*data["honest"], strict=True)
        curves.plot(hs, hr, "ko", ms=4, label="honest bidder (simulated)")
    for i, (name, trace) in enumerate(data["traces"].items()):
        if trace:
            _, spent, received = zip(*trace, strict=True)
            style = ("-", "--", ":")[i // 10 % 3]  # the colour cycle has 10 colours
            curves.plot(spent, received, lw=1.0, ls=style, label=name)
    curves.set_xlabel("credits spent")
    curves.set_ylabel("resource-seconds received (cpu + memory)")
    curves.set_title("Over the run (above the black curve = ahead)")
    curves.legend(fontsize=6, ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
