"""Scrape targets of a ``tycoon up``: its metrics ports, as a Prometheus ``file_sd`` file.

``tycoon up`` gives every child a ``--metrics-port`` and writes
``<state>/prometheus/targets.json``; a Prometheus with ``file_sd_configs`` on that file
scrapes the whole market (deploy/prometheus/prometheus.yml shows how).
"""

from __future__ import annotations

import json
from pathlib import Path

from tycoon.natsserver import free_port

TARGETS = Path("prometheus") / "targets.json"


def metrics_port(children: dict[str, tuple[str, int]]) -> int:
    """A free TCP port not already given to another child."""
    taken = {port for _, port in children.values()}
    while True:
        port = free_port()
        if port not in taken:
            return port


def write_targets(state: Path, children: dict[str, tuple[str, int]],
                  host: str = "127.0.0.1") -> Path:
    """Write ``<state>/prometheus/targets.json`` from ``{child name: (job, port)}`` (one
    group per child; labels ``job``: bank, sls, auctioneer or agent, and ``child``)."""
    groups = [{"targets": [f"{host}:{port}"], "labels": {"job": job, "child": name}}
              for name, (job, port) in sorted(children.items())]
    path = state / TARGETS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups, indent=1) + "\n")
    tmp.replace(path)  # Prometheus re-reads the file: never show it half written
    return path


def summary(children: dict[str, tuple[str, int]]) -> str:
    """One line: each child's metrics port."""
    return ", ".join(f"{name} :{port}" for name, (_, port) in children.items())
