"""`tinyfleet devices list|show|provision|rotate-credential|delete` over the REST API.

list/show need a viewer token, the others an operator token. A device secret (provision,
rotate-credential) is printed once, as the API returns it once; with ``--json`` the API's response is
printed unchanged. Exit codes: 0 done, 1 refused by the API, 3 server unreachable, 2 bad arguments.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group
from rich.text import Text

from fleet_server.cli.api_client import ApiClient, JsonOpt, ServerOpt, TokenOpt, emit, fail, table_of

devices_app = typer.Typer(name="devices", help="Provision and inspect devices.", no_args_is_help=True)

DeviceIdArg = Annotated[str, typer.Argument(help="Device id (also its MQTT username).")]
TagOpt = Annotated[
    list[str] | None, typer.Option("--tag", help="key=value; repeat for several.", show_default=False)
]
LIST_COLUMNS = ["id", "hardware_class", "tags", "current_model", "current_version", "last_seen_at"]
SHOW_FIELDS = [
    "id",
    "hardware_class",
    "tags",
    "created_at",
    "updated_at",
    "last_seen_at",
    "current_model",
    "current_version",
    "active_slot",
    "fallback_level",
]


def _tags(pairs: list[str] | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} must look like key=value", param_hint="--tag")
        tags[key] = value
    return tags


def _checked(device_id: str) -> str:
    """The id as a URL path segment; refused here (exit 2) rather than sent as a different path."""
    from telemetry.topics import is_valid_device_id

    if not is_valid_device_id(device_id):
        raise typer.BadParameter(
            f"{device_id!r} is not a device id: 1-36 letters, digits, '-', '_' or '.', starting with a "
            "letter or digit",
            param_hint="DEVICE_ID",
        )
    return device_id


def _row(device: dict[str, Any]) -> dict[str, Any]:
    tags = device.get("tags") or {}
    return {**device, "tags": ",".join(f"{k}={v}" for k, v in sorted(tags.items()))}


def _fields(device: dict[str, Any], title: str) -> Any:
    row = _row(device)
    return table_of([{"field": f, "value": row.get(f)} for f in SHOW_FIELDS], ["field", "value"], title=title)


def _credential(credential: dict[str, Any], title: str) -> Any:
    table = table_of([credential], ["username", "password", "mqtt_host", "mqtt_port"], title=title)
    return Group(table, Text("The password is shown only now: store it on the device.", style="yellow"))


@devices_app.command("list")
def list_devices(
    hardware_class: Annotated[str | None, typer.Option(help="Only this hardware class.")] = None,
    tag: TagOpt = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Page size (server default if unset).")] = None,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many devices.")] = 0,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Devices ordered by id, filtered by hardware class and tags (all given tags must match)."""
    params: dict[str, Any] = {"offset": offset, "tag": [f"{k}={v}" for k, v in _tags(tag).items()]}
    if hardware_class:
        params["hardware_class"] = hardware_class
    if limit is not None:
        params["limit"] = limit
    with ApiClient.connect(server, token) as api:
        page = api.get("/api/v1/devices", params=params)

    def render() -> Any:
        shown = f"{page['offset'] + 1}-{page['offset'] + len(page['items'])}" if page["items"] else "none"
        more = f"; next page: --offset {page['next_offset']}" if page["next_offset"] is not None else ""
        return table_of(
            [_row(d) for d in page["items"]], LIST_COLUMNS, title=f"devices {shown} of {page['total']}{more}"
        )

    emit(page, as_json, render)


@devices_app.command("show")
def show(
    device_id: DeviceIdArg, server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """One device: hardware class, tags, what it last reported."""
    with ApiClient.connect(server, token) as api:
        device = api.get(f"/api/v1/devices/{_checked(device_id)}")
    emit(device, as_json, lambda: _fields(device, f"device {device_id}"))


@devices_app.command("provision")
def provision(
    device_id: DeviceIdArg,
    hardware_class: Annotated[str, typer.Option(help="e.g. cortex-m4f, esp32-s3, pi-zero-2w, pi-4.")],
    tag: TagOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a device; prints its credential (MQTT and HTTP) once."""
    body = {"id": device_id, "hardware_class": hardware_class, "tags": _tags(tag)}
    with ApiClient.connect(server, token) as api:
        made = api.post("/api/v1/devices", json=body)
    emit(
        made,
        as_json,
        lambda: Group(
            _fields(made["device"], f"device {device_id} provisioned"),
            _credential(made["credential"], "credential"),
        ),
    )


@devices_app.command("rotate-credential")
def rotate_credential(
    device_id: DeviceIdArg, server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Issue a new device secret; the old one stops working."""
    with ApiClient.connect(server, token) as api:
        credential = api.post(f"/api/v1/devices/{_checked(device_id)}/credential")
    emit(credential, as_json, lambda: _credential(credential, f"new credential of {device_id}"))


@devices_app.command("delete")
def delete(
    device_id: DeviceIdArg,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a device and its credential."""
    _checked(device_id)
    if not yes and not typer.confirm(f"Delete device {device_id!r} and its credential?"):
        raise fail("not confirmed; nothing changed", 1)
    with ApiClient.connect(server, token) as api:
        api.delete(f"/api/v1/devices/{_checked(device_id)}")
    result = {"id": device_id, "deleted": True}
    emit(result, as_json, lambda: Text(f"device {device_id} deleted"))
