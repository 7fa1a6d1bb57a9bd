"""A fresh server (no device, no telemetry, no rollout): every page renders and says so."""

from __future__ import annotations

from pathlib import Path

from dashboard_support import login
from fastapi.testclient import TestClient

from fleet_server.api import create_app
from fleet_server.auth import Role, issue_token
from fleet_server.settings import Settings


def test_every_page_renders_on_an_empty_database(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, rollout_runner_enabled=False))
    with app.state.session_factory() as s:
        token = issue_token(s, name="admin", role=Role.admin, created_by="test").secret
        s.commit()
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            assert login(c, token).status_code == 200
            expected = {
                "/dashboard": "No devices provisioned yet.",
                "/dashboard/rollouts": "No rollouts",
                "/dashboard/telemetry": "No telemetry in this range.",
                "/dashboard/alerts": "No alerts match.",
                "/dashboard/audit": "dashboard.login",  # the sign-in just made is the first entry
            }
            for path, text in expected.items():
                r = c.get(path)
                assert r.status_code == 200, (path, r.text[-300:])
                assert text in r.text, path
            assert "no data in this range" in c.get("/dashboard/telemetry").text
    finally:
        app.state.engine.dispose()
