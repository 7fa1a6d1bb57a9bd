"""End to end: headless system Chromium (Playwright) against a real uvicorn server on a free port.

The data is a real run (dashboard_support.populate: devices provisioned over HTTP, telemetry through the
ingest functions, a rollout started over HTTP and decided by the runner). The browser signs in with an
operator token, checks every page against the run, pauses the running rollout, signs out, signs in as an
admin and finds the pause in the audit log. Screenshots go to the test's tmp dir, and to docs/img/ (the
README's pictures) when they are missing there or TINYFLEET_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from dashboard_support import Run, populate, rollout_state

from fleet_server.api import create_app
from fleet_server.auth import Role, issue_token
from fleet_server.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
pytestmark = pytest.mark.slow


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing (Debian package chromium; `make system-tools` installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, dict[str, str]]]:
    _require_chromium()
    data = tmp_path_factory.mktemp("e2e-data")
    port = _free_port()
    settings = Settings(
        data_dir=data,
        api_port=port,
        device_credential_iterations=1000,
        rollout_runner_enabled=False,  # the test drives the runner's ticks itself
    )
    app = create_app(settings)
    with app.state.session_factory() as s:
        tokens = {
            role.name: issue_token(s, name=f"{role.name}-token", role=role, created_by="test").secret
            for role in Role
        }
        s.commit()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        yield base, app, tokens
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def run(server: tuple[str, Any, dict[str, str]]) -> Run:
    base, app, tokens = server
    with httpx.Client(base_url=base, timeout=30) as api:
        return populate(api, app.state.engine, tokens, app.state.settings)


def _save(page: Any, name: str, tmp_path: Path) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    target = DOCS_IMG / name
    if not target.exists() or os.environ.get("TINYFLEET_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=True)
    assert (tmp_path / name).stat().st_size > 10_000


def _sign_in(page: Any, base: str, token: str, next_path: str = "/dashboard") -> None:
    page.goto(base + next_path)
    assert "/dashboard/login" in page.url  # no session yet: sent to the sign-in form
    page.fill("#token", token)
    page.click("#sign-in")
    page.wait_for_url(base + next_path)


def test_dashboard_in_headless_chromium(
    server: tuple[str, Any, dict[str, str]], run: Run, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    base, app, tokens = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            # Fleet overview: every device, the version counts, the offline and never-seen ones.
            _sign_in(page, base, tokens["operator"])
            assert page.inner_text("#whoami").startswith("operator-token")
            assert page.inner_text("#kpi-total") == str(len(run.specs))
            devices = page.inner_text("#devices")
            for device_id in run.device_ids:
                assert device_id in devices
            versions = {
                row.split("\t")[0]: int(row.split("\t")[1])
                for row in page.inner_text("#by-version").splitlines()[1:]
            }
            assert versions == run.by_version
            assert page.locator("svg.plot").count() >= 4
            _save(page, "dashboard-overview.png", tmp_path)

            # Telemetry: a line per version, drift per feature.
            page.click("nav >> text=Telemetry")
            for series in ("kws v1", "kws v2", "digits v5"):
                assert page.locator(f'#plot-fp polyline[data-series="{series}"]').count() >= 1
            assert "significant" in page.inner_text("#drift")
            page.screenshot(path=str(tmp_path / "dashboard-telemetry.png"), full_page=True)

            # Alerts.
            page.click("nav >> text=Alerts")
            alerts = page.inner_text("#alerts")
            for title in run.alert_titles:
                assert title in alerts

            # The rollout: stages, gates with values and thresholds, then Pause.
            page.click("nav >> text=Rollouts")
            page.click(f"text={run.rollout_id}")
            state = rollout_state(app.state.engine, run.rollout_id)
            assert state.status == "running"
            assert page.inner_text("#rollout-status") == "running"
            gates = page.inner_text("#gates")
            for g in state.last_gate_results:
                assert g.name in gates
            stages = page.inner_text("#stages")
            for stage in state.spec.stages:
                assert stage.name in stages
            decisions_before = page.locator("#decisions tbody tr").count()
            page.click("#action-pause")
            page.wait_for_selector("#notice")
            assert page.inner_text("#rollout-status") == "paused"
            assert page.locator("#decisions tbody tr").count() == decisions_before + 1
            newest = page.locator("#decisions tbody tr").first.inner_text()
            assert "pause" in newest and "operator-token" in newest
            assert rollout_state(app.state.engine, run.rollout_id).status == "paused"
            assert page.locator("#action-resume").count() == 1
            _save(page, "dashboard-rollout.png", tmp_path)

            # Sign out; an admin finds the pause (and the sign-ins) in the audit log.
            page.click("#logout")
            page.wait_for_url(f"{base}/dashboard/login")
            _sign_in(page, base, tokens["admin"], "/dashboard/audit")
            audit = page.inner_text("#audit")
            assert "rollout.pause" in audit and run.rollout_id in audit
            assert "dashboard.login" in audit and "device.provision" in audit

            # A viewer sees the rollout read-only.
            page.click("#logout")
            page.wait_for_url(f"{base}/dashboard/login")
            _sign_in(page, base, tokens["viewer"], f"/dashboard/rollouts/{run.rollout_id}")
            assert page.locator("#action-resume").count() == 0
            assert page.locator("#read-only").count() == 1
            assert not errors, errors  # no console errors (e.g. a CSP violation) on any page
        finally:
            browser.close()
