"""`tinyfleet server ...`: run the API (uvicorn), migrate the database, bootstrap API tokens.

Wire into the main CLI with ``app.add_typer(server_app, name="server")``. FastAPI, SQLAlchemy and
uvicorn are imported inside the commands so the rest of the CLI does not pay for them.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

server_app = typer.Typer(
    name="server", help="Run and administer the TinyFleet fleet server.", no_args_is_help=True
)
_err = Console(stderr=True)


def _fail(message: str, code: int) -> typer.Exit:
    _err.print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _settings(**overrides: Any) -> Any:
    from pydantic import ValidationError

    from fleet_server.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise _fail(f"invalid setting {where}: {first['msg']} (TINYFLEET_* environment)", 2) from None


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def _engine(settings: Any) -> Any:
    from fleet_server.db import make_engine

    if settings.is_sqlite:
        settings.ensure_dirs()
    try:
        return make_engine(settings.database_url)
    except ValueError as exc:  # our own checks (e.g. the driver); their messages never hold the URL
        raise _fail(f"cannot use database {_safe_url(settings.database_url)}: {exc}", 2) from None
    except Exception as exc:  # SQLAlchemy's URL errors quote the URL, password included: type only
        raise _fail(
            f"cannot use database {_safe_url(settings.database_url)}: {type(exc).__name__}", 2
        ) from None


def _migrate(engine: Any, settings: Any) -> tuple[str | None, str | None]:
    from sqlalchemy.exc import SQLAlchemyError

    from fleet_server.db.migrate import current_revision, upgrade_to_head

    try:
        before = current_revision(engine)
        after = upgrade_to_head(engine)
    except SQLAlchemyError as exc:
        reason = str(exc.orig if getattr(exc, "orig", None) else exc).splitlines()[0]
        raise _fail(f"database {_safe_url(settings.database_url)}: {reason}", 1) from None
    return before, after


@server_app.command("migrate")
def migrate(json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Upgrade the database (TINYFLEET_DATABASE_URL) to the newest schema revision."""
    settings = _settings()
    engine = _engine(settings)
    try:
        before, after = _migrate(engine, settings)
    finally:
        engine.dispose()
    result = {"database": _safe_url(settings.database_url), "from_revision": before, "to_revision": after}
    if json_output:
        typer.echo(json.dumps(result))
        return
    Console().print(
        f"database {result['database']}: revision {before or '(empty)'} → {after}", highlight=False
    )


