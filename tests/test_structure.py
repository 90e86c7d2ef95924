"""The package's structure: no import cycles between modules or between packages, and one
verification path (only tycoon/bus opens envelopes or checks signatures).

The graph is built from the source with ``ast`` (nothing is imported):

- Every ``import``/``from … import`` of a ``tycoon`` module is an edge, wherever it stands:
  at module level, inside ``try``/``if``, and inside functions (a lazy import only hides a
  cycle, it does not remove it).
- ``if TYPE_CHECKING:`` imports count between packages (a package's annotations name only
  packages it may import) but not between modules of one package, where a helper split off
  for length may name its caller's class (``auctioneer/lifecycle.py`` takes the ``Market``).
- ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
  Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` too; those implicit edges to
  parent packages are not counted (a package's ``__init__`` may import its own submodules).
- A package is ``tycoon.<name>`` (``tycoon/vmm/xen`` is part of ``tycoon.vmm``); top-level
  modules (``tycoon/errors.py``, ``tycoon/units.py``, …) are each their own node.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "tycoon"

Edge = tuple[str, str, bool]
"""(importer, imported, under TYPE_CHECKING)"""


def modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (path, is a package ``__init__``)."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt], typing_only: bool = False,
             ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, typing_only
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from _imports(node.body, True)
            yield from _imports(node.orelse, typing_only)
            continue
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, field, None)
            if isinstance(inner, list):
                yield from _imports(inner, typing_only)


def edges(mods: dict[str, tuple[Path, bool]]) -> list[Edge]:
    """Every import of one ``tycoon`` module by another."""
    out: list[Edge] = []
    for name, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, typing_only in _imports(tree.body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_pkg else name.split(".")[:-1]
                    here = here[: len(here) - node.level + 1]
                    base = ".".join(here + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            out += [(name, t, typing_only) for t in targets if t in mods and t != name]
    return out


def package(module: str) -> str:
    """``tycoon.<name>`` for a module of a sub-package; a top-level module is its own node."""
    return ".".join(module.split(".")[:2])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def module_graph(all_edges: list[Edge]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for a, b, typing_only in all_edges:
        if not (typing_only and package(a) == package(b)):
            graph.setdefault(a, set()).add(b)
    return graph


def package_graph(all_edges: list[Edge]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for a, b, _ in all_edges:
        if package(a) != package(b) and package(b) != "tycoon":
            graph.setdefault(package(a), set()).add(package(b))
    return graph


def explain(component: list[str], all_edges: list[Edge], key: Callable[[str], str]) -> str:
    members = set(component)
    links = sorted({f"{a} -> {b}" for a, b, _ in all_edges
                    if key(a) in members and key(b) in members and key(a) != key(b)})
    return " <-> ".join(component) + ":\n  " + "\n  ".join(links)


@pytest.fixture(scope="module")
def all_edges() -> list[Edge]:
    return edges(modules())


def test_no_cycle_between_modules(all_edges: list[Edge]) -> None:
    found = cycles(module_graph(all_edges))
    assert not found, "import cycles:\n" + "\n".join(
        explain(c, all_edges, lambda m: m) for c in found)


def test_no_cycle_between_packages(all_edges: list[Edge]) -> None:
    found = cycles(package_graph(all_edges))
    assert not found, "package cycles:\n" + "\n".join(
        explain(c, all_edges, package) for c in found)


def test_the_cores_do_not_import_the_vmm() -> None:
    """Resource names and capacities live in tycoon/resources.py: the SLS, the broker and the
    message model speak of resources without depending on the VMM drivers."""
    found = sorted(f"{a} -> {b}" for a, b, _ in edges(modules())
                   if package(b) == "tycoon.vmm"
                   and package(a) in {"tycoon.sls", "tycoon.messages", "tycoon.agent"})
    assert not found


def test_the_fakes_serve_only_tests() -> None:
    """Nothing in the package imports tycoon/testing (fakes for tests, never shipped in use)."""
    found = sorted(f"{a} -> {b}" for a, b, _ in edges(modules())
                   if package(b) == "tycoon.testing" and package(a) != "tycoon.testing")
    assert not found


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]],
                                       expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


def test_lazy_and_type_checking_imports_are_edges(tmp_path: Path) -> None:
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tycoon.b import B\n"
              "def f():\n    from tycoon.c import C\n")
    path = tmp_path / "a.py"
    path.write_text(source)
    mods = {"tycoon.x.a": (path, False), "tycoon.b": (path, False), "tycoon.c": (path, False)}
    found = {(a, b, t) for a, b, t in edges(mods) if a == "tycoon.x.a"}
    assert found == {("tycoon.x.a", "tycoon.b", True), ("tycoon.x.a", "tycoon.c", False)}


# -- the one verification path: nothing outside tycoon/bus verifies by itself -------------
# (the rule that no module outside tycoon/bus touches a raw NATS message: test_messages.py)

SELF_VERIFYING = {"open_envelope", "open_envelopes", "verify_signature", "verify_raw",
                  "crypto_sign_open", "crypto_sign_verify_detached", "verify_batch"}
"""Opening an envelope or checking a signature directly: tycoon/bus/verify.py's job."""


