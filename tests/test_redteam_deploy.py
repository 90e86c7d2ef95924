"""Red team: deployment (issue 23). A hostile principal hands the operator an admit line
whose NAME smuggles a capability, a role or a whole principal into principals.conf (and
from there into nats.conf); every such name is refused and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tycoon.bus.keys import KeyStore
from tycoon.cli.main import main
from tycoon.deploy import Deployment
from tycoon.natsconf import load_principals


def run(home: Path, *argv: str) -> int:
    return main(["--home", str(home), *argv])


def test_an_admitted_name_cannot_smuggle_a_capability_a_role_or_a_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = tmp_path / "box"
    assert run(box, "init", "--local") == 0
    mallory = KeyStore(tmp_path / "lap").create("mallory").public_key
    evil = KeyStore(tmp_path / "lap").create("evil").public_key
    assert run(box, "admit", "user", "alice", KeyStore(tmp_path / "a").create("a").public_key) == 0
    before = (box / "principals.conf").read_text()
    conf = (box / "nats.conf").read_text()
    for name in ("mallory +jetstream",              # a capability --cap would not allow
                 "mallory\u2003+jetstream",         # the same behind a wide space
                 "mallory\u00a0+requests,monitor",
                 f"mallory\noperator {evil} evil +jetstream",  # a second principal
                 "mallory\r\nhost " + evil,
                 "mallory # a comment hides the rest",
                 "+jetstream", "#", "", "m" * 200, "mallory}{"):
        capsys.readouterr()
        assert run(box, "admit", "user", name, mallory) == 1, repr(name)
        assert "name" in capsys.readouterr().err.lower(), repr(name)
        assert (box / "principals.conf").read_text() == before, repr(name)
        assert (box / "nats.conf").read_text() == conf
    assert not any(p.capabilities for p in load_principals(box / "principals.conf"))
    assert evil not in (box / "nats.conf").read_text()
    assert run(box, "admit", "user", "mallory", mallory) == 0  # a plain name is fine


def test_an_admit_naming_anothers_key_leaves_no_poisoned_line(tmp_path: Path) -> None:
    """A hostile principal's admit line carries the bank's public key under its own name:
    refused — and nothing is left behind in principals.conf that would make every later
    admit and render fail until the file is edited by hand."""
    box = tmp_path / "box"
    assert run(box, "init", "--local") == 0
    deployment = Deployment.load(box)
    bank = deployment.public_key(deployment.bank_key)
    path = box / "principals.conf"
    before = path.read_text() if path.exists() else ""
    assert run(box, "admit", "user", "mallory", bank) == 1
    assert (path.read_text() if path.exists() else "") == before
    carol = KeyStore(tmp_path / "lap").create("carol").public_key
    assert run(box, "admit", "user", "carol", carol) == 0  # the next admit works
    assert f"nkey: {carol}" in (box / "nats.conf").read_text()
