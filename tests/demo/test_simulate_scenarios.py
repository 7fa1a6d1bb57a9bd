"""`tinyfleet simulate --scenario ...`: the named scenarios on real agents over the embedded broker, and the
results file they write; plus the CLI's refusals (exit 2, one line naming the option, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fleet_server.cli.demo_command import demo_command
from fleet_server.cli.simulate_commands import simulate_command


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("simulate")(simulate_command)
    app.command("demo")(demo_command)
    return app


def _simulate(tmp_path: Path, chain: Path, *extra: str) -> tuple[int, str, Path]:
    results = tmp_path / "results.json"
    out = CliRunner().invoke(
        cli(),
        [
            "simulate",
            "--devices", "5",
            "--profiles", "esp32-s3,pi-zero-2w,cortex-m4f,pi-4",
            "--chain-dir", str(chain),
            "--duration", "1200",
            "--sample-period", "4",
            "--window", "60",
            "--workdir", str(tmp_path / "fleet"),
            "--results", str(results),
            *extra,
        ],
    )  # fmt: skip
    return out.exit_code, out.output, results


@pytest.mark.slow
def test_scenarios_change_the_fleet_and_report_it(tmp_path: Path, kws_chain: Path) -> None:
    code, output, results = _simulate(
        tmp_path,
        kws_chain,
        "--broker", "embedded",
        "--scenario", "low-battery",
        "--scenario", "drift",
        "--scenario", "broker-outage",
        "--scenario", "device-churn",
    )  # fmt: skip
    assert code == 0, output
    data = json.loads(results.read_text())
    sc = data["scenarios"]
    # Low battery: every cohort device fell back (battery) and came back up once charging.
    low = sc["low-battery"]
    assert low["cohort"] and low["recovered"] == len(low["cohort"]), low
    # Broker outage: the broker really went away and came back; devices buffered, then everything arrived.
    outage = sc["broker-outage"]
    assert outage["stopped_at_s"] is not None and outage["restarted_at_s"] is not None
    assert outage["buffered_peak"] > 0
    assert data["totals"]["drained"] == data["totals"]["devices"]
    # Churn: cohort devices restarted on their state directories and went on counting windows.
    churn = sc["device-churn"]
    assert churn["restarts"] and data["restarts"] == len(churn["restarts"])
    # Drift: the cohort's sensors were switched to the louder recording from start_s on.
    assert sc["drift"]["cohort"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--scenario", "earthquake"), "--scenario: unknown earthquake"),
        (("--scenario", "broker-outage"), "needs --broker embedded"),
    ],
)
def test_simulate_refuses_bad_scenarios(tmp_path: Path, extra: tuple[str, ...], needle: str) -> None:
    chain = tmp_path / "no-chain"  # never reached: the scenario check comes first
    code, output, results = _simulate(tmp_path, chain, *extra)
    assert code == 2
    assert needle in " ".join(output.split())
    assert not results.exists() and not (tmp_path / "fleet").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--mqtt-url", "http://broker:1883"], "--mqtt-url must look like mqtt://host:port"),
        (["--devices", "2"], "--devices"),
        (["--log-level", "loud"], "--log-level"),
    ],
)
def test_demo_refuses_bad_options(tmp_path: Path, args: list[str], needle: str) -> None:
    out_dir = tmp_path / "out"
    result = CliRunner().invoke(cli(), ["demo", "--out", str(out_dir), *args])
    assert result.exit_code == 2
    assert needle in " ".join(result.output.split())
    assert not out_dir.exists()  # nothing started, nothing written


def test_demo_refuses_an_out_path_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("keep me")
    result = CliRunner().invoke(cli(), ["demo", "--out", str(target)])
    assert result.exit_code == 2
    assert "is not a directory" in result.output
    assert target.read_text() == "keep me"
