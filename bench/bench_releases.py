"""Releases benchmark: release creation cost on the server, and device download throughput.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/bench_releases.py [--reference out/demo/reference]
        [--repeat 5] [--big-mib 64] [--small-requests 50] [--json out.json]

Needs the reference chains (``make demo`` or ``tinyfleet model reference all --out out/demo/reference``).

1. Create. Per task (kws, digits) the chain's models are registered, in chain order, as successive
   versions 1.0.1, 1.0.2, 1.0.3 of one model (real converter outputs; different architectures, so the
   deltas are computed and then mostly not shipped — bsdiff4's cost is paid either way). Releases 1 and
   2 exist, a device reports 1.0.1: release of 1.0.3 needs deltas from 1.0.1 (in the field) and 1.0.2
   (replaced). Timed: ``fleet_server.releases.service.create_release`` end to end (SQLite, keystore
   with a passphrase, files, rows; each timed release is withdrawn afterwards, untimed, so every run
   sees the same field). Baseline in the same run: ``ota.release.build_release`` alone with the same
   artifact, the same previous artifacts and a preloaded signer. Also: loading the signer (PKCS#8
   decrypt) alone.
2. Download. A TinyFleet server (uvicorn subprocess, SQLite) serves a release of a ``--big-mib`` MiB
   artifact and of the KWS artifact to a provisioned device (HTTP Basic, production KDF iterations).
   Baselines in the same run, same files, same client: ``python -m http.server`` and Starlette
   ``StaticFiles`` on uvicorn (the same HTTP stack without auth and DB). Client: the device's
   ``HttpFetcher`` (urllib, 16 KiB reads). Figures: MB/s of a full and of a resumed (second half, Range)
   download of the big file, and requests/s of full and ranged GETs of the small file. Medians.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _chain_dirs(chain_dir: Path) -> list[Path]:
    """The chain's converted models, smallest float32 artifact first (the released one is the largest)."""
    chain = json.loads((chain_dir / "chain.json").read_text())
    out = [chain_dir / str(e.get("artifact_dir") or e.get("name")) for e in chain["entries"]]
    out = [p for p in out if (p / "report.json").is_file()]
    if len(out) < 3:
        raise SystemExit(f"{chain_dir}: need 3 converted models in the chain, found {len(out)}")
    return sorted(out, key=lambda p: (p / "float32.tflite").stat().st_size)[-3:]


def _register(session: Any, settings: Any, model: str, version: str, source: Path) -> None:
    try:
        from fleet_server.catalog.service import register_converted_version
    except ImportError:
        register_converted_version = None
    if register_converted_version is not None:
        register_converted_version(session, settings, model, version, source)
        return
    from sqlalchemy import select

    from fleet_server.db import MlModel, ModelVersion

    relative = f"models/{model}/{version}"
    shutil.copytree(source, Path(settings.artifact_dir) / relative)
    row = session.scalar(select(MlModel).where(MlModel.name == model))
    if row is None:
        row = MlModel(name=model)
        session.add(row)
        session.flush()
    session.add(ModelVersion(model_id=row.id, version=version, artifact_dir=relative))
    session.commit()


# --------------------------------------------------------------------------------------------- create


