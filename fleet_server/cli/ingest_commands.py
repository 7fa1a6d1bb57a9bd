"""`tinyfleet ingest run` (the telemetry ingest worker) and `tinyfleet broker config --out DIR`.

The lead wires them with ``app.add_typer(ingest_app, name="ingest")`` and
``app.add_typer(broker_app, name="broker")``. Database and broker come from the TINYFLEET_* settings
(TINYFLEET_DATABASE_URL, TINYFLEET_MQTT_HOST/PORT/USERNAME/PASSWORD); options override them.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fleet_server.cli.server_commands import _engine, _fail, _safe_url, _settings

ingest_app = typer.Typer(name="ingest", help="Telemetry ingest from the MQTT broker.", no_args_is_help=True)
broker_app = typer.Typer(name="broker", help="Mosquitto configuration for the fleet.", no_args_is_help=True)


def _require_schema(engine: Any, settings: Any) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from fleet_server.db.migrate import current_revision, head_revision

    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        reason = str(exc.orig if getattr(exc, "orig", None) else exc).splitlines()[0]
        raise _fail(f"database {_safe_url(settings.database_url)}: {reason}", 1) from None
    if current != head_revision():
        raise _fail(
            f"database {_safe_url(settings.database_url)} is at revision {current or '(empty)'}, "
            f"not {head_revision()}: run `tinyfleet server migrate` first",
            1,
        )


@ingest_app.command("run")
def run(
    database_url: Annotated[str | None, typer.Option(help="Overrides TINYFLEET_DATABASE_URL.")] = None,
    mqtt_host: Annotated[str | None, typer.Option(help="Overrides TINYFLEET_MQTT_HOST.")] = None,
    mqtt_port: Annotated[int | None, typer.Option(help="Overrides TINYFLEET_MQTT_PORT.")] = None,
    group: Annotated[str, typer.Option(help="Shared-subscription group (all workers: the same).")] = (
        "tinyfleet-ingest"
    ),
    client_id: Annotated[
        str | None,
        typer.Option(help="Stable MQTT client id, unique per worker (default: tinyfleet-ingest-<host>)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Commit after this many messages...")] = 1000,
    batch_delay: Annotated[float, typer.Option(help="...or after this many seconds.")] = 0.05,
    stats_interval: Annotated[float, typer.Option(help="Seconds between progress lines; 0: none.")] = 10.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the final counts as JSON.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Serve this worker's Prometheus metrics (ingest rate, dead letters by reason, commit "
            "failures) on http://<metrics-host>:PORT/metrics. Each process has its own registry.",
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "127.0.0.1",
) -> None:
    """Run one ingest worker until SIGINT/SIGTERM; several workers with the same group split the load."""
    from pydantic import ValidationError

    from fleet_server.ingest.config import IngestConfig
    from fleet_server.ingest.worker import BrokerAddress, IngestWorker

    settings = _settings(database_url=database_url, mqtt_host=mqtt_host, mqtt_port=mqtt_port)
    try:
        opts: dict[str, Any] = {"group": group, "batch_size": batch_size, "batch_delay_s": batch_delay}
        if client_id is not None:
            opts["client_id"] = client_id
        config = IngestConfig(**opts)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        raise _fail(f"invalid option {where}: {first['msg']}", 2) from None
    engine = _engine(settings)
    _require_schema(engine, settings)
    password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
    broker = BrokerAddress(settings.mqtt_host, settings.mqtt_port, settings.mqtt_username, password)
    worker = IngestWorker(engine, broker, config)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        try:
            start_http_server(metrics_port, addr=metrics_host, registry=worker.metrics.registry)
        except OSError as exc:
            where = f"{metrics_host}:{metrics_port}"
            raise _fail(f"cannot serve metrics on {where}: {exc.strerror or exc}", 2) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    err = Console(stderr=True)
    threading.Thread(target=_announce, args=(worker, config, err), daemon=True).start()
    if stats_interval > 0:
        threading.Thread(target=_progress, args=(worker, stop, stats_interval, err), daemon=True).start()
    try:
        stats = worker.run(stop)
    except ConnectionError as exc:
        raise _fail(str(exc), 1) from None
    finally:
        engine.dispose()
    if json_output:
        typer.echo(json.dumps(stats.as_dict()))
        return
    table = Table(title=f"ingest worker {config.client_id}")
    for key in ("received", "acked", "stored", "duplicates", "dead_lettered", "batches", "commit_failures"):
        table.add_column(key, justify="right")
    d = stats.as_dict()
    table.add_row(
        *(
            str(d[k])
            for k in (
                "received",
                "acked",
                "stored",
                "duplicates",
                "dead_lettered",
                "batches",
                "commit_failures",
            )
        )
    )
    Console().print(table)


def _announce(worker: Any, config: Any, console: Console) -> None:
    if worker.wait_subscribed(60):
        # Tests and supervisors wait for this line: messages published before it may go unseen.
        console.print(f"ingest: subscribed as {config.client_id} in group {config.group}", highlight=False)


def _progress(worker: Any, stop: threading.Event, every: float, console: Console) -> None:
    last, last_t = 0, time.monotonic()
    while not stop.wait(every):
        s = worker.stats
        now = time.monotonic()
        rate = (s.acked - last) / (now - last_t)
        last, last_t = s.acked, now
        console.log(
            f"acked {s.acked}  stored {s.stored}  duplicates {s.duplicates}  dead-lettered "
            f"{s.dead_lettered}  commit failures {s.commit_failures}  ({rate:,.0f} msg/s)",
            highlight=False,
        )


@broker_app.command("config")
def config(
    out: Annotated[Path, typer.Option(help="Directory for passwd, acl and mosquitto.conf.")],
    server_user: Annotated[str, typer.Option(help="MQTT user of the ingest workers / command sender.")] = (
        "tinyfleet-server"
    ),
    database_url: Annotated[str | None, typer.Option(help="Overrides TINYFLEET_DATABASE_URL.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Write the Mosquitto password file and ACL from the devices table (server password:
    TINYFLEET_MQTT_PASSWORD)."""
    from sqlalchemy.exc import SQLAlchemyError

    from fleet_server.broker_config import BrokerConfigError, write_broker_config
    from fleet_server.db import make_session_factory

    settings = _settings(database_url=database_url)
    if settings.mqtt_password is None or not settings.mqtt_password.get_secret_value():
        raise _fail("set TINYFLEET_MQTT_PASSWORD: the server user's MQTT password", 2)
    if out.exists() and not out.is_dir():
        raise _fail(f"--out {out} exists and is not a directory", 2)
    engine = _engine(settings)
    _require_schema(engine, settings)
    try:
        with make_session_factory(engine)() as session:
            files = write_broker_config(
                session,
                out,
                server_user=server_user,
                server_password=settings.mqtt_password.get_secret_value(),
                iterations=settings.device_credential_iterations,
            )
    except BrokerConfigError as exc:
        raise _fail(str(exc), 2) from None
    except SQLAlchemyError as exc:
        raise _fail(f"database {_safe_url(settings.database_url)}: {type(exc).__name__}", 1) from None
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc.strerror}", 1) from None
    finally:
        engine.dispose()
    result = {
        "out": str(out),
        "devices": files.devices,
        "server_user": server_user,
        "files": ["passwd", "acl", "mosquitto.conf"],
    }
    if json_output:
        typer.echo(json.dumps(result))
        return
    table = Table(title="broker configuration")
    table.add_column("file")
    table.add_column("what")
    table.add_row(str(out / "passwd"), f"{files.devices} devices + {server_user} ($7$ PBKDF2-SHA512)")
    table.add_row(str(out / "acl"), "devices: own subtree only; server: read telemetry, write cmd")
    table.add_row(str(out / "mosquitto.conf"), "include in the broker config")
    Console().print(table)


if __name__ == "__main__":  # `python -m fleet_server.cli.ingest_commands ingest run ...` (tests, bench)
    _main = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
    _main.add_typer(ingest_app, name="ingest")
    _main.add_typer(broker_app, name="broker")
    _main()
