"""Every way into the agent process refuses bad input with exit code 2 and one line naming the problem,
before anything is written to the device's state directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from device_agent.main import main
from fleet_server.cli.agent_commands import agent_command

GOOD = """device_id = "bad-input-1"
hardware_class = "pi-zero-2w"
model_dir = "{chain}"
state_dir = "state"
[broker]
url = "mqtt://127.0.0.1:1"
[loop]
sample_period_s = 0.5
window_s = 5
"""


def config_with(tmp_path: Path, chain: Path, old: str, new: str) -> Path:
    text = GOOD.format(chain=chain)
    assert old in text
    path = tmp_path / "device.toml"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ('hardware_class = "pi-zero-2w"', 'hardware_class = "pi-5"', "hardware_class"),
        ("window_s = 5", "window_s = -5", "loop.window_s"),
        ('url = "mqtt://127.0.0.1:1"', 'url = "http://127.0.0.1:1"', "broker.url"),
        ('device_id = "bad-input-1"', 'device_id = "bad/id"', "device_id"),
        ("[loop]", "typo_key = 1\n[loop]", "typo_key"),
        ("window_s = 5", "window_s = ", "not valid TOML"),
        ('state_dir = "state"', "", None),  # valid: state_dir defaults to ./state (control case)
    ],
)
def test_bad_config_exits_2_with_one_line_naming_the_field(
    tmp_path: Path, chain_dir: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, named: str | None
) -> None:
    config = config_with(tmp_path, chain_dir, old, new)
    if named is None:  # the control: the same file without the change is accepted (agent starts, we stop it)
        from device_agent.config import load_config

        assert load_config(config).state_dir == tmp_path / "state"
        return
    code = main(["--config", str(config)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2
    assert len(lines) == 1 and named in lines[0] and str(config) in lines[0], err
    assert not (tmp_path / "state").exists(), "a refused config must not create device state"


def test_missing_config_and_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read config" in capsys.readouterr().err
    good = tmp_path / "device.toml"
    good.write_text(GOOD.format(chain=tmp_path))
    assert main(["--config", str(good), "--sim-speed", "0"]) == 2
    assert "--sim-speed" in capsys.readouterr().err
    assert main(["--config", str(good), "--root-key", str(tmp_path / "missing.pub")]) == 2
    assert "--root-key" in capsys.readouterr().err
    assert main([]) == 2  # argparse: --config is required


def test_chain_that_does_not_exist_exits_1_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "device.toml"
    good.write_text(GOOD.format(chain=tmp_path / "no-chain"))
    assert main(["--config", str(good)]) == 1
    err = capsys.readouterr().err
    assert "chain.json" in err and "no-chain" in err


def test_tinyfleet_agent_typer_command_and_real_exit_code(tmp_path: Path, chain_dir: Path) -> None:
    app = typer.Typer()
    app.command("agent")(agent_command)
    app.command("other")(lambda: None)  # more than one command: sub-command names are kept
    config = config_with(tmp_path, chain_dir, 'hardware_class = "pi-zero-2w"', 'hardware_class = "vax"')
    result = CliRunner().invoke(app, ["agent", "--config", str(config)])
    assert result.exit_code == 2 and "hardware_class" in result.output
    # The process entry, as systemd runs it: the exit status itself, one line on stderr.
    proc = subprocess.run(
        [sys.executable, "-m", "device_agent.main", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "hardware_class" in proc.stderr
