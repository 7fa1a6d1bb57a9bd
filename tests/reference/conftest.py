"""Session fixtures: each reference chain is trained and converted once per test session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fleet_server.cli.reference_commands import reference_command


def reference_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(reference_command)
    return app


@pytest.fixture(scope="session")
def kws_chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, float]]]:
    """KWS chain built through the Python API; returns (chain dir, progress calls)."""
    from converters.reference.chain import build_reference_chain

    out = tmp_path_factory.mktemp("kws") / "chain"
    calls: list[tuple[str, float]] = []
    build_reference_chain("kws", out, progress=lambda d, f: calls.append((d, f)))
    return out, calls


@pytest.fixture(scope="session")
def digits_cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """Digits chain built through the CLI (`reference digits --json`); returns (out dir, parsed stdout)."""
    out = tmp_path_factory.mktemp("digits-cli")
    result = CliRunner().invoke(reference_app(), ["digits", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)
