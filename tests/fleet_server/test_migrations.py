"""Alembic migrations apply from empty on SQLite and PostgreSQL and match the ORM models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from fleet_server.db import Base, ConversionJob, MlModel, ModelVersion, make_engine, make_session_factory
from fleet_server.db.migrate import current_revision, downgrade_to, head_revision, upgrade_to_head

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from postgres import leftover_schemas, postgres_reachable, postgres_schema_url

TABLES = {"devices", "models", "model_versions", "conversion_jobs", "api_tokens", "audit_log"}
# 0002 (telemetry ingest)
TABLES |= {"telemetry_windows", "device_events", "ota_status", "dead_letters"}
# 0003 (releases, alerts); each later migration adds its own line here
TABLES |= {"releases", "release_deltas", "alerts"}
TABLES |= {"rollouts", "rollout_decisions", "rollout_commands"}  # 0004 (rollouts)
TABLES |= {"drift_snapshots", "retraining_events"}  # 0005 (drift, retraining webhook outbox)


def test_upgrade_from_empty_creates_schema_matching_models(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    try:
        assert current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) == set()
        assert upgrade_to_head(engine) == head_revision()
        assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
        # The reviewed migration and the ORM models agree (no autogenerate diff left over).
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == []
        # Idempotent: a second upgrade (every server start does one) changes nothing.
        assert upgrade_to_head(engine) == head_revision()
        downgrade_to(engine, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        assert upgrade_to_head(engine) == head_revision()
    finally:
        engine.dispose()


def test_foreign_keys_cascade(empty_db_url: str) -> None:
    """Deleting a model removes its versions and jobs: FKs are enforced (SQLite needs the pragma)."""
    engine = make_engine(empty_db_url)
    try:
        upgrade_to_head(engine)
        with make_session_factory(engine)() as s:
            model = MlModel(name="kws")
            version = ModelVersion(model=model, version="1.0.0")
            s.add_all([model, version, ConversionJob(model_version=version, state="running", progress=0.5)])
            s.commit()
            s.execute(text("DELETE FROM models"))
            s.commit()
            assert s.execute(text("SELECT count(*) FROM model_versions")).scalar() == 0
            assert s.execute(text("SELECT count(*) FROM conversion_jobs")).scalar() == 0
            # And a row pointing at nothing is refused.
            with pytest.raises(Exception, match=r"(?i)foreign key"):
                s.execute(
                    text("INSERT INTO model_versions (model_id, version, created_at) VALUES (999, 'x', :t)"),
                    {"t": "2026-01-01T00:00:00+00:00"},
                )
                s.commit()
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_postgres_url_without_psycopg3_driver_is_refused() -> None:
    with pytest.raises(ValueError, match="psycopg"):
        make_engine("postgresql://u@127.0.0.1/x")


@pytest.mark.skipif(not postgres_reachable(), reason="PostgreSQL does not answer on 127.0.0.1:5432")
def test_postgres_fixture_uses_and_drops_its_own_schema() -> None:
    with postgres_schema_url(prefix="tf_fixture") as url:
        schema = url.rsplit("%3D", 1)[-1]
        assert leftover_schemas("tf_fixture") == [schema]
        engine = make_engine(url)
        try:
            upgrade_to_head(engine)
            with engine.connect() as conn:
                assert conn.execute(text("SELECT current_schema()")).scalar() == schema
                where = (
                    conn.execute(
                        text(
                            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'devices'"
                        )
                    )
                    .scalars()
                    .all()
                )
            assert schema in where and "public" not in where  # its own schema, not the shared one
        finally:
            engine.dispose()
    assert leftover_schemas("tf_fixture") == []
