"""A small fleet run for the dashboard tests, made through the real ways in:

* devices provisioned through POST /api/v1/devices (a TestClient or an httpx client to a real server);
* telemetry as CBOR MetricsWindows through the ingest worker's own functions (classify + write_batch);
* releases as rows (a signed release needs a converted model; the rollout runner's tests do the same);
* a rollout started through POST /api/v1/rollouts and decided by the rollout runner's own tick (its MQTT
  outbox is left unsent: no device listens here), alerts through alert_store.raise_alert,
  a drift snapshot row as the drift evaluator stores it.

``populate`` returns what the pages must show, computed from the inputs, not from the pages.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from html import unescape
from typing import Any

import release_rows
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from fleet_server.alert_store import raise_alert
from fleet_server.db import Release
from fleet_server.db.drift import DriftSnapshot
from fleet_server.db.rollouts import RolloutRow
from fleet_server.ingest.batching import Pending, Received
from fleet_server.ingest.classify import classify
from fleet_server.ingest.store import KnownDevices, write_batch
from fleet_server.rollouts.model import RolloutState
from fleet_server.settings import Settings
from telemetry.codec import encode_cbor
from telemetry.schemas import MetricsWindow, ModelRef
from telemetry.topics import telemetry_topic

MODEL = release_rows.MODEL
HARDWARE_CLASSES = ("esp32-s3", "cortex-m4f")
WINDOW_S = 300


@dataclass(frozen=True)
class Spec:
    device_id: str
    hardware_class: str
    model: str | None  # None: provisioned, never reported
    counter: int = 1
    battery: float | None = 80.0
    fallback: int = 0
    fp_per_window: int = 1
    offline: bool = False  # last report two hours ago
    tags: dict[str, str] = field(default_factory=dict)


def fleet_specs() -> list[Spec]:
    specs = [
        Spec(f"mcu-{i:02d}", "esp32-s3", MODEL, battery=90.0 - 5 * i, tags={"site": "lab"}) for i in range(8)
    ]
    specs += [
        Spec(f"m4-{i:02d}", "cortex-m4f", MODEL, battery=60.0, tags={"site": "field"}) for i in range(3)
    ]
    specs += [Spec(f"pi-{i:02d}", "pi-4", "digits", counter=5, battery=None) for i in range(3)]
    # Exceptions the overview must show: low battery, a fallback, offline, never seen.
    specs[1] = Spec("mcu-01", "esp32-s3", MODEL, battery=12.0, tags={"site": "lab"})
    specs[2] = Spec("mcu-02", "esp32-s3", MODEL, battery=15.0, fallback=1, tags={"site": "lab"})
    specs[8] = Spec("m4-00", "cortex-m4f", MODEL, battery=55.0, offline=True, tags={"site": "field"})
    specs.append(Spec("new-00", "pi-zero-2w", None, battery=None))
    return specs


@dataclass
class Run:
    specs: list[Spec]
    rollout_id: str
    release_id: str
    windows: list[MetricsWindow]  # every window ingested
    exposed: list[str]  # devices the runner commanded to install the candidate
    alert_titles: list[str]
    by_class: dict[str, int]
    by_version: dict[str, int]
    low_battery: list[str]
    on_fallback: list[str]
    offline: list[str]
    never_seen: list[str]
    drift_features: dict[int, float]
    tokens: dict[str, str]

    @property
    def device_ids(self) -> list[str]:
        return [s.device_id for s in self.specs]

    @property
    def newest_window_start(self) -> int:
        return max(w.window_start_s for w in self.windows)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def provision_all(client: Any, operator_token: str, specs: list[Spec]) -> None:
    for s in specs:
        r = client.post(
            "/api/v1/devices",
            json={"id": s.device_id, "hardware_class": s.hardware_class, "tags": s.tags},
            headers=bearer(operator_token),
        )
        assert r.status_code == 201, r.text


def windows_for(
    spec: Spec, first_start: int, count: int, first_seq: int = 0, counter: int | None = None
) -> list[MetricsWindow]:
    assert spec.model is not None
    out = []
    for k in range(count):
        battery = None if spec.battery is None else min(100.0, spec.battery + (count - 1 - k) * 0.5)
        out.append(
            MetricsWindow(
                device_id=spec.device_id,
                seq=first_seq + k,
                window_start_s=first_start + k * WINDOW_S,
                window_len_s=WINDOW_S,
                duty_cycle=0.08 + 0.01 * (k % 3),
                battery_pct=battery,
                inferences=3000,
                positives=60,
                false_positives=spec.fp_per_window,
                latency_p50_us=8000,
                latency_p95_us=12_000 + 100 * k,
                latency_max_us=30_000,
                model=ModelRef(name=spec.model, version=counter or spec.counter, variant="full_int8"),
                fallback_level=spec.fallback,
                input_feature=0,
                input_hist=[10, 200, 300, 400, 500, 600, 500, 300, 150, 40],
            )
        )
    return out


def ingest(engine: Engine, windows: list[MetricsWindow], received_at: dt.datetime) -> None:
    """The ingest worker's path: CBOR on the device's topic -> classify -> write_batch (one transaction)."""
    known = KnownDevices(engine, refresh_s=0)
    items = []
    for i, w in enumerate(windows):
        topic, payload = telemetry_topic(w.device_id), encode_cbor(w)
        items.append(Pending(Received(i + 1, 1, topic, payload), classify(topic, payload, known)))
    result = write_batch(engine, items, received_at)
    assert result.dead_lettered == 0 and result.stored == len(windows), result


def add_release(session: Session, counter: int, model: str = MODEL) -> Release:
    # The dashboard's fleet has cortex-m4f devices too: its releases target both classes.
    return release_rows.add_release(session, counter, model=model, hardware_classes=HARDWARE_CLASSES)


def start_rollout(session: Session, release_id: str, actor: str, now: float) -> str:
    """Through the rollout service (for tests that need a second rollout of their own)."""
    from fleet_server.rollout_runner import service

    row = service.create_rollout(
        session, service.CreateRequest(release_id=release_id, min_soak_s=0), actor=actor, now=now
    )
    return row.id


def rollout_state(engine: Engine, rollout_id: str) -> RolloutState:
    with sessionmaker(engine)() as session:
        row = session.get(RolloutRow, rollout_id)
        assert row is not None
        return RolloutState.model_validate(row.state)


def populate(client: Any, engine: Engine, tokens: dict[str, str], settings: Settings) -> Run:
    """Provision, report, release, start a rollout through the REST API and let the runner decide twice:
    once to command the canary, once more on the canary's telemetry (gate values against the control)."""
    from fleet_server.rollout_runner.runner import build_runner

    specs = fleet_specs()
    provision_all(client, tokens["operator"], specs)
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session:
        add_release(session, 1)
        add_release(session, 2)
        add_release(session, 5, model="digits")
        session.commit()

    # An hour of history on what every device runs; the offline one stopped two hours before.
    now = dt.datetime.now(dt.UTC)
    history_end = int(now.timestamp()) // WINDOW_S * WINDOW_S
    reported: list[MetricsWindow] = []
    for offline in (False, True):
        batch = [
            w
            for s in specs
            if s.model and s.offline == offline
            for w in windows_for(s, history_end - (7200 if offline else 0) - 12 * WINDOW_S, 12)
        ]
        ingest(engine, batch, now - dt.timedelta(hours=2) if offline else now)
        reported += batch

    r = client.post(
        "/api/v1/rollouts",
        json={
            "release_id": f"{MODEL}-2",
            "target": {"hardware_classes": ["esp32-s3", "cortex-m4f"]},
            "min_soak_s": 0,
            "control": {"fraction": 0.3, "min_devices": 3},
        },
        headers=bearer(tokens["operator"]),
    )
    assert r.status_code == 201, r.text
    rollout_id = r.json()["id"]
    runner = build_runner(settings, engine)  # its MQTT publisher is never used: no drain here
    runner.tick_rollout(rollout_id)
    state = rollout_state(engine, rollout_id)
    exposed = set(state.exposed)
    assert exposed, "the runner commanded nobody"
    # The canary installed the candidate; everyone online reports four more windows from the stage start.
    start = math.ceil(state.stage_started_at)
    batch = [
        w
        for s in specs
        if s.model and not s.offline
        for w in windows_for(s, start, 4, first_seq=12, counter=2 if s.device_id in exposed else None)
    ]
    ingest(engine, batch, dt.datetime.now(dt.UTC))
    reported += batch
    runner.tick_rollout(rollout_id)

    with factory() as session:
        titles = ["False-positive rate up on canary", "Input drift on feature 0"]
        raise_alert(
            session,
            severity="P1",
            code="fp_rate",
            title=titles[0],
            dedup_key=f"fp:{rollout_id}",
            evidence={"cohort_rate": 0.004, "control_rate": 0.001},
            model_name=MODEL,
            model_version="2",
            rollout_id=rollout_id,
        )
        raise_alert(
            session,
            severity="P2",
            code="psi_drift",
            title=titles[1],
            dedup_key="psi:kws:1:all",
            evidence={"psi": 0.27},
            model_name=MODEL,
            model_version="1",
            cohort="all",
        )
        features = {0: 0.27, 1: 0.04}
        session.add(
            DriftSnapshot(
                model_name=MODEL,
                model_version=1,
                cohort="all",
                range_start=now - dt.timedelta(hours=1),
                range_end=now,
                status="significant",
                max_psi=max(features.values()),
                alert=True,
                devices=10,
                windows=120,
                samples=36_000,
                features=[
                    {
                        "feature": f,
                        "status": "significant" if p > 0.2 else "stable",
                        "psi": p,
                        "ks": 0.1,
                        "js": 0.02,
                    }
                    for f, p in features.items()
                ],
            )
        )
        session.commit()

    def running(s: Spec) -> str:
        if s.model is None:
            return "none reported"
        return f"{s.model} v2" if s.device_id in exposed and not s.offline else f"{s.model} v{s.counter}"

    return Run(
        specs=specs,
        rollout_id=rollout_id,
        release_id=f"{MODEL}-2",
        windows=reported,
        exposed=sorted(exposed),
        alert_titles=titles,
        by_class=dict(Counter(s.hardware_class for s in specs)),
        by_version=dict(Counter(running(s) for s in specs)),
        low_battery=[s.device_id for s in specs if s.model and s.battery is not None and s.battery < 20],
        on_fallback=[s.device_id for s in specs if s.fallback > 0],
        offline=[s.device_id for s in specs if s.offline],
        never_seen=[s.device_id for s in specs if s.model is None],
        drift_features=features,
        tokens=tokens,
    )


# ----------------------------------------------------------------------------- reading pages


CSRF_INPUT = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def login(client: Any, token: str) -> Any:
    """Sign in through the login form (login CSRF included); returns the response after the redirect."""
    page = client.get("/dashboard/login")
    assert page.status_code == 200
    return client.post(
        "/dashboard/login", data={"token": token, "csrf": csrf_of(page.text), "next": "/dashboard"}
    )


def table_rows(html: str, table_id: str) -> list[list[str]]:
    """Cell texts of a table's body rows (tags stripped), enough to compare with the run's figures."""
    match = re.search(rf'<table[^>]*id="{table_id}"[^>]*>(.*?)</table>', html, re.S)
    assert match, f"no table {table_id!r}"
    rows = []
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", match.group(1), re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)
        if cells:
            rows.append([unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", c)).strip()) for c in cells])
    return rows
