"""`tinyfleet rollout start|list|status|pause|resume|abort|rollback` over the REST API, and
`tinyfleet rollouts run` (the rollout runner as its own process, next to or instead of the one inside
`tinyfleet server run`).

``status --watch`` redraws a Rich Live view from the API until the rollout reaches a terminal state
(rolled back, aborted, or completed with nothing left to send). Exit codes: 0 done, 1 refused by the API,
3 server unreachable, 2 bad arguments.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from fleet_server.cli.api_client import ApiClient, JsonOpt, ServerOpt, TokenOpt, console, emit, fail, table_of

rollout_app = typer.Typer(
    name="rollout", help="Staged rollouts of releases to the fleet.", no_args_is_help=True
)
rollouts_app = typer.Typer(name="rollouts", help="The rollout runner process.", no_args_is_help=True)

LIST_COLUMNS = ["id", "release_id", "status", "stage_name", "exposed", "created_by", "created_at"]
VERDICT_STYLE = {"pass": "green", "soft_fail": "yellow", "hard_fail": "bold red", "insufficient_data": "dim"}
DONE = {"rolled_back", "aborted"}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_status(ro: dict[str, Any]) -> Group:
    """The rollout as tables: summary, stage, cohort sizes, gates (value vs threshold), exposure."""
    stage = ro["stage"]
    head = Table(title=f"rollout {ro['id']}  ({ro['release_id']} <- {ro['previous_release_id'] or '-'})")
    for col in ("status", "stage", "soaked", "exposed", "paused_by"):
        head.add_column(col)
    head.add_row(
        ro["status"] + (" (finished)" if ro["finished"] else ""),
        f"{stage['index'] + 1}/{ro['stages']} {stage['name']} ({stage['kind']}, {stage['fraction']:.0%})",
        f"{stage['soaked_s']:.0f} / {stage['min_soak_s']} s",
        str(ro["exposure"]["ever_exposed"]),
        ro["paused_by"] or "-",
    )
    cohort = ro["cohort"] or {}
    sizes = Table(title="cohort")
    keys = ["eligible", "control", "target", "commanded", "reporting", "pending", "reverted"]
    for k in keys:
        sizes.add_column(k)
    sizes.add_row(*(_fmt(cohort.get(k)) for k in keys))
    gates = Table(title="gates")
    for col in ("gate", "verdict", "value", "threshold", "reason"):
        gates.add_column(col)
    for g in ro["gates"]:
        gates.add_row(
            g["name"],
            Text(g["verdict"], style=VERDICT_STYLE.get(g["verdict"], "")),
            _fmt(g["value"]),
            _fmt(g["threshold"]),
            g["reason"],
        )
    parts: list[Any] = [head, sizes, gates]
    n = ro.get("required_sample_size")
    if n:
        parts.append(
            Text(
                f"false-positive test: {_fmt(n['cohort_n'])} / {_fmt(n['control_n'])} trials "
                "(cohort / control), "
                f"{_fmt(n['n_required'])} needed per group"
                + (" - enough evidence" if n["enough_evidence"] else "")
            )
        )
    exp = ro["exposure"]
    if ro["status"] == "rolled_back":
        ttr = exp.get("time_to_recovery_s")
        parts.append(
            Text(
                f"rollback: {exp['reverted']} commanded back, {exp['still_on_candidate_count']} still on the "
                f"candidate, {exp['unknown_count']} unknown"
                + (f"; recovered after {ttr:.1f} s" if ttr is not None else "")
            )
        )
    return Group(*parts)


def _terminal(ro: dict[str, Any]) -> bool:
    return ro["status"] in DONE or (ro["status"] == "completed" and ro["finished"])


@rollout_app.command("start")
def start(
    release_id: Annotated[str, typer.Argument(help="Release to roll out, e.g. kws-7.")],
    previous: Annotated[str | None, typer.Option("--previous", help="Release a rollback returns to.")] = None,
    hardware_class: Annotated[
        list[str] | None, typer.Option("--hardware-class", help="Target class (repeatable; default: all).")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="key=value or key the device must carry.")
    ] = None,
    shadow: Annotated[bool, typer.Option("--shadow", help="Start with a shadow stage.")] = False,
    min_soak_s: Annotated[
        int | None, typer.Option("--min-soak-s", min=0, help="Soak time per stage.")
    ] = None,
    plan: Annotated[
        Path | None,
        typer.Option("--plan", help="JSON file with stages / gates / control / schedule (the API's fields)."),
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a staged rollout (default plan: canary 1 % -> 10 % -> 50 % -> 100 %)."""
    body: dict[str, Any] = {
        "release_id": release_id,
        "target": {"hardware_classes": hardware_class or [], "tags": tag or []},
    }
    if plan is not None:
        try:
            extra = json.loads(plan.read_text())
        except (OSError, ValueError) as exc:
            raise fail(f"cannot read plan {plan}: {exc}", 2) from None
        if not isinstance(extra, dict):
            raise fail(f"plan {plan} must hold a JSON object", 2)
        body.update(extra)
    if previous is not None:
        body["previous_release_id"] = previous
    if shadow:
        body["shadow"] = True
    if min_soak_s is not None:
        body["min_soak_s"] = min_soak_s
    with ApiClient.connect(server, token) as api:
        ro = api.post("/api/v1/rollouts", json=body)
    emit(ro, as_json, lambda: render_status(ro))


