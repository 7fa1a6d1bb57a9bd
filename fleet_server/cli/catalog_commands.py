"""`tinyfleet model upload|list|versions|show|job|retry` over the REST API, and `tinyfleet worker run`.

The REST commands join the local `model convert|reference` commands in the same `model` group
(registered in cli/main.py). `upload` creates the model when missing, sends the files, then follows
the conversion job with a Rich progress bar (``--no-wait`` returns at once). Exit codes: 0 done,
1 refused by the API or the job failed, 3 server unreachable, 2 bad arguments.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fleet_server.cli.api_client import (
    DEFAULT_SERVER,
    ApiClient,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    emit,
    fail,
    table_of,
)

worker_app = typer.Typer(name="worker", help="Conversion job workers.", no_args_is_help=True)
_err = Console(stderr=True)
FINAL_STATES = ("succeeded", "failed", "cancelled")


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _options(
    class_names: str | None,
    positive_classes: str | None,
    max_drop_pp: float | None,
    profiles: str | None,
    variants: str | None,
    seed: int | None,
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if positive_classes and not class_names:
        raise fail("--positive-classes needs --class-names (one name per model output)", 2)
    if class_names:
        try:
            ids = [int(v) for v in _csv(positive_classes) or []]
        except ValueError:
            raise fail("--positive-classes must be comma-separated integers", 2) from None
        options["task"] = {"class_names": _csv(class_names), "positive_class_ids": ids}
    if max_drop_pp is not None:
        options["max_accuracy_drop_pp"] = max_drop_pp
    if profiles:
        options["profiles"] = _csv(profiles)
    if variants:
        options["variants"] = _csv(variants)
    if seed is not None:
        options["seed"] = seed
    return options


def _ensure_model(api: ApiClient, name: str, description: str) -> None:
    """Create the model unless it exists (409 from the API means it does)."""
    api.post("/api/v1/models", json={"name": name, "description": description}, ok_statuses=(409,))


def follow_job(api: ApiClient, job_id: int, *, quiet: bool, timeout_s: float, interval_s: float = 0.5) -> Any:
    """Poll the job until it ends, drawing a progress bar on stderr; returns the final job JSON."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + timeout_s
    with Progress(
        TextColumn("[bold]job {task.fields[job]}[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
        disable=quiet,
    ) as progress:
        task = progress.add_task("queued", total=1.0, job=job_id)
        while True:
            job = api.get(f"/api/v1/jobs/{job_id}")
            progress.update(task, description=f"{job['state']}: {job['stage']}", completed=job["progress"])
            if job["state"] in FINAL_STATES:
                return job
            if time.monotonic() > deadline:
                raise fail(f"job {job_id} still {job['state']} after {timeout_s:.0f} s (it keeps running)", 1)
            time.sleep(interval_s)


def _variants_table(summary: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    for column in ("variant", "bytes", "accuracy", "Δpp", "RAM B", "steady µs", "status"):
        table.add_column(column, justify="left" if column in ("variant", "status") else "right")
    for name, v in (summary.get("variants") or {}).items():
        table.add_row(
            name,
            f"{v['bytes']:,}",
            f"{v['accuracy']:.2%}",
            f"{v['accuracy_delta_pp']:+.2f}",
            f"{v['ram_bytes']:,}",
            f"{v['latency_steady_us']:.0f}",
            "[green]accepted[/]"
            if v["status"] == "accepted"
            else f"[red]rejected[/] {v['rejection_reason']}",
        )
    return table


def _job_failed(job: dict[str, Any]) -> typer.Exit:
    return fail(f"job {job['id']} {job['state']}: {job.get('error') or 'no error recorded'}", 1)


def upload_command(
    name: Annotated[str, typer.Argument(help="Model name (created when missing).")],
    version: Annotated[str, typer.Argument(help="New version, e.g. 1.2.0.")],
    model_path: Annotated[Path, typer.Option("--model", help="Keras model file (.keras).")],
    calibration: Annotated[Path, typer.Option(help="Representative inputs: .npy, or .npz with key 'x'.")],
    eval_npz: Annotated[Path, typer.Option("--eval", help="Evaluation .npz with arrays x and y.")],
    class_names: Annotated[str | None, typer.Option(help="Comma-separated class names.")] = None,
    positive_classes: Annotated[str | None, typer.Option(help="Comma-separated positive class ids.")] = None,
    max_drop_pp: Annotated[
        float | None, typer.Option(help="Reject variants losing more accuracy (pp).")
    ] = None,
    profiles: Annotated[str | None, typer.Option(help="Comma-separated hardware classes.")] = None,
    variants: Annotated[str | None, typer.Option(help="Comma-separated variants to build.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for golden/TFLM subsets and Keras.")] = None,
    description: Annotated[str, typer.Option(help="Description if the model is created.")] = "",
    wait: Annotated[bool, typer.Option(help="Follow the conversion job until it ends.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the job.")] = 3600.0,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a Keras model with calibration and evaluation data; the server converts it in a job."""
    for what, path in (("model", model_path), ("calibration", calibration), ("evaluation", eval_npz)):
        if not path.is_file():
            raise fail(f"{what} file {path} does not exist", 2)
    options = _options(class_names, positive_classes, max_drop_pp, profiles, variants, seed)
    # Uploads can be large: a longer timeout than the client's default.
    with ApiClient(server or DEFAULT_SERVER, token, timeout_s=600.0) as api:
        _ensure_model(api, name, description)
        with model_path.open("rb") as m, calibration.open("rb") as c, eval_npz.open("rb") as e:
            submitted = api.post(
                f"/api/v1/models/{name}/versions",
                data={"version": version, "options": json.dumps(options)},
                files={
                    "model": (model_path.name, m, "application/octet-stream"),
                    "calibration": (calibration.name, c, "application/octet-stream"),
                    "evaluation": (eval_npz.name, e, "application/octet-stream"),
                },
            )
        job = submitted["job"]
        if not wait:
            emit(submitted, as_json, lambda: f"{name} {version}: queued as job {job['id']}")
            return
        job = follow_job(api, job["id"], quiet=as_json, timeout_s=timeout)
        detail = api.get(f"/api/v1/models/{name}/versions/{version}")
    if job["state"] != "succeeded":
        if as_json:
            emit(detail, True)
        raise _job_failed(job)
    emit(detail, as_json, lambda: _variants_table(detail["summary"], f"{name} {version} (job {job['id']})"))


def list_command(server: ServerOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Models in the catalog."""
    with ApiClient.connect(server, token) as api:
        page = api.get_all("/api/v1/models")
    emit(
        page, as_json, lambda: table_of(page["items"], ["name", "version_count", "description", "created_at"])
    )


def versions_command(
    name: Annotated[str, typer.Argument(help="Model name.")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Versions of a model with their status and accuracy."""
    with ApiClient.connect(server, token) as api:
        page = api.get_all(f"/api/v1/models/{name}/versions")

    def render() -> Table:
        rows = []
        for v in page["items"]:
            summary = v.get("summary") or {}
            full = (summary.get("variants") or {}).get("full_int8") or {}
            job = v.get("job") or {}
            rows.append(
                {
                    "version": v["version"],
                    "status": v["status"],
                    "float acc": f"{summary['float_accuracy']:.2%}" if summary else None,
                    "full_int8 acc": f"{full['accuracy']:.2%}" if full else None,
                    "job": job.get("id"),
                    "created": v["created_at"],
                }
            )
        return table_of(
            rows, ["version", "status", "float acc", "full_int8 acc", "job", "created"], title=name
        )

    emit(page, as_json, render)


def show_command(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version.")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One version: status, variants (accuracy, size, RAM, latency), artifacts, latest job."""
    with ApiClient.connect(server, token) as api:
        detail = api.get(f"/api/v1/models/{name}/versions/{version}")

    def render() -> None:
        out = Console()
        job = detail.get("job") or {}
        out.print(
            f"{name} {version}: [bold]{detail['status']}[/] (job {job.get('id')}, {job.get('stage')})",
            highlight=False,
        )
        if job.get("error"):
            out.print(f"[red]error:[/] {job['error']}", highlight=False)
        if detail.get("summary"):
            out.print(_variants_table(detail["summary"], "variants"))
            out.print(table_of(detail["artifacts"], ["path", "bytes", "sha256"], title="artifacts"))

    emit(detail, as_json, render)


def job_command(
    job_id: Annotated[int, typer.Argument(help="Conversion job id.")],
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 3600.0,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A conversion job's state, progress, stage and error (--wait follows it)."""
    with ApiClient.connect(server, token) as api:
        job = (
            follow_job(api, job_id, quiet=as_json, timeout_s=timeout)
            if wait
            else api.get(f"/api/v1/jobs/{job_id}")
        )
    columns = ["id", "model", "version", "state", "progress", "stage", "attempts", "error"]
    emit(job, as_json, lambda: table_of([job], columns))
    if wait and job["state"] != "succeeded":
        raise _job_failed(job)


def retry_command(
    job_id: Annotated[int, typer.Argument(help="The failed job.")],
    wait: Annotated[bool, typer.Option(help="Follow the new job until it ends.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 3600.0,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a failed conversion again as a new job."""
    with ApiClient.connect(server, token) as api:
        job = api.post(f"/api/v1/jobs/{job_id}/retry")
        if wait:
            job = follow_job(api, job["id"], quiet=as_json, timeout_s=timeout)
    emit(job, as_json, lambda: table_of([job], ["id", "model", "version", "state", "stage", "retry_of_id"]))
    if wait and job["state"] != "succeeded":
        raise _job_failed(job)


@worker_app.command("run")
def worker_run(
    queue: Annotated[str | None, typer.Option(help="local or rq (default TINYFLEET_JOB_QUEUE).")] = None,
    burst: Annotated[bool, typer.Option(help="Exit when no job is queued.")] = False,
    max_jobs: Annotated[int | None, typer.Option(help="Exit after this many jobs.")] = None,
) -> None:
    """Run a conversion worker (settings from TINYFLEET_*; TensorFlow loads here, not in the API)."""
    if queue not in (None, "local", "rq"):
        raise fail(f"--queue must be local or rq, not {queue!r}", 2)
    from fleet_server.catalog.worker import main
    from fleet_server.cli.server_commands import _settings

    _settings()  # a bad TINYFLEET_* value: one clear line, exit 2
    args = [*(["--queue", queue] if queue else []), *(["--burst"] if burst else [])]
    args += ["--max-jobs", str(max_jobs)] if max_jobs is not None else []
    raise typer.Exit(main(args))
