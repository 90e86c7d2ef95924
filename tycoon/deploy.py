"""A deployment: which keys play which role, where state lives, how the market is laid out.

``tycoon init`` writes it (``<home>/tycoon.toml`` plus the keys); ``tycoon up`` reads it.
The file is TOML so an operator can read and edit it; only this module writes it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tycoon.bus.keys import KeyStore, subject_id
from tycoon.errors import Rejected

CONFIG_NAME = "tycoon.toml"
HOST_PRESETS = ("small", "medium", "large", "tiny")
LOCAL_KEYS = ("default", "viewer")
"""The home's own keys a market on one machine also needs: the CLI's and the dashboard's."""


@dataclass(frozen=True)
class HostSpec:
    key: str
    preset: str = "medium"
    driver: str = "simulated"


@dataclass(frozen=True)
class AgentSpec:
    key: str
    budget: str = "100"
    deadline: str = "2h"


@dataclass
class Deployment:
    """Everything ``tycoon up`` needs to start a market from a state directory."""

    home: Path
    nats_url: str = ""
    bank_key: str = "bank"
    operator_key: str = "operator"
    sls_key: str = "sls"
    hosts: list[HostSpec] = field(default_factory=list)
    agents: list[AgentSpec] = field(default_factory=list)
    pins: dict[str, str] = field(default_factory=dict)
    """Public keys by name as tycoon.toml lists them: they win over the local key store, so
    a key whose secret lives on another machine renders without its seed (``tycoon admit``)."""
    server: dict[str, Any] = field(default_factory=dict)
    """The ``[server]`` section: what every render of nats.conf needs (tycoon.natsconf)."""

    def __post_init__(self) -> None:
        # Paths written into configs (nats.conf's store_dir, the bank's db) must not depend
        # on the directory a command ran in: a server reload refuses a changed store_dir.
        self.home = Path(self.home).expanduser().absolute()

    @property
    def store(self) -> KeyStore:
        return KeyStore(self.home)

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_NAME

    def public_key(self, key: str) -> str:
        """The pinned public key of ``key``, else the local key store's; never makes one."""
        if key in self.pins:
            return self.pins[key]
        if self.store.exists(key):
            return self.store.load(key).public_key
        role = {self.bank_key: "bank", self.operator_key: "operator", self.sls_key: "sls",
                **{h.key: "host" for h in self.hosts}}.get(key, "agent")
        raise Rejected("unknown_account", f"no public key for {key!r}: run `tycoon key show "
                                          f"{key} --role {role}` on its machine, then here the "
                                          f"command it prints: tycoon admit {role} {key} PUBKEY")

    def stale_secrets(self) -> list[str]:
        """Names whose local secret key differs from the public key tycoon.toml pins."""
        return [n for n, pk in self.pins.items()
                if self.store.exists(n) and self.store.load(n).public_key != pk]

    def ensure_keys(self, local: tuple[str, ...] = LOCAL_KEYS) -> list[str]:
        """Create every key this deployment names (and ``local``) that has no public key
        yet; return those made. Only the explicit single-machine steps call this
        (``tycoon init --local``, ``tycoon up``): a render never makes a key."""
        made = []
        names = [self.bank_key, self.operator_key, self.sls_key, *local]
        names += [h.key for h in self.hosts] + [a.key for a in self.agents]
        for name in names:
            if name not in self.pins and not self.store.exists(name):
                self.store.create(name)
                made.append(name)
        return made

    def save(self) -> Path:
        """Write ``tycoon.toml``; its public keys are what renders use (they pin the keys).
        A service key not admitted yet is written without one."""
        lines = ["# Written by `tycoon init` / `tycoon up`. Seeds live in keys/ (mode 0600).", ""]
        lines += ["[market]", f"nats_url = {_q(self.nats_url)}", ""]
        for role, key in (("bank", self.bank_key), ("operator", self.operator_key),
                          ("sls", self.sls_key)):
            known = self.pins.get(key) or (self.store.exists(key) and self.public_key(key))
            lines += [f"[{role}]", f"key = {_q(key)}",
                      *([f"public_key = {_q(known)}"] if known else []), ""]
        for h in self.hosts:
            pk = self.public_key(h.key)
            lines += ["[[hosts]]", f"key = {_q(h.key)}", f"preset = {_q(h.preset)}",
                      f"driver = {_q(h.driver)}", f"public_key = {_q(pk)}",
                      f"id = {_q(subject_id(pk))}", ""]
        for a in self.agents:
            lines += ["[[agents]]", f"key = {_q(a.key)}", f"budget = {_q(a.budget)}",
                      f"deadline = {_q(a.deadline)}", f"public_key = {_q(self.public_key(a.key))}",
                      ""]
        if self.server:
            lines += ["[server]", *(f"{k} = {_value(v)}" for k, v in sorted(self.server.items())
                                    if v is not None), ""]
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(lines))
        return self.config_path

    @classmethod
    def load(cls, home: Path) -> Deployment:
        """Read ``<home>/tycoon.toml``."""
        data: dict[str, Any] = tomllib.loads((home / CONFIG_NAME).read_text())
        pins = {str(s["key"]): str(s["public_key"])
                for s in [*(data.get(r, {}) for r in ("bank", "operator", "sls")),
                          *data.get("hosts", []), *data.get("agents", [])]
                if s.get("key") and s.get("public_key")}
        return cls(
            home=home,
            nats_url=str(data.get("market", {}).get("nats_url", "")),
            bank_key=str(data.get("bank", {}).get("key", "bank")),
            operator_key=str(data.get("operator", {}).get("key", "operator")),
            sls_key=str(data.get("sls", {}).get("key", "sls")),
            hosts=[HostSpec(str(h["key"]), str(h.get("preset", "medium")),
                            str(h.get("driver", "simulated"))) for h in data.get("hosts", [])],
            agents=[AgentSpec(str(a["key"]), str(a.get("budget", "100")),
                              str(a.get("deadline", "2h"))) for a in data.get("agents", [])],
            pins=pins,
            server=dict(data.get("server", {})),
        )

    @classmethod
    def default(cls, home: Path, hosts: int, agents: int, nats_url: str = "") -> Deployment:
        """Hosts of varied sizes and agents with budgets 1:2:4:… and staggered deadlines."""
        return cls(
            home=home,
            nats_url=nats_url,
            hosts=[HostSpec(f"host-{i + 1}", HOST_PRESETS[i % len(HOST_PRESETS)])
                   for i in range(hosts)],
            agents=[AgentSpec(f"agent-{i + 1}", str(50 * 2**i), f"{10 + 5 * i}m")
                    for i in range(agents)],
        )


def _value(v: Any) -> str:
    """A TOML value: string, integer, boolean or a list of strings."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_q(str(x)) for x in v) + "]"
    return _q(str(v))


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
