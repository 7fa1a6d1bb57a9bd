"""What every operator sub-command over the REST API shares: server URL + token, errors, output.

``--server`` / ``TINYFLEET_SERVER`` (default http://127.0.0.1:8080) and ``--token`` /
``TINYFLEET_TOKEN``. Errors from the API (``{"error": {"code", "message", "details"}}``) and transport
errors become one red line on stderr and exit code 1 (API refused) or 3 (server unreachable);
bad CLI arguments exit 2 (typer's convention). ``--json`` prints the API's JSON unchanged for scripts;
otherwise a Rich table.

Usage in a command module::

    @devices_app.command("list")
    def list_devices(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
        with ApiClient.connect(server, token) as api:
            page = api.get("/api/v1/devices", params={"limit": 50})
        emit(page, as_json, lambda: table_of(page["items"], ["id", "hardware_class", "current_version"]))
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

DEFAULT_SERVER = "http://127.0.0.1:8080"
EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 3

_err = Console(stderr=True)
_out = Console()

ServerOpt = Annotated[
    str | None,
    typer.Option("--server", envvar="TINYFLEET_SERVER", help=f"Fleet server URL (default {DEFAULT_SERVER})."),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="TINYFLEET_TOKEN", help="Operator API token (tfo_...).", show_default=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def fail(message: str, code: int = EXIT_API_ERROR) -> typer.Exit:
    _err.print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@dataclass
class ApiClient:
    """A thin httpx wrapper: JSON in/out, the API's error envelope turned into :func:`fail`."""

    server: str
    token: str | None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._client = httpx.Client(base_url=self.server.rstrip("/"), headers=headers, timeout=self.timeout_s)

    @classmethod
    def connect(cls, server: str | None, token: str | None) -> ApiClient:
        return cls(server or os.environ.get("TINYFLEET_SERVER") or DEFAULT_SERVER, token)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def request(self, method: str, path: str, *, ok_statuses: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """JSON of the answer; an error status fails the command unless listed in ``ok_statuses``."""
        import httpx

        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise fail(f"cannot reach the fleet server at {self.server}: {exc}", EXIT_UNREACHABLE) from None
        if response.status_code >= 400 and response.status_code not in ok_statuses:
            raise fail(_error_message(response), EXIT_API_ERROR)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.content

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def get_all(
        self, path: str, params: dict[str, Any] | None = None, page_size: int = 100
    ) -> dict[str, Any]:
        """Every item of a paginated list (following ``next_offset``), as one page-shaped dict."""
        items: list[Any] = []
        offset: int | None = 0
        total = 0
        while offset is not None:
            page = self.get(path, params={**(params or {}), "limit": page_size, "offset": offset})
            items.extend(page["items"])
            total = page.get("total", len(items))
            offset = page.get("next_offset")
        return {"items": items, "total": total}

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)


def _error_message(response: Any) -> str:
    try:
        error = response.json()["error"]
        message = f"{error['message']} ({response.status_code} {error['code']})"
        details = error.get("details") or []
        if isinstance(details, list) and details:
            message += "; " + "; ".join(f"{d.get('loc', '')}: {d.get('msg', '')}" for d in details[:5])
        return message
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


def emit(data: Any, as_json: bool, render: Callable[[], Any] | None = None) -> None:
    """Print ``data`` as JSON (``--json``) or call ``render`` (a Rich renderable or None when it printed)."""
    if as_json or render is None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        return
    shown = render()
    if shown is not None:
        _out.print(shown)


def table_of(rows: Iterable[Mapping[str, Any]], columns: list[str], title: str | None = None) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    return table


def console() -> Console:
    return _out
