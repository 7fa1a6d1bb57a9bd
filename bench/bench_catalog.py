"""Catalog benchmark: upload -> conversion job done, next to the same convert_model call run directly.

    .venv/bin/python bench/bench_catalog.py [--runs 3] [--database-url URL] [--json]

Model: the digits reference MLP (converters.reference.model_zoo, trained here with the reference
recipe) with the reference task's calibration and evaluation splits.

Baseline, measured in the same run on the same files: ``convert_model`` called directly in this
process with TensorFlow already imported (warm), ``--runs`` times, each run interleaved with one
served run so that both see the same machine load. The product path: the API
served by uvicorn (SQLite in a temp dir by default; ``--database-url`` for PostgreSQL), a local worker
child process (``python -m fleet_server.catalog.worker``, default settings: 1 s idle poll, 5 s
heartbeat), and for each run an HTTP multipart upload of a new version, then GET /api/v1/jobs/{id}
every 50 ms until the job succeeded. The first upload is "cold" (the worker imports TensorFlow for it);
the next ``--runs`` are warm. Per run: upload request, queue wait (started_at - created_at), job
run time (finished_at - started_at), and wall time from the start of the upload to the observed end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _prepare(work: Path) -> dict[str, Path]:
    import numpy as np

    from converters.reference.chain import load_task
    from converters.reference.model_zoo import recipes
    from converters.reference.training import train

    data = load_task("digits")
    recipe = next(r for r in recipes("digits") if r.name == "mlp")
    trained = train(recipe, data, seed=0)
    files = {
        "model": work / "digits_mlp.keras",
        "calibration": work / "calibration.npz",
        "evaluation": work / "evaluation.npz",
    }
    trained.model.save(files["model"])
    np.savez(files["calibration"], x=data.x_cal)
    np.savez(files["evaluation"], x=data.x_eval, y=data.y_eval)
    return files


def _direct(files: dict[str, Path], work: Path, i: int) -> float:
    """One direct convert_model call (the baseline), TensorFlow already imported."""
    import numpy as np

    from converters.pipeline import convert_model

    cal = np.load(files["calibration"])["x"]
    with np.load(files["evaluation"]) as ev:
        x, y = ev["x"], ev["y"]
    start = time.perf_counter()
    convert_model(files["model"], cal, x, y, name="digits_mlp", version=f"d{i}", out_dir=work / f"direct-{i}")
    return time.perf_counter() - start


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _served(
    files: dict[str, Path], work: Path, runs: int, database_url: str | None, direct: list[float]
) -> list[dict[str, Any]]:
    """Warm-up (direct once, cold job once), then direct and served runs interleaved (same load)."""
    import httpx
    import uvicorn

    from fleet_server.api import create_app
    from fleet_server.auth import Role, issue_token
    from fleet_server.catalog.local_process import WorkerProcess
    from fleet_server.settings import Settings

    settings = Settings(data_dir=work / "data", **({"database_url": database_url} if database_url else {}))
    app = create_app(settings)
    with app.state.session_factory() as s:
        token = issue_token(s, name="bench", role=Role.operator, created_by="bench").secret
        s.commit()
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    worker = WorkerProcess(settings).start()
    results = []
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=120
        ) as c:
            c.post("/api/v1/models", json={"name": "digits_mlp"})
            _direct(files, work, 0)  # warms the converter's lazy imports in this process
            for i in range(runs + 1):
                if i:
                    direct.append(_direct(files, work, i))
                start = time.perf_counter()
                r = c.post(
                    "/api/v1/models/digits_mlp/versions",
                    data={"version": f"1.0.{i}"},
                    files={k: (p.name, p.read_bytes()) for k, p in files.items()},
                )
                uploaded = time.perf_counter() - start
                assert r.status_code == 202, r.text
                job_id = r.json()["job"]["id"]
                while (job := c.get(f"/api/v1/jobs/{job_id}").json())["state"] not in ("succeeded", "failed"):
                    time.sleep(0.05)
                wall = time.perf_counter() - start
                assert job["state"] == "succeeded", job["error"]
                results.append(
                    {
                        "run": "cold" if i == 0 else "warm",
                        "upload_s": uploaded,
                        "queue_wait_s": (_ts(job["started_at"]) - _ts(job["created_at"])).total_seconds(),
                        "job_s": (_ts(job["finished_at"]) - _ts(job["started_at"])).total_seconds(),
                        "wall_s": wall,
                    }
                )
    finally:
        worker.stop()
        server.should_exit = True
        thread.join(10)
        app.state.engine.dispose()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
        work = Path(tmp)
        files = _prepare(work)
        direct: list[float] = []
        served = _served(files, work, args.runs, args.database_url, direct)
    warm = [r for r in served if r["run"] == "warm"]
    med = {k: statistics.median(r[k] for r in warm) for k in ("upload_s", "queue_wait_s", "job_s", "wall_s")}
    summary = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "database": "postgresql" if args.database_url else "sqlite",
        "baseline_direct_convert_s": {"median": statistics.median(direct), "runs": direct},
        "served_warm_median": med,
        "served_runs": served,
        "overhead_wall_vs_direct_s": med["wall_s"] - statistics.median(direct),
        "overhead_job_vs_direct_s": med["job_s"] - statistics.median(direct),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"digits MLP, {summary['database']}, {summary['date']}")
    print(f"baseline convert_model direct (warm, median of {len(direct)}): {statistics.median(direct):.2f} s")
    for r in served:
        print(
            f"  {r['run']:4s} upload {r['upload_s']:.3f} s  queue wait {r['queue_wait_s']:.2f} s  "
            f"job {r['job_s']:.2f} s  wall {r['wall_s']:.2f} s"
        )
    print(
        f"upload->done (warm worker, median): {med['wall_s']:.2f} s = direct "
        f"{statistics.median(direct):.2f} s + {summary['overhead_wall_vs_direct_s']:+.2f} s "
        f"(job itself {summary['overhead_job_vs_direct_s']:+.2f} s vs direct)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
