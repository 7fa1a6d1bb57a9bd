"""`tinyfleet drift status|evaluate`, `tinyfleet alerts list|ack|resolve`, `tinyfleet retraining show|events`.

All over the REST API (fleet_server/cli/api_client.py): Rich tables for people, ``--json`` for scripts.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fleet_server.cli.api_client import ApiClient, JsonOpt, ServerOpt, TokenOpt, console, emit, table_of

drift_app = typer.Typer(
    help="Input drift per model version and cohort (PSI / KS / JS).", no_args_is_help=True
)
alerts_app = typer.Typer(help="Alerts (P0-P3): list, acknowledge, resolve.", no_args_is_help=True)
retraining_app = typer.Typer(
    help="Retraining interval T* and retraining-trigger events.", no_args_is_help=True
)

ModelOpt = Annotated[str | None, typer.Option("--model", help="Model name.")]
VersionOpt = Annotated[int | None, typer.Option("--version", min=0, help="Release counter (needs --model).")]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=1000, help="Rows per page.")]
NoteOpt = Annotated[str | None, typer.Option("--note", help="Note kept with the alert.")]
STATUS_STYLE = {"stable": "green", "investigate": "yellow", "significant": "red", "no_data": "dim"}


def _params(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def _fmt(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


@drift_app.command("status")
def drift_status(
    model: ModelOpt = None,
    version: VersionOpt = None,
    cohort: Annotated[str | None, typer.Option("--cohort", help="all, hw:<class>, ...")] = None,
    features: Annotated[bool, typer.Option("--features", help="One row per input feature.")] = False,
    limit: LimitOpt = 100,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Latest drift status per model version and cohort (stable < 0.1 <= investigate <= 0.2 < significant)."""
    with ApiClient.connect(server, token) as api:
        page = api.get(
            "/api/v1/drift", params=_params(model=model, version=version, cohort=cohort, limit=limit)
        )

    def render() -> Any:
        from rich.table import Table

        table = Table(title=f"Drift ({page['total']} groups)")
        for col in ("model", "version", "cohort", "status", "max PSI", "devices", "samples", "evaluated"):
            table.add_column(col)
        if features:
            for col in ("feature", "PSI", "KS", "JS"):
                table.add_column(col)
        for d in page["items"]:
            style = STATUS_STYLE.get(d["status"], "")
            row = [
                d["model_name"],
                str(d["model_version"]),
                d["cohort"],
                f"[{style}]{d['status']}[/]" if style else d["status"],
                _fmt(d["max_psi"]),
                str(d["devices"]),
                str(d["samples"]),
                d["evaluated_at"][:19],
            ]
            if not features:
                table.add_row(*row)
                continue
            for i, f in enumerate(d["features"] or [None]):
                cells = (
                    ["", "", "", ""]
                    if f is None
                    else [str(f["feature"]), _fmt(f["psi"]), _fmt(f["ks"]), _fmt(f["js"])]
                )
                table.add_row(*(row if i == 0 else [""] * len(row)), *cells)
        return table

    emit(page, as_json, render)