def _create_task(
    factory: Any, settings: Any, store: Any, reference: Path, task: str, repeat: int
) -> dict[str, Any]:
    from sqlalchemy import update

    from fleet_server.db import Device
    from fleet_server.db.device_store import provision
    from fleet_server.releases import service
    from ota.release import PreviousArtifact, build_release

    dirs = _chain_dirs(reference / task)
    model = f"{task}-bench"
    versions = [f"1.0.{i + 1}" for i in range(len(dirs))]
    common = {"model_name": model, "variant": "float32", "hardware_classes": ["pi-4"], "actor": "bench"}
    with factory() as s:
        for version, directory in zip(versions, dirs, strict=True):
            _register(s, settings, model, version, directory)
        for version in versions[:2]:
            service.create_release(s, settings, version=version, **common)
        provision(s, device_id=f"{task}-dev", hardware_class="pi-4", tags={}, max_tags=8, iterations=1000)
        device = update(Device).where(Device.id == f"{task}-dev")
        s.execute(device.values(current_model=model, current_version=versions[0]))
        s.commit()
    decisions: list[dict[str, Any]] = []

    def create_once() -> None:
        with factory() as s:
            row = service.create_release(s, settings, version=versions[2], **common)
            decisions[:] = service.delta_decisions(settings, row)
            service.withdraw_release(s, row.id)  # a one-row update (~1 ms): keeps the field the same
            s.commit()

    artifact = (dirs[2] / "float32.tflite").read_bytes()
    previous = [
        PreviousArtifact(version=v, counter=i + 1, data=(d / "float32.tflite").read_bytes())
        for i, (v, d) in enumerate(zip(versions[:2], dirs[:2], strict=True))
    ]
    signer = store.signer()

    def build_once() -> None:
        build_release(
            artifact,
            model=model,
            version=versions[2],
            counter=99,
            hardware_classes=["pi-4"],
            variant="float32",
            signer=signer,
            previous=previous,
        )

    create_times, build_times, signer_times = [], [], []
    for _ in range(repeat):  # interleaved: both see the same machine load
        t0 = time.perf_counter()
        create_once()
        t1 = time.perf_counter()
        build_once()
        t2 = time.perf_counter()
        store.signer()
        t3 = time.perf_counter()
        create_times.append(t1 - t0)
        build_times.append(t2 - t1)
        signer_times.append(t3 - t2)
    create_s, base_s, signer_s = (statistics.median(t) for t in (create_times, build_times, signer_times))
    return {
        "task": task,
        "models": [d.name for d in dirs],
        "artifact_bytes": len(artifact),
        "previous_bytes": [len(p.data) for p in previous],
        "deltas_considered": len(decisions),
        "deltas_shipped": sum(1 for d in decisions if d["shipped"]),
        "create_release_ms": create_s * 1e3,
        "build_release_ms": base_s * 1e3,
        "signer_load_ms": signer_s * 1e3,
        "overhead_ms": (create_s - base_s) * 1e3,
    }


def bench_create(reference: Path, repeat: int, work: Path) -> list[dict[str, Any]]:
    from fleet_server.db import make_engine, make_session_factory
    from fleet_server.db.migrate import upgrade_to_head
    from fleet_server.releases.keystore import Keystore
    from fleet_server.settings import Settings

    settings = Settings(data_dir=work / "create", key_passphrase="bench passphrase")
    settings.ensure_dirs()
    engine = make_engine(settings.database_url)
    upgrade_to_head(engine)
    factory = make_session_factory(engine)
    store = Keystore(settings)
    store.generate()
    rows = [_create_task(factory, settings, store, reference, task, repeat) for task in ("kws", "digits")]
    engine.dispose()
    return rows


