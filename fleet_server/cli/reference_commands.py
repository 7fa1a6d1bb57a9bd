"""`tinyfleet model reference`: build the reference fallback chains, and the Rich tables that show them.

The lead wires ``reference_command`` into the ``model`` group; ``tinyfleet demo`` reuses the builder
and the tables. TensorFlow is imported only inside the build, so ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from converters.reference.chain import ChainReport

KNOWN_TASKS: tuple[str, ...] = ("kws", "digits")
BUILD_LOG = "reference-build.log"


class ReferenceInputError(ValueError):
    """Bad command-line input: exit code 2, nothing built."""


def resolve_tasks(task: str) -> list[str]:
    if task == "all":
        return list(KNOWN_TASKS)
    if task not in KNOWN_TASKS:
        raise ReferenceInputError(f"unknown task {task!r}; choose one of: {', '.join((*KNOWN_TASKS, 'all'))}")
    return [task]


def check_outputs(out: Path, tasks: list[str], overwrite: bool) -> None:
    """Refuse before any work when a chain directory already holds something and overwrite is off."""
    if out.exists() and not out.is_dir():
        raise ReferenceInputError(f"--out {out} exists and is not a directory")
    for task in tasks:
        target = out / task
        if target.exists() and not target.is_dir():
            raise ReferenceInputError(f"{target} exists and is not a directory")
        if target.is_dir() and any(target.iterdir()) and not overwrite:
            raise ReferenceInputError(f"{target} already exists; pass --overwrite to replace it")


@contextlib.contextmanager
def stderr_to_file(path: Path) -> Iterator[None]:
    """Send fd 2 (TensorFlow's C++ logging, converter chatter) to a log file while chains build."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def build_chains(
    tasks: list[str], out: Path, *, overwrite: bool, console: Console | None, seed: int = 0
) -> dict[str, ChainReport]:
    """Build each task's chain into out/<task>; a Rich progress bar on ``console`` unless None."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # same trained weights as `make` and the tests
    from converters.reference.chain import build_reference_chain

    reports: dict[str, ChainReport] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with (
        Progress(*columns, console=console, disable=console is None, transient=False) as bar,
        stderr_to_file(out / BUILD_LOG),
        contextlib.redirect_stdout(sys.stderr),  # keep stdout for the tables / JSON only
    ):
        for task in tasks:
            handle = bar.add_task(f"{task}: starting", total=1.0)

            def update(description: str, fraction: float, _handle: int = handle) -> None:
                bar.update(_handle, description=description, completed=min(max(fraction, 0.0), 1.0))

            reports[task] = build_reference_chain(
                task,  # type: ignore[arg-type]
                out / task,
                seed=seed,
                progress=update,
                overwrite=overwrite,
            )
    return reports


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def variant_table(report: ChainReport, chain_dir: Path) -> Table:
    """Per model and variant: bytes, accuracy, Δ vs float, arena, latency, status (from each report.json)."""
    from converters.report import ConversionReport

    table = Table(title=f"{report.task}: fallback chain v{report.version} (rank 0 = primary)")
    for col in (
        "rank",
        "model",
        "variant",
        "bytes",
        "accuracy",
        "Δ pp",
        "TFLM arena",
        "latency µs",
        "status",
    ):
        table.add_column(col, justify="right" if col not in ("model", "variant", "status") else "left")
    for entry in report.entries:
        conv = ConversionReport.read(chain_dir / entry.artifact_dir)
        for i, (name, v) in enumerate(conv.variants.items()):
            arena = entry.tflm_arena_bytes if name == "full_int8" else None
            status = (
                "[green]accepted[/]" if v.status == "accepted" else f"[red]rejected[/] {v.rejection_reason}"
            )
            table.add_row(
                str(entry.rank) if i == 0 else "",
                entry.name if i == 0 else "",
                name,
                f"{v.bytes:,}",
                _pct(v.accuracy),
                f"{v.accuracy_delta_pp:+.2f}",
                f"{arena:,}" if arena is not None else "",
                f"{v.latency_steady_us:.1f}",
                status,
            )
        table.add_section()
    return table


def defaults_table(report: ChainReport) -> Table:
    profiles = sorted({p for e in report.entries for p in e.default_variants})
    table = Table(title=f"{report.task}: default variant per hardware class")
    table.add_column("model")
    table.add_column("cost (µs × arena B)", justify="right")
    for p in profiles:
        table.add_column(p)
    for e in report.entries:
        table.add_row(
            e.name, f"{e.cost:,.0f}", *[e.default_variants.get(p) or "[red]no fit[/]" for p in profiles]
        )
    return table


def stream_table(report: ChainReport) -> Table | None:
    if not any(e.streams for e in report.entries):
        return None
    meta = report.metadata
    table = Table(
        title=f"{report.task}: continuous stream, full_int8 on LiteRT "
        f"(per-model calibrated threshold, suppression {meta.suppression_s} s)"
    )
    cols = ("model", "stream", "threshold", "noise floor dBFS", "keywords", "detections", "false act./h",
            "FRR")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "stream") else "right")
    for e in report.entries:
        for label, m in e.streams.items():
            table.add_row(
                e.name,
                label,
                f"{m.threshold:g}",
                f"{m.noise_dbfs:.0f}",
                str(m.keyword_events),
                str(m.detections),
                f"{m.false_activations_per_hour:.0f}",
                _pct(m.false_rejection_rate),
            )
    return table


def print_chain(console: Console, report: ChainReport, chain_dir: Path) -> None:
    console.print(variant_table(report, chain_dir))
    console.print(defaults_table(report))
    streams = stream_table(report)
    if streams is not None:
        console.print(streams)
    console.print(
        f"chain report: {chain_dir / 'chain.json'}; per-model reports: {chain_dir}/<model>/report.json"
    )


def reference_command(
    task: str = typer.Argument("all", help="Reference task to build: kws, digits or all."),
    out: Path = typer.Option(
        Path("out/reference"), "--out", help="Directory; each chain goes to <out>/<task>."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing chains in <out>/<task>."),
    json_output: bool = typer.Option(False, "--json", help="Print the chain reports as JSON on stdout."),
) -> None:
    """Train, convert and validate the reference fallback chains and report them."""
    err = Console(stderr=True)
    try:
        tasks = resolve_tasks(task)
        check_outputs(out, tasks, overwrite)
    except ReferenceInputError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    from converters.reference.chain import ChainError

    try:
        reports = build_chains(tasks, out, overwrite=overwrite, console=None if json_output else Console())
    except ChainError as exc:
        err.print(f"[red]error:[/] {exc} (log: {out / BUILD_LOG})")
        raise typer.Exit(1) from None
    if json_output:
        payload = {
            t: {"chain_json": str(out / t / "chain.json"), **r.model_dump(mode="json")}
            for t, r in reports.items()
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    console = Console()
    for t, r in reports.items():
        print_chain(console, r, out / t)
