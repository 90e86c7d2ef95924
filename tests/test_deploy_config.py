"""Each service from a config file (`--config bank.toml`), the samples in deploy/ and the
systemd units there."""

from __future__ import annotations

import argparse
import configparser
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tycoon.cli.main import build_parser, main, split_config
from tycoon.config import apply_config, load_config
from tycoon.errors import Rejected

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SAMPLES = {"bank.toml": ["bank", "serve"], "sls.toml": ["sls", "serve"],
           "store.toml": ["store", "serve"],
           "auctioneer.toml": ["auctioneer", "serve"],
           "agent.toml": ["agent", "run", "--budget", "1", "--deadline", "1m"]}


def configured(argv: list[str], path: Path) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_config(parser, args, load_config(path), str(path))
    return args


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_sample_applies_to_its_command(name: str) -> None:
    args = configured(SAMPLES[name], DEPLOY / name)
    assert args.nats.startswith("nats://n1.example:4222,")
    if name == "bank.toml":
        assert str(args.db) == "/var/lib/tycoon/bank.db" and args.operator_key == "operator"
        assert args.as_name == "bank" and args.log_level == "info"


def test_tls_ca_and_log_file_reach_the_environment(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A service's TLS trust comes from its config file: tls_ca is the servers' CA."""
    assert_config_reaches_environment(tmp_path, monkeypatch, {
        "tls_ca": ("SSL_CERT_FILE", "ca.pem"), "log_file": ("TYCOON_LOG_FILE", "x.log")})


def assert_config_reaches_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      settings: dict[str, tuple[str, str]]) -> None:
    """Each ``key = "<tmp_path>/<file>"`` of a config file ends up, after ``main``, in its
    environment variable (``settings``: key -> (variable, file))."""
    for variable, _ in settings.values():
        monkeypatch.setenv(variable, "")  # restored after the test, whatever main sets
    path = tmp_path / "c.toml"
    path.write_text("".join(f'{key} = "{tmp_path}/{file}"\n'
                            for key, (_, file) in settings.items()))
    assert main(["--home", str(tmp_path), "--config", str(path), "keys", "list"]) == 0
    for variable, file in settings.values():
        assert os.environ[variable] == f"{tmp_path}/{file}"


def test_command_line_wins_and_typos_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bank.toml"
    path.write_text('db = "/a.db"\nmax_batch = 64\nno_settlement_log = true\n')
    args = configured(["bank", "serve", "--db", "/b.db"], path)
    assert str(args.db) == "/b.db" and args.max_batch == 64 and args.no_settlement_log is True
    path.write_text('operator_kee = "operator"\n')
    with pytest.raises(Rejected, match="'operator_kee' is not an option"):
        configured(["bank", "serve"], path)
    path.write_text('max_batch = "many"\n')
    with pytest.raises(Rejected, match="max_batch"):
        configured(["bank", "serve"], path)
    path.write_text('[bank]\ndb = "x"\n')
    with pytest.raises(Rejected, match="flat keys only"):
        configured(["bank", "serve"], path)


def test_config_after_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert split_config(["bank", "serve", "--config", "b.toml", "--db", "x"]) == (
        ["bank", "serve", "--db", "x"], "b.toml")
    assert split_config(["--config=b.toml", "status"]) == (["status"], "b.toml")
    path = tmp_path / "keys.toml"
    path.write_text(f'home = "{tmp_path / "home"}"\n')
    assert main(["keys", "new", "carol", "--config", str(path)]) == 0
    assert (tmp_path / "home" / "keys" / "carol.nk").exists()
    path.write_text('nope = 1\n')
    assert main(["keys", "list", "--config", str(path)]) == 2
    assert "'nope' is not an option" in capsys.readouterr().err


UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_units(unit: Path) -> None:
    ini = configparser.ConfigParser(strict=False, interpolation=None)
    ini.optionxform = str  # type: ignore[assignment,method-assign]
    ini.read(unit)
    service = ini["Service"]
    assert service["Restart"] == "on-failure"
    assert "network-online.target" in ini["Unit"]["After"]
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    command = shlex.split(service["ExecStart"])
    if Path(command[0]).name == "tycoon":  # the command line parses, its config applies
        argv, config = split_config(command[1:])
        assert config is not None
        sample = DEPLOY / Path(config).name
        configured(argv, sample)
    if shutil.which("systemd-analyze"):
        run = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                             capture_output=True, text=True, timeout=60)
        problems = [line for line in (run.stdout + run.stderr).splitlines()
                    if unit.name in line and "Command" not in line and "executable" not in line
                    and "User" not in line and "Group" not in line]
        assert not problems, problems


def test_cgroups_driver_settings_from_a_config(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """parent, cpu_cap and state_dir were not exposed (only --cgroup-root)."""
    import tycoon.vmm.cgroups
    from tycoon.cli.auctioneer import _driver

    made: dict[str, object] = {}
    monkeypatch.setattr(tycoon.vmm.cgroups, "CgroupsDriver", lambda **kw: made.update(kw))
    path = tmp_path / "auctioneer.toml"
    path.write_text('driver = "cgroups"\ncgroup_root = "tycoon"\ncgroup_parent = "self"\n'
                    'cpu_cap = true\ndriver_state_dir = "/var/lib/tycoon/cg"\n')
    _driver(configured(["auctioneer", "serve"], path))
    assert made["root"] == "tycoon" and made["parent"] == "self"
    assert made["cpu_cap"] is True and made["state_dir"] == "/var/lib/tycoon/cg"
