"""Drift test helpers: a converter baseline, a released model version, device windows (drifted or not).

The baseline is built with the converter's own functions (converters.baselines: feature summary,
calibration-quantile edges, histograms) and stored as the ``baselines`` section of report.json where
the catalog keeps converter output (``models/<model>/<version>/``). Device windows count their inputs
into the baseline's bins exactly as the agent does (``feature_summary`` + ``bin_counts``) and are
stored through the ingest worker's own row mapping (``fleet_server.ingest.store.window_row``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from converters.baselines import bin_counts, feature_summary, histogram, make_feature_spec, quantile_edges
from converters.report import BaselineFeatureSpec, Baselines
from fleet_server.db import MlModel, ModelVersion, Release, TelemetryWindow
from fleet_server.db.device_store import provision
from fleet_server.ingest.batching import Pending, Received
from fleet_server.ingest.classify import Accepted
from fleet_server.ingest.store import window_row, write_batch
from telemetry.schemas import MetricsWindow, ModelRef
from telemetry.topics import telemetry_topic

INPUT_SHAPE = (8, 4)  # (time, channels): 4 baseline features, one per channel
T0 = 1_795_000_000  # a fixed Unix second (2026-11-19); tests pass `now` explicitly
NOW = dt.datetime.fromtimestamp(T0 + 86_400, dt.UTC)


@dataclass
class Baseline:
    spec: BaselineFeatureSpec
    edges: list[list[float]]
    model: Baselines


def make_baseline(seed: int = 0, n: int = 4000) -> Baseline:
    rng = np.random.default_rng(seed)
    calibration = rng.normal(0.0, 1.0, (n, *INPUT_SHAPE))
    spec = make_feature_spec(INPUT_SHAPE)
    feats = feature_summary(calibration, spec)
    edges = [quantile_edges(feats[:, i], 10) for i in range(feats.shape[1])]
    hists = [histogram(f"feature_{i}", feats[:, i], edges[i]) for i in range(feats.shape[1])]
    score = histogram("output_score", rng.random(n), [i / 10 for i in range(11)])
    model = Baselines(
        samples=n,
        feature_spec=spec,
        features=hists,
        output_score_spec={"kind": "max_softmax", "class_ids": [0, 1]},
        output_score=score,
    )
    return Baseline(spec=spec, edges=edges, model=model)


def register_release(
    session: Session,
    artifact_dir: Path,
    baseline: Baseline | None,
    *,
    model: str = "kws",
    version: str = "1.0.0",
    counter: int = 3,
    created_at: dt.datetime | None = None,
) -> Release:
    """Catalog model + version (with converter output dir) + release row, as the other services store them."""
    ml = session.query(MlModel).filter_by(name=model).one_or_none() or MlModel(name=model)
    rel_dir = f"models/{model}/{version}"
    mv = ModelVersion(model=ml, version=version, artifact_dir=rel_dir)
    session.add_all([ml, mv])
    session.flush()
    if baseline is not None:
        out = artifact_dir / rel_dir
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(
            json.dumps(
                {"name": model, "version": version, "baselines": baseline.model.model_dump(mode="json")}
            )
        )
    release = Release(
        id=f"{model}-{counter}",
        model_version_id=mv.id,
        model_name=model,
        version=version,
        counter=counter,
        variant="full_int8",
        hardware_classes=["esp32-s3"],
        artifact_path=f"releases/{model}-{counter}/model.tflite",
        artifact_sha256="0" * 64,
        artifact_length=1,
        manifest_path=f"releases/{model}-{counter}/manifest.json",
        manifest_sha256="0" * 64,
        manifest_length=1,
        key_id="k1",
        expires_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        created_at=created_at or dt.datetime.fromtimestamp(T0 - 86_400, dt.UTC),
    )
    session.add(release)
    session.flush()
    return release


def provision_devices(
    session: Session, ids: list[str], hardware_class: str = "esp32-s3", **tags: str
) -> None:
    for device_id in ids:
        provision(
            session,
            device_id=device_id,
            hardware_class=hardware_class,
            tags=tags,
            max_tags=8,
            iterations=1000,
        )


@dataclass
class Fleet:
    """Windows of several devices running one model version; each device counts one baseline feature."""

    baseline: Baseline
    model: str = "kws"
    counter: int = 3
    seed: int = 1
    windows: list[MetricsWindow] = field(default_factory=list)

    def add(
        self,
        device_ids: list[str],
        *,
        shift: float = 0.0,
        start_s: int = T0,
        count: int = 6,
        window_len_s: int = 600,
        samples: int = 200,
        inferences: int = 1000,
        positives: int = 40,
        false_positives: int = 2,
        first_seq: int = 0,
        battery: tuple[float, float] | None = None,
    ) -> None:
        rng = np.random.default_rng(self.seed)
        self.seed += 1
        spec, edges = self.baseline.spec, self.baseline.edges
        for d, device_id in enumerate(device_ids):
            feature = d % len(edges)
            for k in range(count):
                x = rng.normal(shift, 1.0, (samples, *INPUT_SHAPE))
                feats = feature_summary(x, spec)
                hist = bin_counts(feats[:, feature], edges[feature]).tolist()
                pct = None if battery is None else round(battery[0] - battery[1] * k * window_len_s / 3600, 1)
                self.windows.append(
                    MetricsWindow(
                        device_id=device_id,
                        seq=first_seq + k,
                        window_start_s=start_s + k * window_len_s,
                        window_len_s=window_len_s,
                        duty_cycle=0.1,
                        battery_pct=pct,
                        inferences=inferences,
                        positives=positives,
                        false_positives=false_positives,
                        latency_p50_us=1000,
                        latency_p95_us=2000 + 100 * d,
                        latency_max_us=5000,
                        model=ModelRef(name=self.model, version=self.counter, variant="full_int8"),
                        fallback_level=0,
                        input_feature=feature,
                        input_hist=hist,
                        output_hist=[],
                    )
                )

    def ingest(self, engine: Engine) -> int:
        """Through the ingest worker's batch writer (ON CONFLICT DO NOTHING; PostgreSQL: unnest arrays)."""
        items = [
            Pending(
                Received(mid=i, qos=1, topic=telemetry_topic(w.device_id), payload=b""),
                Accepted(w.device_id, w),
            )
            for i, w in enumerate(self.windows)
        ]
        result = write_batch(engine, items, dt.datetime.now(dt.UTC))
        self.windows.clear()
        return result.stored

    def store(self, session: Session) -> int:
        rows = [window_row(w, dt.datetime.now(dt.UTC)) for w in self.windows]
        if rows:
            session.execute(insert(TelemetryWindow), rows)
        n = len(rows)
        self.windows.clear()
        return n


class Receiver:
    """A real local HTTP server recording webhook POSTs; ``status`` is what it answers."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.raw.append(body)
                outer.received.append(json.loads(body))
                outer.headers.append(dict(self.headers))
                self.send_response(outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/retrain"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def free_port_url() -> str:
    """A URL on a loopback port nothing listens on (bound then closed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/retrain"


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """The app served by a real uvicorn on a free loopback port; yields its base URL."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