def _self_verifying(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: imports {a.name}" for a in node.names
                      if a.name.split(".")[0] == "nacl" or a.name == "tycoon.bus.batch"]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] == "nacl" or module == "tycoon.bus.batch" or (
                    module == "tycoon.bus" and any(a.name == "batch" for a in node.names)):
                found.append(f"{node.lineno}: imports from {module}")
            found += [f"{node.lineno}: imports {a.name}" for a in node.names
                      if a.name in SELF_VERIFYING]
        elif isinstance(node, ast.Attribute) and node.attr in SELF_VERIFYING:
            found.append(f"{node.lineno}: calls .{node.attr}")
    return found


def test_only_the_bus_opens_envelopes_and_checks_signatures() -> None:
    """Receivers go through tycoon.bus.verify (live, batch, stored, reply, token): a module
    opening envelopes itself (as bank/receipt.py did) would skip or repeat its checks."""
    offenders = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).as_posix()
        if not rel.startswith("tycoon/bus/") and (uses := _self_verifying(path)):
            offenders[rel] = uses
    assert not offenders, offenders


def test_the_verification_rule_catches_what_it_forbids(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import nacl.signing\n"
                   "from tycoon.bus.envelope import open_envelope\n"
                   "from tycoon.bus import batch, envelope\n"
                   "from tycoon.bus.keys import verify_signature\n"
                   "def f(raw):\n"
                   "    return envelope.open_envelopes([raw]), batch.verify_batch([raw])\n")
    assert len(_self_verifying(bad)) == 6


# -- one way to start a service: its launch ----------------------------------------------

SERVICES = {"BankService", "SLSService", "AuctioneerService", "Broker"}
"""The service classes; each is built and subscribed only by its package's ``launch.py``."""

BUILDS_BY_HAND = {
    "tests/test_bank_service.py": "tests the BankService class itself",
    "tests/test_sls_service.py": "tests the SLSService class itself",
}
"""Modules allowed to construct a service class outside ``tycoon/*/launch.py``, and why."""


def _builds_a_service(path: Path) -> list[str]:
    """Where ``path`` constructs one of :data:`SERVICES` (``X(...)`` or ``m.X(...)``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in SERVICES:
                found.append(f"{node.lineno}: {name}(...)")
    return found


def test_services_are_started_only_by_their_launch() -> None:
    """The CLI, ``tycoon up`` (through the CLI), tests and benchmarks start the bank, SLS,
    auctioneers and brokers through ``tycoon/<service>/launch.py``: a hand-wired service
    (class built, bus opened and subscribed by the caller) drifts from what runs."""
    repo = ROOT.parent
    offenders = {}
    for folder in ("tycoon", "tests", "benchmarks"):
        for path in sorted((repo / folder).rglob("*.py")):
            rel = path.relative_to(repo).as_posix()
            if rel.endswith("/launch.py") or rel in BUILDS_BY_HAND:
                continue
            if found := _builds_a_service(path):
                offenders[rel] = found
    assert not offenders, offenders
    assert all(_builds_a_service(repo / rel) for rel in BUILDS_BY_HAND)  # none stale


def test_the_launch_rule_catches_what_it_forbids(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from tycoon.sls import service\n"
                   "async def f(bus, ledger):\n"
                   "    await BankService(bus, ledger).start()\n"
                   "    return service.SLSService(bus), Broker(bus, 'B', '.'), print(bus)\n")
    assert sorted(_builds_a_service(bad)) == [
        "3: BankService(...)", "4: Broker(...)", "4: SLSService(...)"]
