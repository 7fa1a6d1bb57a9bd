"""Dashboard fixtures: one populated run per test module and backend (SQLite file, private PostgreSQL schema).

The pages only read, so one run serves every read test of a module; tests that change state (pause, sign
out) use their own rollout or a fresh client.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dashboard_support import Run, login, populate
from postgres import postgres_reachable, postgres_schema_url

from fleet_server.api import create_app
from fleet_server.auth import Role, issue_token
from fleet_server.settings import Settings

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="module", params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('dash-db') / 'fleet.db'}"
        return
    if not postgres_reachable():
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
    with postgres_schema_url() as url:
        yield url


@pytest.fixture(scope="module")
def app(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("dash-data"),
        database_url=db_url,
        page_size_max=100,
        device_credential_iterations=1000,
        rollout_runner_enabled=False,
    )
    application = create_app(settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture(scope="module")
def tokens(app: FastAPI) -> dict[str, str]:
    out: dict[str, str] = {}
    with app.state.session_factory() as session:
        for role in Role:
            out[role.name] = issue_token(
                session, name=f"{role.name}-token", role=role, created_by="test"
            ).secret
        session.commit()
    return out


@pytest.fixture(scope="module")
def run(app: FastAPI, tokens: dict[str, str]) -> Run:
    with TestClient(app, raise_server_exceptions=False) as api:
        return populate(api, app.state.engine, tokens, app.state.settings)


@pytest.fixture
def client_as(app: FastAPI, tokens: dict[str, str]) -> Iterator[Callable[[str], TestClient]]:
    """A signed-in browser-like client (cookies kept) for a role; closed after the test."""
    opened: list[TestClient] = []

    def _client(role: str) -> TestClient:
        c = TestClient(app, raise_server_exceptions=False)
        c.__enter__()
        opened.append(c)
        r = login(c, tokens[role])
        assert r.status_code == 200, r.text
        return c

    yield _client
    for c in opened:
        c.__exit__(None, None, None)
