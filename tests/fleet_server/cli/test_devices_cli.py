"""`tinyfleet devices ...` against a real server (session `live_server`): results, refusals, exit codes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from live_server import LiveServer, free_port
from typer.testing import CliRunner

from fleet_server.cli.main import app

runner = CliRunner()


def cli(server: LiveServer, role: str, *args: str, input: str | None = None) -> Any:
    return runner.invoke(app, ["devices", *args], env=server.cli_env(role), input=input)


def ok_json(server: LiveServer, role: str, *args: str) -> Any:
    r = cli(server, role, *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def stored_ids(server: LiveServer, prefix: str) -> list[str]:
    page = httpx.get(server.url("/api/v1/devices?limit=500"), headers=server.bearer("admin")).json()
    return [d["id"] for d in page["items"] if d["id"].startswith(prefix)]


def test_provision_show_list_rotate_delete(live_server: LiveServer) -> None:
    made = ok_json(
        live_server, "operator", "provision", "cli-rt-1", "--hardware-class", "esp32-s3", "--tag", "site=lab"
    )
    assert made["device"]["tags"] == {"site": "lab"} and made["credential"]["username"] == "cli-rt-1"
    first_secret = made["credential"]["password"]
    ok_json(live_server, "operator", "provision", "cli-rt-2", "--hardware-class", "pi-4", "--tag", "site=far")

    shown = ok_json(live_server, "viewer", "show", "cli-rt-1")
    assert (shown["id"], shown["hardware_class"]) == ("cli-rt-1", "esp32-s3")
    listed = ok_json(live_server, "viewer", "list", "--tag", "site=lab", "--hardware-class", "esp32-s3")
    assert [d["id"] for d in listed["items"] if d["id"].startswith("cli-rt-")] == ["cli-rt-1"]
    paged = ok_json(live_server, "viewer", "list", "--limit", "1")
    assert len(paged["items"]) == 1 and paged["next_offset"] == 1

    # Human output: a Rich table with the device, the secret shown once with a warning.
    table = cli(live_server, "viewer", "list", "--tag", "site=far")
    assert table.exit_code == 0 and "cli-rt-2" in table.stdout and "cli-rt-1" not in table.stdout
    assert "cli-rt-1" in cli(live_server, "viewer", "show", "cli-rt-1").stdout

    rotated = ok_json(live_server, "operator", "rotate-credential", "cli-rt-1")
    assert rotated["password"] != first_secret
    self_url = live_server.url("/api/v1/device/self")
    assert httpx.get(self_url, auth=("cli-rt-1", first_secret)).status_code == 401
    assert httpx.get(self_url, auth=("cli-rt-1", rotated["password"])).status_code == 200

    human = cli(live_server, "operator", "rotate-credential", "cli-rt-2")
    assert human.exit_code == 0 and "shown only now" in human.stdout

    assert ok_json(live_server, "operator", "delete", "cli-rt-1", "--yes") == {
        "id": "cli-rt-1",
        "deleted": True,
    }
    gone = cli(live_server, "viewer", "show", "cli-rt-1")
    assert gone.exit_code == 1 and "404" in gone.output
    assert stored_ids(live_server, "cli-rt-") == ["cli-rt-2"]


def test_delete_asks_first(live_server: LiveServer) -> None:
    ok_json(live_server, "operator", "provision", "cli-ask-1", "--hardware-class", "pi-4")
    r = cli(live_server, "operator", "delete", "cli-ask-1", input="n\n")
    assert r.exit_code == 1 and "not confirmed" in r.output
    assert stored_ids(live_server, "cli-ask-") == ["cli-ask-1"]
    r = cli(live_server, "operator", "delete", "cli-ask-1", input="y\n")
    assert r.exit_code == 0 and stored_ids(live_server, "cli-ask-") == []


def test_roles_are_enforced(live_server: LiveServer) -> None:
    r = cli(live_server, "viewer", "provision", "cli-role-1", "--hardware-class", "pi-4")
    assert r.exit_code == 1 and "forbidden" in r.output and "'operator'" in r.output
    assert stored_ids(live_server, "cli-role-") == []
    r = runner.invoke(
        app, ["devices", "list"], env={"TINYFLEET_SERVER": live_server.base_url, "TINYFLEET_TOKEN": ""}
    )
    assert r.exit_code == 1 and "unauthenticated" in r.output


@pytest.mark.parametrize(
    ("args", "exit_code", "fragment"),
    [
        (["provision", "cli-bad-1", "--hardware-class", "pi-4", "--tag", "no-equals"], 2, "key=value"),
        (["provision", "cli-bad-2", "--hardware-class", "toaster"], 1, "hardware_class"),
        (["provision", "cli-bad-3"], 2, "--hardware-class"),
        (["provision", "../tokens", "--hardware-class", "pi-4"], 1, "422"),
        (["show", "../tokens"], 2, "not a device id"),
        (["delete", "a/b", "--yes"], 2, "not a device id"),
        (["rotate-credential", "x" * 40], 2, "not a device id"),
        (["list", "--limit", "0"], 2, "--limit"),
        (["list", "--limit", "100000"], 1, "limit"),
        (["show", "cli-bad-absent"], 1, "404"),
    ],
)
def test_bad_arguments_change_nothing(
    live_server: LiveServer, args: list[str], exit_code: int, fragment: str
) -> None:
    before = stored_ids(live_server, "")
    r = cli(live_server, "operator", *args)
    assert r.exit_code == exit_code, r.output
    assert fragment in r.output
    assert stored_ids(live_server, "") == before


def test_unreachable_server_is_exit_3() -> None:
    env = {"TINYFLEET_SERVER": f"http://127.0.0.1:{free_port()}", "TINYFLEET_TOKEN": "tfo_x"}
    r = runner.invoke(app, ["devices", "list"], env=env)
    assert r.exit_code == 3 and "cannot reach" in r.output