@drift_app.command("evaluate")
def drift_evaluate(
    model: ModelOpt = None,
    version: VersionOpt = None,
    window_s: Annotated[
        int | None, typer.Option("--window-s", min=60, help="Telemetry range in seconds.")
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a drift evaluation now (operator): snapshots, alerts, retraining events, webhook delivery."""
    body = _params(model=model, version=version, window_s=window_s)
    with ApiClient.connect(server, token) as api, console().status("evaluating drift ..."):
        out = api.post("/api/v1/drift/evaluate", json=body)
    rows = [
        {
            **g,
            "alerts": len(g["alerts_raised"]) + len(g["alerts_refreshed"]),
            "event": g["event_id"] if g["event_id"] is not None else "",
        }
        for g in out["groups"]
    ]
    emit(
        out,
        as_json,
        lambda: table_of(
            rows,
            ["model_name", "model_version", "cohort", "status", "alerts", "alerts_resolved", "event"],
            title=f"Drift evaluation; webhook: {out['deliveries']}",
        ),
    )


@alerts_app.command("list")
def alerts_list(
    severity: Annotated[str | None, typer.Option("--severity", help="P0, P1, P2 or P3.")] = None,
    state: Annotated[str | None, typer.Option("--state", help="open, acknowledged or resolved.")] = None,
    model: ModelOpt = None,
    limit: LimitOpt = 50,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Alerts, unresolved first, then by severity."""
    params = _params(severity=severity, state=state, model=model, limit=limit, offset=offset)
    with ApiClient.connect(server, token) as api:
        page = api.get("/api/v1/alerts", params=params)
    emit(
        page,
        as_json,
        lambda: table_of(
            page["items"],
            ["id", "severity", "state", "code", "model_name", "model_version", "cohort", "count", "title"],
            title=f"Alerts ({page['total']})",
        ),
    )


def _alert_action(action: str, alert_id: int, note: str | None, server: str | None, token: str | None) -> Any:
    with ApiClient.connect(server, token) as api:
        return api.post(f"/api/v1/alerts/{alert_id}/{action}", json=_params(note=note))


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[int, typer.Argument(min=1, help="Alert id.")],
    note: NoteOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Acknowledge an open alert (operator)."""
    row = _alert_action("ack", alert_id, note, server, token)
    emit(row, as_json, lambda: table_of([row], ["id", "severity", "state", "acknowledged_by", "title"]))


@alerts_app.command("resolve")
def alerts_resolve(
    alert_id: Annotated[int, typer.Argument(min=1, help="Alert id.")],
    note: NoteOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve an alert by hand (operator)."""
    row = _alert_action("resolve", alert_id, note, server, token)
    emit(row, as_json, lambda: table_of([row], ["id", "severity", "state", "resolved_at", "title"]))


@retraining_app.command("show")
def retraining_show(
    model: Annotated[str, typer.Argument(help="Model name.")],
    c: Annotated[float | None, typer.Option("--c", help="C: cost of one retraining run.")] = None,
    q: Annotated[float | None, typer.Option("--q", help="Q: queries per day (default: observed).")] = None,
    v: Annotated[float | None, typer.Option("--v", help="V: value of one accuracy point per query.")] = None,
    version: Annotated[int | None, typer.Option("--version", min=0, help="Release counter.")] = None,
    days: Annotated[float, typer.Option("--days", help="Fit over the last N days.")] = 30.0,
    bucket_days: Annotated[float, typer.Option("--bucket-days", help="Days per proxy point.")] = 1.0,
    proxy: Annotated[str, typer.Option("--proxy", help="precision or false_wake.")] = "precision",
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """T* = sqrt(2 C / (Q V A0 lambda)) with A0 and lambda fitted from the model's telemetry."""
    params = _params(c=c, q=q, v=v, version=version, days=days, bucket_days=bucket_days, proxy=proxy)
    with ApiClient.connect(server, token) as api:
        out = api.get(f"/api/v1/models/{model}/retraining", params=params)

    def render() -> Any:
        fit = out["fit"] or {}
        rows = [
            {"symbol": "model", "value": f"{out['model']} v{out['version']} ({out['release_id']})"},
            {"symbol": "proxy", "value": out["proxy"]},
            {"symbol": "points", "value": fit.get("points", 0)},
            {"symbol": "A0", "value": _fmt(fit.get("a0"), 4)},
            {"symbol": "lambda (/day)", "value": _fmt(fit.get("lam"), 5)},
            {"symbol": "r2", "value": _fmt(fit.get("r2"), 3)},
            {"symbol": "half-life (days)", "value": _fmt(out["half_life_days"], 1)},
            {"symbol": "C", "value": out["c"]},
            {"symbol": f"Q ({out['q_source']})", "value": _fmt(out["q"], 1)},
            {"symbol": "V", "value": out["v"]},
            {"symbol": "T* (days)", "value": _fmt(out["t_star_days"], 2)},
        ]
        if out["note"]:
            rows.append({"symbol": "note", "value": out["note"]})
        return table_of(rows, ["symbol", "value"], title="Retraining interval")

    emit(out, as_json, render)


@retraining_app.command("events")
def retraining_events(
    model: ModelOpt = None,
    pending: Annotated[bool, typer.Option("--pending", help="Only undelivered events.")] = False,
    limit: LimitOpt = 50,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retraining-trigger events and their webhook delivery state."""
    params = _params(model=model, limit=limit, delivery_state="pending" if pending else None)
    with ApiClient.connect(server, token) as api:
        page = api.get("/api/v1/retraining-events", params=params)
    rows = [{**e, "reasons": "; ".join(e["reasons"])} for e in page["items"]]
    emit(
        page,
        as_json,
        lambda: table_of(
            rows,
            [
                "id",
                "model_name",
                "model_version",
                "cohort",
                "delivery_state",
                "attempts",
                "last_error",
                "reasons",
            ],
            title=f"Retraining events ({page['total']})",
        ),
    )
