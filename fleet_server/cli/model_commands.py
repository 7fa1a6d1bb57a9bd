"""`tinyfleet model ...`: convert a Keras model into a validated artifact directory.

TensorFlow is imported only inside the command (through converters.pipeline), so `tinyfleet --help`
and the other command groups stay fast. Exit codes: 0 converted; 2 bad input (files, arrays, model,
existing output directory); 1 the model converted but cannot be deployed (op TFLM lacks, fits no
hardware class, converter failure).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fleet_server.catalog.inputs import InputFileError, eval_arrays, load_array

model_app = typer.Typer(
    help="Convert Keras models into TFLite / TFLite Micro artifacts with a validation report.",
    no_args_is_help=True,
)

_err = Console(stderr=True)


def _fail(message: str, code: int) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


# Shared with the server's conversion job (uploads): one reader, one set of messages.
CliInputError = InputFileError
_load_array = load_array
_eval_arrays = eval_arrays


@contextlib.contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
    """Route fd 1 to fd 2 (C++ logs included) so that --json leaves only the JSON on stdout."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@model_app.command()
def convert(
    model_path: Annotated[Path, typer.Argument(help="Keras model file (.keras).")],
    calibration: Annotated[Path, typer.Option(help="Representative inputs: .npy, or .npz with key 'x'.")],
    name: Annotated[str, typer.Option(help="Model name (also names the TFLM C array).")],
    version: Annotated[str, typer.Option(help="Model version, e.g. 1.2.0.")],
    out: Annotated[Path, typer.Option(help="Artifact directory to create.")],
    eval_npz: Annotated[
        Path | None, typer.Option("--eval", help="Evaluation .npz with arrays x and y.")
    ] = None,
    eval_x: Annotated[Path | None, typer.Option(help="Evaluation inputs .npy (float32).")] = None,
    eval_y: Annotated[Path | None, typer.Option(help="Evaluation labels .npy (integer class ids).")] = None,
    max_drop_pp: Annotated[float, typer.Option(help="Reject variants losing more accuracy (pp).")] = 1.0,
    class_names: Annotated[str | None, typer.Option(help="Comma-separated class names.")] = None,
    positive_classes: Annotated[str | None, typer.Option(help="Comma-separated positive class ids.")] = None,
    profiles: Annotated[
        str | None, typer.Option(help="Comma-separated hardware classes (default all).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for golden/TFLM subsets and Keras.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print only the report JSON.")] = False,
) -> None:
    """Convert MODEL_PATH into float32/float16/dynamic-int8/full-int8 TFLite, a TFLM C array and a report."""
    from pydantic import ValidationError

    from converters.config import ConversionConfig, TaskInfo
    from converters.errors import (
        ConversionError,
        NoHardwareFitError,
        TflmProbeError,
        UnsupportedOpError,
        VariantBuildError,
    )

    try:
        if not model_path.is_file():
            raise CliInputError(f"model file {model_path} does not exist")
        calib = _load_array(calibration, "calibration", ("x", "calibration"))
        x, y = _eval_arrays(eval_npz, eval_x, eval_y)
        config = ConversionConfig(
            max_accuracy_drop_pp=max_drop_pp,
            seed=seed,
            overwrite=overwrite,
            profiles=tuple(_csv(profiles)) if profiles else None,
        )
        task = None
        if positive_classes and not class_names:
            raise CliInputError("--positive-classes needs --class-names (one name per model output)")
        if class_names or positive_classes:
            ids = [int(v) for v in _csv(positive_classes) or []]
            task = TaskInfo(class_names=_csv(class_names) or [], positive_class_ids=ids)
    except CliInputError as exc:
        raise _fail(str(exc), 2) from None
    except (ValidationError, ValueError) as exc:
        first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise _fail(f"invalid option: {first}", 2) from None

    from converters.pipeline import convert_model

    # The model itself cannot be deployed -> 1; everything else is something wrong with the input -> 2.
    undeployable = (UnsupportedOpError, NoHardwareFitError, VariantBuildError, TflmProbeError)
    try:
        with _stdout_to_stderr(json_output), _progress(json_output) as on_progress:
            report = convert_model(
                model_path,
                calib,
                x,
                y,
                name=name,
                version=version,
                out_dir=out,
                config=config,
                task=task,
                progress=on_progress,
            )
    except undeployable as exc:
        raise _fail(f"{type(exc).__name__}: {exc}", 1) from None
    except ConversionError as exc:
        raise _fail(str(exc), 2) from None

    if json_output:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
        sys.stdout.flush()
        return
    _summary(report, out)


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[Any]:
    console = _err
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet and not console.is_terminal,
    ) as progress:
        task_id = progress.add_task("converting", total=1.0)

        def on_progress(stage: str, fraction: float) -> None:
            progress.update(task_id, description=stage, completed=fraction)

        yield on_progress


def _summary(report: Any, out: Path) -> None:
    # Piped output gets a fixed wide layout instead of Rich's 80-column default.
    console = Console(width=None if sys.stdout.isatty() else 150)
    table = Table(title=f"{report.name} {report.version} → {out}")
    for column, justify in (
        ("variant", "left"),
        ("bytes", "right"),
        ("accuracy", "right"),
        ("Δpp", "right"),
        ("RAM B", "right"),
        ("TFLM arena B", "right"),
        ("warm-up / steady µs", "right"),
        ("status", "left"),
        ("fits (* = default)", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    reasons = []
    for variant, v in report.variants.items():
        fits = [p for p, f in report.hardware_fit.items() if variant in f.fitting_variants]
        defaults = {p for p, f in report.hardware_fit.items() if f.default_variant == variant}
        arena = "-"
        if variant == "full_int8" and report.tflm and report.tflm.arena_bytes is not None:
            arena = f"{report.tflm.arena_bytes:,}"
        if v.status == "rejected":
            reasons.append(f"{variant}: {v.rejection_reason}")
        table.add_row(
            variant,
            f"{v.bytes:,}",
            f"{v.accuracy:.2%}",
            f"{v.accuracy_delta_pp:+.2f}",
            f"{v.ram_bytes:,}",
            arena,
            f"{v.latency_warmup_us:.0f} / {v.latency_steady_us:.0f}",
            "[green]accepted[/]" if v.status == "accepted" else "[red]rejected[/]",
            ", ".join(f"{p}*" if p in defaults else p for p in fits) or "-",
        )
    console.print(table)
    for reason in reasons:
        console.print(f"[red]rejected[/] {reason}", highlight=False)
    if report.tflm is not None and report.tflm.accuracy is not None:
        console.print(
            f"TFLM: arena {report.tflm.arena_bytes:,} B (exact to {report.tflm.arena_granularity_bytes} B), "
            f"accuracy {report.tflm.accuracy:.2%} on {report.tflm.eval_samples} samples, "
            f"top-1 agreement with LiteRT {report.tflm.agreement_with_litert:.2%}",
            highlight=False,
        )
