"""`tinyfleet keys ...` and `tinyfleet release ...` against the API served by a real uvicorn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from release_test_support import MODEL, PI, free_port
from typer.testing import CliRunner

from fleet_server.cli.main import app as cli

runner = CliRunner()


@pytest.fixture
def env(served: str, tokens: dict[str, str]) -> dict[str, str]:
    return {"TINYFLEET_SERVER": served, "TINYFLEET_TOKEN": tokens["admin"]}


def _json(args: list[str], env: dict[str, str]) -> dict:
    r = runner.invoke(cli, [*args, "--json"], env=env)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_keys_and_release_lifecycle(
    env: dict[str, str], digits: dict[str, Path], tokens: dict[str, str]
) -> None:
    generated = _json(["keys", "generate"], env)
    first_key = generated["current_release_key_id"]
    again = runner.invoke(cli, ["keys", "generate"], env=env)
    assert again.exit_code == 1 and "new_trust_anchor" in again.output

    made = _json(
        [
            "release",
            "create",
            "--model",
            MODEL,
            "--version",
            "1.0.1",
            "--variant",
            "float32",
            "--hardware-classes",
            PI,
        ],
        env,
    )
    assert (made["id"], made["key_id"]) == (f"{MODEL}-1", first_key)
    second = _json(
        [
            "release",
            "create",
            "--model",
            MODEL,
            "--version",
            "1.0.2",
            "--variant",
            "float32",
            "--hardware-classes",
            PI,
            "--expires-in-days",
            "7",
        ],
        env,
    )
    assert second["deltas"][0]["from_counter"] == 1
    listed = _json(["release", "list", "--model", MODEL], env)
    assert [r["id"] for r in listed["items"]] == [f"{MODEL}-2", f"{MODEL}-1"]
    assert _json(["release", "show", f"{MODEL}-2"], env) == second

    # Human output: Rich tables naming the release, its files and its delta decisions.
    shown = runner.invoke(cli, ["release", "show", f"{MODEL}-2"], env=env, terminal_width=200)
    assert shown.exit_code == 0 and f"{MODEL}-2" in shown.stdout and "delta decisions" in shown.stdout

    rotated = _json(["keys", "rotate"], env)
    revoked = _json(["keys", "revoke", first_key], env)
    assert (
        revoked["withdrawn_releases"] == [f"{MODEL}-1", f"{MODEL}-2"] and revoked["revocation"]["serial"] == 1
    )
    keys = _json(["keys", "list"], env)
    assert keys["current_release_key_id"] == rotated["key_id"]
    human = runner.invoke(cli, ["keys", "list"], env=env, terminal_width=200)
    assert human.exit_code == 0 and "revocation list" in human.stdout

    # Withdrawing twice: the API's 409 becomes exit code 1 with its message.
    r = runner.invoke(cli, ["release", "withdraw", f"{MODEL}-2"], env=env)
    assert r.exit_code == 1 and "already withdrawn" in r.output
    # A viewer cannot create releases (403 -> exit 1).
    viewer = {**env, "TINYFLEET_TOKEN": tokens["viewer"]}
    args = ["release", "create", "--model", MODEL, "--version", "1.0.1", "--variant", "float32"]
    r = runner.invoke(cli, [*args, "--hardware-classes", PI], env=viewer)
    assert r.exit_code == 1 and "403" in r.output


def test_bad_arguments_and_unreachable_server(env: dict[str, str]) -> None:
    base = ["release", "create", "--model", MODEL, "--version", "1.0.1", "--variant", "float32"]
    assert runner.invoke(cli, [*base, "--hardware-classes", " , "], env=env).exit_code == 2
    assert (
        runner.invoke(cli, [*base, "--hardware-classes", PI, "--expires-in-days", "0"], env=env).exit_code
        == 2
    )
    assert runner.invoke(cli, base, env=env).exit_code == 2  # --hardware-classes missing
    r = runner.invoke(cli, ["keys", "revoke", "not-a-key-id"], env=env)
    assert r.exit_code == 1 and "422" in r.output
    gone = {**env, "TINYFLEET_SERVER": f"http://127.0.0.1:{free_port()}"}
    assert runner.invoke(cli, ["keys", "list"], env=gone).exit_code == 3


def test_cli_modules_import_only_typer_and_rich() -> None:
    code = (
        "import sys; import fleet_server.cli.release_commands, fleet_server.cli.keys_commands; "
        "heavy = ('fastapi', 'httpx', 'sqlalchemy', 'cryptography', 'tensorflow'); "
        "heavy = [m for m in heavy if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
