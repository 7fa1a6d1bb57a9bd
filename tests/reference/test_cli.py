from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from converters.reference.chain import ChainReport
from fleet_server.cli.reference_commands import reference_command


def reference_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(reference_command)
    return app


def test_json_output_describes_the_built_chain(digits_cli_run) -> None:  # type: ignore[no-untyped-def]
    out, payload = digits_cli_run
    assert set(payload) == {"digits"}
    assert Path(payload["digits"]["chain_json"]) == out / "digits" / "chain.json"  # type: ignore[index]
    on_disk = ChainReport.read(out / "digits")
    assert (
        ChainReport.model_validate({k: v for k, v in payload["digits"].items() if k != "chain_json"})
        == on_disk
    )  # type: ignore[union-attr]


def test_unknown_task_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(reference_app(), ["speech", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "unknown task 'speech'" in result.output and "kws, digits, all" in result.output
    assert not (tmp_path / "o").exists()


def test_existing_output_without_overwrite_exits_2_and_keeps_files(tmp_path: Path) -> None:
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "chain.json").write_text("keep me")
    result = CliRunner().invoke(reference_app(), ["all", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--overwrite" in result.output
    assert (tmp_path / "digits" / "chain.json").read_text() == "keep me"
    assert not (tmp_path / "kws").exists()  # refused before building anything


def test_out_that_is_a_file_exits_2(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    result = CliRunner().invoke(reference_app(), ["digits", "--out", str(target)])
    assert result.exit_code == 2 and "not a directory" in result.output
    assert target.read_text() == "x"


def test_demo_refuses_an_out_path_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    from fleet_server.cli.main import app

    result = CliRunner().invoke(app, ["demo", "--out", str(target)])
    assert result.exit_code == 2, result.output
    assert target.read_text() == "x"