# ------------------------------------------------------------------------------------------- download


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _process(args: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    proc = subprocess.Popen(
        args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server did not start: {proc.stderr.read().decode()[-2000:]}"
                    ) from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


TINYFLEET_SERVER = (
    "import uvicorn\n"
    "from fleet_server.api import create_app\n"
    "from fleet_server.settings import Settings\n"
    "import sys\n"
    "uvicorn.run(create_app(Settings()), host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')\n"
)
STATIC_SERVER = (
    "import sys, uvicorn\n"
    "from starlette.applications import Starlette\n"
    "from starlette.staticfiles import StaticFiles\n"
    "app = Starlette()\n"
    "app.mount('/', StaticFiles(directory=sys.argv[2]))\n"
    "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')\n"
)


def _big_version(source: Path, out: Path, mib: int) -> Path:
    """``source``'s converter output with its float32 artifact padded to ``mib`` MiB (report updated)."""
    shutil.copytree(source, out)
    data = (out / "float32.tflite").read_bytes()
    data += bytes(mib * 1024 * 1024 - len(data))
    (out / "float32.tflite").write_bytes(data)
    report = json.loads((out / "report.json").read_text())
    sha = hashlib.sha256(data).hexdigest()
    report["variants"]["float32"].update(bytes=len(data), sha256=sha)
    report["artifacts"]["float32.tflite"] = {"bytes": len(data), "sha256": sha}
    (out / "report.json").write_text(json.dumps(report))
    return out


def bench_download(
    reference: Path, work: Path, repeat: int, big_mib: int, small_requests: int
) -> dict[str, Any]:
    from device_agent.http_download import HttpFetcher, RetryPolicy
    from fleet_server.db import make_engine, make_session_factory
    from fleet_server.db.device_store import provision
    from fleet_server.db.migrate import upgrade_to_head
    from fleet_server.releases import service
    from fleet_server.releases.keystore import Keystore
    from fleet_server.settings import Settings

    data_dir = work / "download"
    settings = Settings(data_dir=data_dir)  # production KDF iterations for the device secret
    settings.ensure_dirs()
    engine = make_engine(settings.database_url)
    upgrade_to_head(engine)
    factory = make_session_factory(engine)
    Keystore(settings).generate()
    kws_dir = _chain_dirs(reference / "kws")[-1]
    big_dir = _big_version(kws_dir, work / "big-src", big_mib)
    with factory() as s:
        _register(s, settings, "kwsdl", "1.0.0", kws_dir)
        _register(s, settings, "bigdl", "1.0.0", big_dir)
        small = service.create_release(
            s,
            settings,
            model_name="kwsdl",
            version="1.0.0",
            variant="float32",
            hardware_classes=["pi-4"],
            actor="b",
        )
        big = service.create_release(
            s,
            settings,
            model_name="bigdl",
            version="1.0.0",
            variant="float32",
            hardware_classes=["pi-4"],
            actor="b",
        )
        secret = provision(
            s, device_id="bench-dev", hardware_class="pi-4", tags={}, max_tags=8,
            iterations=settings.device_credential_iterations,
        ).secret  # fmt: skip
        s.commit()
    engine.dispose()
    static = work / "static"
    static.mkdir()
    shutil.copy(service.store_path(settings, small.artifact_path), static / "small.bin")
    shutil.copy(service.store_path(settings, big.artifact_path), static / "big.bin")
    sizes = {"small": small.artifact_length, "big": big.artifact_length}
    shas = {"small": small.artifact_sha256, "big": big.artifact_sha256}

    def fetcher() -> HttpFetcher:
        return HttpFetcher(
            credentials=("bench-dev", secret), retry=RetryPolicy(attempts=3, backoff_s=0.1, timeout_s=10)
        )

    def get(f: HttpFetcher, url: str, offset: int) -> bytes:
        return b"".join(f.source(url)(offset))

    def timed(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def check(urls: dict[str, str]) -> bool:
        """Correct bytes from every server; False when it ignores Range (a resume starts over)."""
        from device_agent.http_download import RangeIgnored

        f = fetcher()
        assert hashlib.sha256(get(f, urls["big"], 0)).hexdigest() == shas["big"]
        assert hashlib.sha256(get(f, urls["small"], 0)).hexdigest() == shas["small"]
        try:
            return get(f, urls["small"], 100) == get(f, urls["small"], 0)[100:]
        except RangeIgnored:
            return False

    def one_round(urls: dict[str, str], ranges: bool, samples: dict[str, list[float]]) -> None:
        f = fetcher()
        half, small_half = sizes["big"] // 2, sizes["small"] // 2
        samples["big_full"].append(timed(lambda: get(f, urls["big"], 0)))
        for _ in range(small_requests):
            samples["small_full"].append(timed(lambda: get(f, urls["small"], 0)))
        if ranges:
            samples["big_half"].append(timed(lambda: get(f, urls["big"], half)))
            for _ in range(small_requests):
                samples["small_range"].append(timed(lambda: get(f, urls["small"], small_half)))

    prefix = "/api/v1/device/releases"
    env = {"TINYFLEET_DATA_DIR": str(data_dir), "TINYFLEET_ROLLOUT_RUNNER_ENABLED": "false"}
    ports = [_free_port() for _ in range(3)]
    commands = {
        "tinyfleet (Basic auth + DB + Range route)": (
            [sys.executable, "-c", TINYFLEET_SERVER, str(ports[0])],
            env,
        ),
        "starlette StaticFiles on uvicorn": (
            [sys.executable, "-c", STATIC_SERVER, str(ports[1]), str(static)],
            {},
        ),
        "python -m http.server": (
            [
                sys.executable,
                "-m",
                "http.server",
                str(ports[2]),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(static),
            ],
            {},
        ),
    }
    results: dict[str, Any] = {"big_bytes": sizes["big"], "small_bytes": sizes["small"], "servers": {}}
    with contextlib.ExitStack() as stack:
        urls: dict[str, dict[str, str]] = {}
        for (name, (args, extra)), port in zip(commands.items(), ports, strict=True):
            base = stack.enter_context(_process(args, port, extra))
            if name.startswith("tinyfleet"):
                urls[name] = {
                    "small": f"{base}{prefix}/{small.id}/artifact",
                    "big": f"{base}{prefix}/{big.id}/artifact",
                }
            else:
                urls[name] = {"small": f"{base}/small.bin", "big": f"{base}/big.bin"}
        ranges = {name: check(u) for name, u in urls.items()}
        samples = {
            name: {k: [] for k in ("big_full", "big_half", "small_full", "small_range")} for name in urls
        }
        for _ in range(repeat):  # servers interleaved round by round: the shared machine's noise hits all
            for name, u in urls.items():
                one_round(u, ranges[name], samples[name])
    half = sizes["big"] - sizes["big"] // 2
    for name, m in samples.items():
        med = {k: statistics.median(v) if v else None for k, v in m.items()}
        results["servers"][name] = {
            "big_full_MBps": sizes["big"] / med["big_full"] / 1e6,
            "big_resume_half_MBps": None if med["big_half"] is None else half / med["big_half"] / 1e6,
            "small_full_req_per_s": 1 / med["small_full"],
            "small_range_req_per_s": None if med["small_range"] is None else 1 / med["small_range"],
            "range_support": ranges[name],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference", type=Path, default=ROOT / "out" / "demo" / "reference")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--big-mib", type=int, default=64)
    parser.add_argument("--small-requests", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if (
        not (args.reference / "kws" / "chain.json").is_file()
        or not (args.reference / "digits" / "chain.json").is_file()
    ):
        sys.exit(
            f"{args.reference}: no reference chains; run `make demo` or `tinyfleet model reference all` first"
        )
    from rich.console import Console
    from rich.table import Table

    console = Console()
    out: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "argv": sys.argv[1:]}
    with tempfile.TemporaryDirectory(prefix="bench-releases-") as tmp:
        with console.status("release creation..."):
            out["create"] = bench_create(args.reference, args.repeat, Path(tmp))
        with console.status("downloads..."):
            out["download"] = bench_download(
                args.reference, Path(tmp), args.repeat, args.big_mib, args.small_requests
            )
    table = Table(title="release creation (median ms)")
    for col in ("task", "models", "artifact_bytes", "deltas_considered", "deltas_shipped",
                "build_release_ms", "create_release_ms", "overhead_ms", "signer_load_ms"):  # fmt: skip
        table.add_column(col)
    for row in out["create"]:
        table.add_row(
            *(f"{v:.1f}" if isinstance(v, float) else ",".join(v) if isinstance(v, list) else str(v)
              for v in (row[c.header] for c in table.columns))  # type: ignore[attr-defined]
        )  # fmt: skip
    console.print(table)
    sizes = out["download"]
    dl = Table(title=f"downloads (big {sizes['big_bytes']:,} B, small {sizes['small_bytes']:,} B)")
    for col in ("server", "big full MB/s", "big resume half MB/s", "small full req/s", "small range req/s"):
        dl.add_column(col)
    for name, m in out["download"]["servers"].items():
        keys = ("big_full_MBps", "big_resume_half_MBps", "small_full_req_per_s", "small_range_req_per_s")
        dl.add_row(name, *("no Range" if m[k] is None else f"{m[k]:.0f}" for k in keys))
    console.print(dl)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
