"""`tinyfleet release create|list|show|withdraw` over the REST API.

``create`` signs a release on the server (bsdiff deltas can take seconds: a Rich spinner with elapsed
time runs meanwhile). Exit codes: 0 done, 1 refused by the API, 3 server unreachable, 2 bad arguments.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group
from rich.table import Table

from fleet_server.cli.api_client import ApiClient, JsonOpt, ServerOpt, TokenOpt, emit, fail, table_of

release_app = typer.Typer(
    name="release", help="Signed releases (manifest, artifact, deltas).", no_args_is_help=True
)

RELEASE_COLUMNS = ["id", "version", "variant", "hardware_classes", "state", "deltas", "expires_at", "key_id"]


def _row(release: dict[str, Any]) -> dict[str, Any]:
    return {
        **release,
        "hardware_classes": ",".join(release["hardware_classes"]),
        "deltas": ",".join(str(d["from_counter"]) for d in release["deltas"]) or "-",
        "key_id": release["key_id"][:12],
    }


def _detail(release: dict[str, Any]) -> Group:
    files = table_of(release["files"], ["name", "length", "sha256"], title="files")
    decisions = table_of(
        release["decisions"],
        ["from_version", "patch_length", "full_compressed_length", "ratio", "shipped"],
        title="delta decisions",
    )
    return Group(
        table_of([_row(release)], RELEASE_COLUMNS, title=f"release {release['id']}"), files, decisions
    )


@release_app.command("create")
def create(
    model: Annotated[str, typer.Option("--model", help="Model name.")],
    version: Annotated[str, typer.Option("--version", help="Converted model version.")],
    hardware_classes: Annotated[
        str, typer.Option("--hardware-classes", help="Comma-separated hardware classes, e.g. pi-zero-2w.")
    ],
    variant: Annotated[str, typer.Option("--variant", help="float32 | float16 | dynamic_int8 | full_int8")],
    expires_in_days: Annotated[
        int | None, typer.Option("--expires-in-days", min=1, max=365, help="Manifest expiry (default 30).")
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign a release of a converted model version (with deltas from the versions still in the field)."""
    classes = [c.strip() for c in hardware_classes.split(",") if c.strip()]
    if not classes:
        raise fail("--hardware-classes needs at least one class", 2)
    body: dict[str, Any] = {
        "model": model,
        "version": version,
        "variant": variant,
        "hardware_classes": classes,
    }
    if expires_in_days is not None:
        body["expires_in_days"] = expires_in_days
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with ApiClient.connect(server, token) as api:
        api._client.timeout = 600.0  # deltas of large models take a while
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            transient=True,
            disable=as_json,
        ) as progress:
            progress.add_task(f"signing {model} {version} ({variant}) and computing deltas", total=None)
            release = api.post("/api/v1/releases", json=body)
    emit(release, as_json, lambda: _detail(release))


@release_app.command("list")
def list_releases(
    model: Annotated[str | None, typer.Option("--model", help="Only this model.")] = None,
    state: Annotated[str | None, typer.Option("--state", help="active | withdrawn")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Releases, newest counter first."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if model:
        params["model"] = model
    if state:
        params["state"] = state
    with ApiClient.connect(server, token) as api:
        page = api.get("/api/v1/releases", params=params)

    def render() -> Table:
        title = f"releases ({page['total']} in all)"
        return table_of([_row(r) for r in page["items"]], RELEASE_COLUMNS, title=title)

    emit(page, as_json, render)


@release_app.command("show")
def show(
    release_id: Annotated[str, typer.Argument(help='Release id, "<model>-<counter>".')],
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One release: manifest fields, files with hashes, deltas and the delta decisions."""
    with ApiClient.connect(server, token) as api:
        release = api.get(f"/api/v1/releases/{release_id}")
    emit(release, as_json, lambda: _detail(release))


@release_app.command("withdraw")
def withdraw(
    release_id: Annotated[str, typer.Argument(help='Release id, "<model>-<counter>".')],
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Withdraw a release (admin): devices can no longer download it."""
    with ApiClient.connect(server, token) as api:
        release = api.post(f"/api/v1/releases/{release_id}/withdraw")
    emit(release, as_json, lambda: table_of([_row(release)], RELEASE_COLUMNS, title="withdrawn"))