@server_app.command("create-token")
def create_token(
    name: Annotated[
        str, typer.Option(help="Unique token name; shown as the actor in the audit log.")
    ] = "admin",
    role: Annotated[str, typer.Option(help="viewer, operator or admin.")] = "admin",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create an operator API token (e.g. the first admin). The token is printed once, never stored."""
    from fleet_server import audit
    from fleet_server.api.schemas.tokens import TOKEN_NAME_PATTERN
    from fleet_server.auth import Role, issue_token
    from fleet_server.db import make_session_factory

    try:
        parsed_role = Role.parse(role)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    if not re.fullmatch(TOKEN_NAME_PATTERN, name):
        raise _fail(f"token name {name!r} must match {TOKEN_NAME_PATTERN}", 2)
    settings = _settings()
    engine = _engine(settings)
    try:
        _migrate(engine, settings)
        with make_session_factory(engine)() as session:
            try:
                issued = issue_token(
                    session, name=name, role=parsed_role, created_by="cli", n_bytes=settings.token_bytes
                )
            except ValueError as exc:
                raise _fail(str(exc), 2) from None
            audit.record(
                session,
                actor="cli",
                actor_kind="system",
                action="token.create",
                target=name,
                outcome="ok",
                details={"role": parsed_role.name},
            )
            session.commit()
            token_id = issued.row.id
    finally:
        engine.dispose()
    if json_output:
        typer.echo(
            json.dumps({"id": token_id, "name": name, "role": parsed_role.name, "token": issued.secret})
        )
        return
    table = Table(title="API token created (the token is shown only now)")
    for col in ("id", "name", "role", "token"):
        table.add_column(col)
    table.add_row(str(token_id), name, parsed_role.name, issued.secret)
    Console(width=200).print(table)


# Process-level tuning for serving (applied in each server process after the app is built):
# the app's import leaves ~115k long-lived objects that every full collection walked again; under
# 50 concurrent clients a full collection ran every ~1.5 s and took 150-300 ms, stalling every request
# in flight (bench/RESULTS-server-api.md). Freezing them and collecting the young generation less often
# removed ~90 % of the collector's time.
GC_THRESHOLDS = (10_000, 50, 100)


def _tune_gc_for_serving() -> None:
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serving_app() -> Any:
    """App factory of each uvicorn worker process (``--workers N``): settings from TINYFLEET_*."""
    from fleet_server.api import create_app

    app = create_app()
    _tune_gc_for_serving()
    return app


@server_app.command("run")
def run(
    host: Annotated[str | None, typer.Option(help="Bind address (default TINYFLEET_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default TINYFLEET_API_PORT).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="uvicorn worker processes (default TINYFLEET_API_WORKERS, 1)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="One log line per request (at info).")
    ] = True,
) -> None:
    """Serve the operator and device API with uvicorn (migrates the database first)."""
    import os

    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from fleet_server.api import create_app

    # `server run` is the embedded default: the conversion job worker and the drift evaluator run with it
    # unless the environment says otherwise (library users and tests of create_app opt in instead).
    services = {
        name: True
        for name in ("job_worker_autostart", "drift_scheduler_enabled")
        if f"TINYFLEET_{name.upper()}" not in os.environ
    }
    settings = _settings(api_host=host, api_port=port, api_workers=workers, **services)
    where = (
        f"TinyFleet server on http://{settings.api_host}:{settings.api_port} "
        f"(database {_safe_url(settings.database_url)}; OpenAPI at /docs)"
    )
    options: dict[str, Any] = {
        "host": settings.api_host,
        "port": settings.api_port,
        "log_level": log_level,
        "access_log": access_log,
    }
    if settings.api_workers == 1:
        try:
            app = create_app(settings)
        except SQLAlchemyError as exc:
            reason = str(exc.orig if getattr(exc, "orig", None) else exc).splitlines()[0]
            raise _fail(f"database {_safe_url(settings.database_url)}: {reason}", 1) from None
        _tune_gc_for_serving()
        _err.print(where, highlight=False)
        uvicorn.run(app, **options)
        return
    if settings.is_sqlite and settings.rollout_runner_enabled:
        # SQLite has no advisory lock, so every worker's rollout runner would tick the same rollouts.
        raise _fail(
            "with SQLite only one process may run the rollout runner: use --workers 1, or set "
            "TINYFLEET_ROLLOUT_RUNNER_ENABLED=false and run one `tinyfleet rollouts run`",
            2,
        )
    # Several processes: migrate once here (concurrent upgrades would race), then every worker builds
    # its app from the environment, which carries this command's overrides.
    engine = _engine(settings)
    try:
        _migrate(engine, settings)
    finally:
        engine.dispose()
    os.environ.update(
        {
            "TINYFLEET_API_HOST": settings.api_host,
            "TINYFLEET_API_PORT": str(settings.api_port),
            "TINYFLEET_MIGRATE_ON_START": "false",
            **{f"TINYFLEET_{name.upper()}": "true" for name in services},
        }
    )
    if settings.is_sqlite:
        os.environ.setdefault("TINYFLEET_DATABASE_URL", settings.database_url)
    _err.print(f"{where}, {settings.api_workers} worker processes", highlight=False)
    uvicorn.run(
        "fleet_server.cli.server_commands:serving_app", factory=True, workers=settings.api_workers, **options
    )
