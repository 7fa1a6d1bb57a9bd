"""Fleet-server fixtures: every DB test runs on SQLite and on a private PostgreSQL schema."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # fleet_api_support

from fleet_api_support import bearer
from postgres import postgres_reachable, postgres_schema_url

from fleet_server.api import create_app
from fleet_server.auth import Role, issue_token
from fleet_server.db import (
    ApiToken,
    AuditEntry,
    Base,
    ConversionJob,
    Device,
    MlModel,
    ModelVersion,
    make_engine,
)
from fleet_server.db.migrate import upgrade_to_head
from fleet_server.settings import Settings

BACKENDS = ["sqlite", "postgresql"]


def _skip_without_postgres() -> None:
    if not postgres_reachable():
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new empty database: SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    _skip_without_postgres()
    with postgres_schema_url() as url:
        yield url


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrated once per run; each test gets a copy (migrating per test costs more than the test)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade_to_head(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def _postgres_run_schema() -> Iterator[str]:
    """This test run's own PostgreSQL schema, migrated once, dropped at the end of the run."""
    _skip_without_postgres()
    with postgres_schema_url() as url:
        engine = make_engine(url)
        upgrade_to_head(engine)
        engine.dispose()
        yield url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database for one test, on each backend."""
    if request.param == "sqlite":
        target = tmp_path / "fleet.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), target)
        yield f"sqlite:///{target}"
        return
    url = request.getfixturevalue("_postgres_run_schema")
    engine = make_engine(url)
    try:
        # DELETE, not TRUNCATE: on a handful of rows it is ~50x faster (TRUNCATE rewrites files).
        with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
    finally:
        engine.dispose()
    yield url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    # Fewer KDF rounds than production only to keep the suite fast; test_credentials uses the default.
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        page_size_max=100,
        max_tags_per_device=8,
        device_credential_iterations=1000,
        # No background rollout runner thread in every test app; the runner's own tests drive it.
        rollout_runner_enabled=False,
        drift_scheduler_enabled=False,
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    application = create_app(settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def tokens(app: FastAPI) -> dict[str, str]:
    """One bearer token per role (plus a revoked one), made the way `create-token` makes them."""
    out: dict[str, str] = {}
    with app.state.session_factory() as session:
        for role in Role:
            out[role.name] = issue_token(
                session, name=f"{role.name}-token", role=role, created_by="test"
            ).secret
        revoked = issue_token(session, name="revoked-token", role=Role.admin, created_by="test")
        revoked.row.revoked_at = revoked.row.created_at
        out["revoked"] = revoked.secret
        session.commit()
    return out


@pytest.fixture
def as_role(tokens: dict[str, str]) -> Callable[[str], dict[str, str]]:
    return lambda role: bearer(tokens[role])


@pytest.fixture
def provision(client: TestClient, tokens: dict[str, str]) -> Callable[..., dict[str, Any]]:
    def _provision(device_id: str, hardware_class: str = "esp32-s3", **tags: str) -> dict[str, Any]:
        r = client.post(
            "/api/v1/devices",
            json={"id": device_id, "hardware_class": hardware_class, "tags": tags},
            headers=bearer(tokens["operator"]),
        )
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    return _provision


def _rows(session: Any, model: type, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    cols = [c.key for c in model.__table__.columns if c.key not in skip]  # type: ignore[attr-defined]
    return [{c: getattr(r, c) for c in cols} for r in session.scalars(select(model))]


@pytest.fixture
def snapshot(app: FastAPI) -> Callable[[], dict[str, list[dict[str, Any]]]]:
    """Every stored domain row (the audit log is expected to grow, token last-use may tick)."""

    def _snap() -> dict[str, list[dict[str, Any]]]:
        with app.state.session_factory() as s:
            return {
                "devices": sorted(_rows(s, Device), key=lambda r: r["id"]),
                "api_tokens": sorted(_rows(s, ApiToken, skip=("last_used_at",)), key=lambda r: r["id"]),
                "models": _rows(s, MlModel),
                "model_versions": _rows(s, ModelVersion),
                "conversion_jobs": _rows(s, ConversionJob),
            }

    return _snap


@pytest.fixture
def audit_rows(app: FastAPI) -> Callable[[], list[AuditEntry]]:
    def _audit() -> list[AuditEntry]:
        with app.state.session_factory() as s:
            return list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))

    return _audit