@rollout_app.command("list")
def list_rollouts(
    status: Annotated[
        str | None, typer.Option(help="running | paused | completed | rolled_back | aborted")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rollouts, newest first."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if status:
        params["status"] = status
    with ApiClient.connect(server, token) as api:
        page = api.get("/api/v1/rollouts", params=params)
    emit(page, as_json, lambda: table_of(page["items"], LIST_COLUMNS, title=f"rollouts ({page['total']})"))


@rollout_app.command("status")
def status(
    rollout_id: Annotated[str, typer.Argument()],
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until the rollout ends.")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes.")] = 2.0,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stage, cohort sizes, every gate's value vs threshold, exposure; --watch for live progress."""
    with ApiClient.connect(server, token) as api:
        ro = api.get(f"/api/v1/rollouts/{rollout_id}")
        if not watch:
            emit(ro, as_json, lambda: render_status(ro))
            return
        if as_json:  # one JSON line per refresh, for scripts
            while True:
                typer.echo(json.dumps(ro, default=str))
                if _terminal(ro):
                    return
                time.sleep(interval)
                ro = api.get(f"/api/v1/rollouts/{rollout_id}")
        from rich.live import Live

        with Live(render_status(ro), console=console(), refresh_per_second=4) as live:
            while not _terminal(ro):
                time.sleep(interval)
                ro = api.get(f"/api/v1/rollouts/{rollout_id}")
                live.update(render_status(ro))


def _act(
    action: str,
    rollout_id: str,
    reason: str,
    server: str | None,
    token: str | None,
    as_json: bool,
    **extra: Any,
) -> None:
    with ApiClient.connect(server, token) as api:
        ro = api.post(f"/api/v1/rollouts/{rollout_id}/{action}", json={"reason": reason, **extra})
    emit(ro, as_json, lambda: render_status(ro))


ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (stored with the decision).")]


_PLAIN_ACTION_HELP = {
    "pause": "Stop advancing and commanding; gates are still evaluated (a hard failure still rolls back).",
    "abort": "Stop for good; devices keep what they run.",
    "rollback": (
        "Send every exposed device back to the previous version (revert now, re-target if it has not)."
    ),
}


def _plain_action(action: str) -> Callable[..., None]:
    # pause / abort / rollback take the same options (resume has one more): one command body for them.
    def command(
        rollout_id: str,
        reason: ReasonOpt = "",
        server: ServerOpt = None,
        token: TokenOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        _act(action, rollout_id, reason, server, token, as_json)

    command.__name__ = command.__qualname__ = action
    command.__doc__ = _PLAIN_ACTION_HELP[action]
    return command


def resume(
    rollout_id: str,
    reason: ReasonOpt = "",
    override_soft_failures: Annotated[
        bool, typer.Option("--override-soft-failures", help="Accept this stage's soft gate failures.")
    ] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Continue a paused rollout."""
    _act("resume", rollout_id, reason, server, token, as_json, override_soft_failures=override_soft_failures)


# Registered in this order (the order of ``rollout --help``).
rollout_app.command("pause")(_plain_action("pause"))
rollout_app.command("resume")(resume)
rollout_app.command("abort")(_plain_action("abort"))
rollout_app.command("rollback")(_plain_action("rollback"))


@rollouts_app.command("run")
def run(
    tick_s: Annotated[
        float | None, typer.Option(help="Seconds between ticks (TINYFLEET_ROLLOUT_TICK_S).")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="One tick, print what it did, exit.")] = False,
) -> None:
    """Run the rollout runner (database and broker from TINYFLEET_* settings). Several may run against one
    PostgreSQL: exactly one leads (advisory lock), the others take over when it stops."""
    import logging
    import signal
    import threading

    from fleet_server.cli.server_commands import _engine, _settings
    from fleet_server.rollout_runner.runner import build_runner

    settings = _settings(rollout_tick_s=tick_s)
    engine = _engine(settings)
    runner = build_runner(settings, engine)
    err = console()
    try:
        if once:
            report = runner.tick()
            typer.echo(
                json.dumps(
                    {
                        "leading": report.leading,
                        "rollouts": report.rollouts,
                        "decisions": report.decisions,
                        "commands": report.commands,
                        "sent": report.drained.sent,
                        "errors": report.errors,
                    }
                )
            )
            return
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        err.print(f"rollout runner: tick every {settings.rollout_tick_s} s (Ctrl-C to stop)", highlight=False)
        runner.run(stop)
    finally:
        runner.stop()
        runner.leader.release()
        engine.dispose()
