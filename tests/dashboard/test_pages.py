"""Every dashboard page renders the stored run's data; roles, CSRF, bad ids and bad parameters."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from html import unescape

import pytest
from dashboard_support import Run, add_release, csrf_of, login, rollout_state, start_rollout, table_rows
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fleet_server.db import AuditEntry
from fleet_server.db.rollouts import RolloutDecision, RolloutRow
from fleet_server.rollout_runner import service

ClientAs = Callable[[str], TestClient]


def _html(r: object, status: int = 200) -> str:
    assert r.status_code == status, r.text[-800:]  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith("text/html")  # type: ignore[attr-defined]
    return r.text  # type: ignore[attr-defined,no-any-return]


def _error_message(html: str) -> str:
    match = re.search(r'<p id="error-message">(.*?)</p>', html, re.S)
    assert match, html[-500:]
    return unescape(match.group(1))


def _rollout_state(app: FastAPI, rollout_id: str) -> tuple[str, int, int]:
    with app.state.session_factory() as s:
        row = s.get(RolloutRow, rollout_id)
        assert row is not None
        decisions = s.scalar(select(func.count()).where(RolloutDecision.rollout_id == rollout_id)) or 0
        return row.status, row.revision, int(decisions)


def _audit(app: FastAPI, action: str) -> list[AuditEntry]:
    with app.state.session_factory() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


# ----------------------------------------------------------------------------- pages show the run


def test_overview_shows_devices_by_class_version_health(run: Run, client_as: ClientAs) -> None:
    html = _html(client_as("viewer").get("/dashboard"))
    assert f'<span class="kpi-value" id="kpi-total">{len(run.specs)}</span>' in html
    assert {r[0]: int(r[1]) for r in table_rows(html, "by-class")} == run.by_class
    assert {r[0]: int(r[1]) for r in table_rows(html, "by-version")} == run.by_version
    devices = {r[0]: r for r in table_rows(html, "devices")}
    assert set(devices) == set(run.device_ids)
    for device_id in run.offline:
        assert devices[device_id][7] == "offline"
    for device_id in run.never_seen:
        assert devices[device_id][7] == "never seen"
    for device_id in run.low_battery:
        assert int(devices[device_id][4].split()[0]) < 20
    assert [d for d, r in devices.items() if r[3] not in ("0", "—")] == run.on_fallback
    # Plots, not only tables: one bar per hardware class; the battery histogram of the latest figures.
    assert len(re.findall(r'<rect class="bar" data-label="', html)) >= len(run.by_class)
    latest = {w.device_id: w.battery_pct for w in sorted(run.windows, key=lambda w: w.seq)}
    expected = Counter(
        "mains / no figure" if latest.get(s.device_id) is None else _battery_bucket(latest[s.device_id])
        for s in run.specs
    )
    battery = html.split('aria-label="Latest battery level"', 1)[1].split("</svg>", 1)[0]
    bars = dict(re.findall(r'data-label="([^"]+)".*?class="bar-value"[^>]*>([^<]+)<', battery))
    assert {k: int(v) for k, v in bars.items() if int(v)} == dict(expected)


def _battery_bucket(pct: float) -> str:
    return "0–20 %" if pct < 20 else "20–50 %" if pct < 50 else "50–80 %" if pct < 80 else "80–100 %"


def test_overview_pages_the_devices_table(run: Run, client_as: ClientAs) -> None:
    c = client_as("viewer")
    ids = sorted(run.device_ids)
    first = table_rows(_html(c.get("/dashboard?limit=5")), "devices")
    third = table_rows(_html(c.get("/dashboard?limit=5&page=3")), "devices")
    assert [r[0] for r in first] == ids[:5]
    assert [r[0] for r in third] == ids[10:15]


def test_rollout_list_and_page(run: Run, app: FastAPI, client_as: ClientAs) -> None:
    c = client_as("viewer")
    rows = table_rows(_html(c.get("/dashboard/rollouts")), "rollouts")
    mine = [r for r in rows if r[2] == run.release_id]
    assert [(r[0], r[7]) for r in mine] == [(run.rollout_id, "operator-token")]
    html = _html(c.get(f"/dashboard/rollouts/{run.rollout_id}"))
    state = rollout_state(app.state.engine, run.rollout_id)
    assert f'id="rollout-status">{state.status.replace("_", " ")}<' in html
    for stage in state.spec.stages:
        assert f'<div class="name">{stage.name}' in html
    # Each gate of the latest evaluation with its verdict, value and threshold.
    gates = {r[0]: r for r in table_rows(html, "gates")}
    assert set(gates) == {g.name for g in state.last_gate_results} and gates
    for g in state.last_gate_results:
        assert gates[g.name][1] == g.verdict.replace("_", " ")
        assert gates[g.name][2] == ("—" if g.value is None else _num(g.value))
        alpha = "α " if g.name == "false_positive" else ""  # a significance level, not a bound on the value
        assert gates[g.name][3] == ("—" if g.threshold is None else alpha + _num(g.threshold))
    assert any(g.value is not None for g in state.last_gate_results)
    # Decisions newest first, with the runner's start first of all.
    decisions = table_rows(html, "decisions")
    assert [int(d[0]) for d in decisions] == list(range(state.decision_seq, 0, -1))
    assert decisions[-1][2] == "start"
    exposure = html.split('id="exposure"', 1)[1].split("</dl>", 1)[0]
    assert f"<strong>{len(run.exposed)}</strong>" in exposure
    assert 'id="read-only"' in html and 'id="action-pause"' not in html  # viewers see no buttons


def _num(value: float) -> str:
    """The page's number format (the template's num filter with 4 significant digits)."""
    from fleet_server.dashboard.web import _fmt_num

    return _fmt_num(value, 4)


def test_telemetry_page_plots_each_version_and_drift(run: Run, client_as: ClientAs) -> None:
    html = _html(client_as("viewer").get("/dashboard/telemetry?hours=2"))
    versions = {(r[0], r[1]): r for r in table_rows(html, "versions")}
    # The range spans 2 h and ends just after the newest window's start; windows count where they start.
    since = run.newest_window_start - 7200
    expected: dict[tuple[str, str], list[int]] = {}
    for w in run.windows:
        if w.window_start_s >= since:
            figures = expected.setdefault((w.model.name, str(w.model.version)), [0, 0])
            figures[0] += 1
            figures[1] += w.false_positives
    assert set(versions) == set(expected) == {("kws", "1"), ("kws", "2"), ("digits", "5")}
    for key, (windows, fps) in expected.items():
        assert (int(versions[key][3]), int(versions[key][5])) == (windows, fps)

    def plot(plot_id: str) -> str:
        return html.split(f'id="{plot_id}"', 1)[1].split("</svg>", 1)[0]

    for plot_id in ("plot-duty", "plot-fp", "plot-latency"):
        for series in ("kws v1", "kws v2", "digits v5"):
            assert f'data-series="{series}"' in plot(plot_id)
    # The Pis are mains powered (no battery figure): no battery line for them, not a line at zero.
    assert 'data-series="kws v1"' in plot("plot-battery")
    assert 'data-series="digits v5"' not in plot("plot-battery")
    assert "<circle" in plot("plot-psi")  # one evaluation plotted per feature
    drift = table_rows(html, "drift")
    assert drift[0][:4] == ["kws", "1", "all", "significant"]
    assert drift[0][4] == f"{max(run.drift_features.values()):.3g}"


def test_telemetry_filtered_to_one_model(run: Run, client_as: ClientAs) -> None:
    html = _html(client_as("viewer").get("/dashboard/telemetry?model=kws&hours=1&bucket_s=600"))
    assert {(r[0], r[1]) for r in table_rows(html, "versions")} == {("kws", "1"), ("kws", "2")}


def test_alerts_page(run: Run, client_as: ClientAs) -> None:
    html = _html(client_as("viewer").get("/dashboard/alerts"))
    rows = table_rows(html, "alerts")
    unresolved = [r[0] for r in rows if r[1] != "resolved"]
    assert unresolved == sorted(unresolved)  # most severe first
    titles = [r[2] for r in rows]
    for title in run.alert_titles:
        assert any(t.startswith(title) for t in titles)
    assert f'href="/dashboard/rollouts/{run.rollout_id}"' in html
    only_p2 = table_rows(_html(client_as("viewer").get("/dashboard/alerts?severity=P2")), "alerts")
    assert only_p2 and {r[0] for r in only_p2} == {"P2"}


def test_audit_log_for_admins_only(run: Run, app: FastAPI, client_as: ClientAs) -> None:
    html = _html(client_as("admin").get("/dashboard/audit?action=device.provision&limit=100"))
    rows = table_rows(html, "audit")
    assert sorted(r[3] for r in rows) == sorted(run.device_ids)
    assert all(r[1].startswith("operator-token") and r[4] == "ok" for r in rows)
    logins = table_rows(_html(client_as("admin").get("/dashboard/audit?action=dashboard.login")), "audit")
    assert logins and logins[0][1].startswith("admin-token")
    for role in ("viewer", "operator"):
        denied = client_as(role).get("/dashboard/audit")
        assert "needs 'admin'" in _error_message(_html(denied, 403))


# ----------------------------------------------------------------------------- actions, roles, CSRF


@pytest.fixture
def own_rollout(app: FastAPI, run: Run) -> str:
    """A running rollout of another model for tests that change state (the run's rollout stays running)."""
    with app.state.session_factory() as s:
        counter = 6 + int(s.scalar(select(func.count()).select_from(RolloutRow)) or 0)
        add_release(s, counter, model="digits")
        s.commit()
        # One active rollout per model and target: abort what earlier tests left running or paused.
        active = s.scalars(
            select(RolloutRow.id).where(
                RolloutRow.model_name == "digits", RolloutRow.status.in_(("running", "paused"))
            )
        ).all()
        for rollout_id in active:
            service.apply_action(s, rollout_id, "abort", actor="test", now=time.time(), builder=None)
        s.commit()
        rollout_id = start_rollout(s, f"digits-{counter}", "operator-token", time.time())
        s.commit()
    return rollout_id


def test_operator_pauses_and_resumes(app: FastAPI, own_rollout: str, client_as: ClientAs) -> None:
    c = client_as("operator")
    page = _html(c.get(f"/dashboard/rollouts/{own_rollout}"))
    assert 'id="action-pause"' in page and 'id="action-rollback"' in page
    _, revision, decisions = _rollout_state(app, own_rollout)
    r = c.post(f"/dashboard/rollouts/{own_rollout}/actions/pause", data={"csrf": csrf_of(page)})
    html = _html(r)
    assert 'id="rollout-status">paused<' in html and 'id="notice"' in html
    assert _rollout_state(app, own_rollout) == ("paused", revision + 1, decisions + 1)
    newest = table_rows(html, "decisions")[0]
    assert newest[2:4] == ["pause", "operator-token"]
    entry = _audit(app, "rollout.pause")[-1]
    assert (entry.actor, entry.target, entry.outcome) == ("operator-token", own_rollout, "ok")
    r = c.post(
        f"/dashboard/rollouts/{own_rollout}/actions/pause",
        data={"csrf": csrf_of(html), "override_soft_failures": "yes"},
    )
    assert "resume only" in _error_message(_html(r, 422))
    r = c.post(
        f"/dashboard/rollouts/{own_rollout}/actions/resume",
        data={"csrf": csrf_of(html), "override_soft_failures": "yes"},
    )
    assert 'id="rollout-status">running<' in _html(r)
    state = rollout_state(app.state.engine, own_rollout)
    assert state.soft_override_stage == state.stage_index  # what the REST resume with the override stores


def test_rollback_needs_confirmation(app: FastAPI, own_rollout: str, client_as: ClientAs) -> None:
    c = client_as("admin")
    csrf = csrf_of(_html(c.get(f"/dashboard/rollouts/{own_rollout}")))
    before = _rollout_state(app, own_rollout)
    r = c.post(f"/dashboard/rollouts/{own_rollout}/actions/rollback", data={"csrf": csrf})
    assert "confirmation" in _error_message(_html(r, 422))
    assert _rollout_state(app, own_rollout) == before
    r = c.post(
        f"/dashboard/rollouts/{own_rollout}/actions/rollback",
        data={"csrf": csrf, "confirm": "yes", "reason": "bad canary"},
    )
    html = _html(r)
    assert 'id="rollout-status">rolled back<' in html
    assert 'id="actions"' not in html  # nothing left to do
    # A second rollback is refused by the controller (409), not by the page.
    r = c.post(f"/dashboard/rollouts/{own_rollout}/actions/rollback", data={"csrf": csrf, "confirm": "yes"})
    assert "already rolled back" in _error_message(_html(r, 409))


def test_viewer_post_is_refused_and_audited(app: FastAPI, own_rollout: str, client_as: ClientAs) -> None:
    c = client_as("viewer")
    csrf = csrf_of(_html(c.get(f"/dashboard/rollouts/{own_rollout}")))  # the logout form's token
    before = _rollout_state(app, own_rollout)
    r = c.post(f"/dashboard/rollouts/{own_rollout}/actions/pause", data={"csrf": csrf})
    assert "needs 'operator'" in _error_message(_html(r, 403))
    assert _rollout_state(app, own_rollout) == before
    entry = _audit(app, "rollout.pause")[-1]
    assert (entry.actor, entry.outcome, entry.status_code) == ("viewer-token", "denied", 403)


@pytest.mark.parametrize("csrf", [None, "", "forged-token"])
def test_csrf_refusal(app: FastAPI, own_rollout: str, client_as: ClientAs, csrf: str | None) -> None:
    c = client_as("operator")
    before = _rollout_state(app, own_rollout)
    data = {} if csrf is None else {"csrf": csrf}
    r = c.post(f"/dashboard/rollouts/{own_rollout}/actions/pause", data=data)
    assert "CSRF" in _error_message(_html(r, 403))
    assert _rollout_state(app, own_rollout) == before


def test_csrf_token_of_another_session_is_refused(
    app: FastAPI, own_rollout: str, client_as: ClientAs
) -> None:
    other = csrf_of(_html(client_as("operator").get("/dashboard")))
    before = _rollout_state(app, own_rollout)
    r = client_as("operator").post(f"/dashboard/rollouts/{own_rollout}/actions/pause", data={"csrf": other})
    _html(r, 403)
    assert _rollout_state(app, own_rollout) == before


# ----------------------------------------------------------------------------- bad ids and parameters


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/dashboard/rollouts/ro-doesnotexist", 404, "does not exist"),
        ("/dashboard/rollouts/bad%20id!", 422, "rollout_id"),
        ("/dashboard/rollouts/" + "x" * 65, 422, "rollout_id"),
        ("/dashboard?page=0", 422, "page"),
        ("/dashboard?page=abc", 422, "page"),
        ("/dashboard?page=99", 404, "past the last page"),
        ("/dashboard?limit=0", 422, "limit"),
        ("/dashboard?limit=101", 422, "maximum page size"),
        ("/dashboard?limit=100000", 422, "limit"),
        ("/dashboard/rollouts?status=exploded", 422, "status"),
        ("/dashboard/telemetry?hours=0", 422, "hours"),
        ("/dashboard/telemetry?hours=1e9", 422, "hours"),
        ("/dashboard/telemetry?model=no-such-model", 404, "no-such-model"),
        ("/dashboard/telemetry?model=bad%20name", 422, "model"),
        ("/dashboard/telemetry?hours=48&bucket_s=1", 422, "bucket"),
        ("/dashboard/telemetry?hours=2000&bucket_s=60", 422, "points"),
        ("/dashboard/alerts?severity=P9", 422, "severity"),
        ("/dashboard/alerts?state=gone", 422, "state"),
        ("/dashboard/audit?outcome=maybe", 422, "outcome"),
    ],
)
def test_bad_ids_and_params_get_an_error_page(
    run: Run, client_as: ClientAs, path: str, status: int, fragment: str
) -> None:
    html = _html(client_as("admin").get(path), status)
    assert fragment in _error_message(html)


def test_bad_action_requests_change_nothing(app: FastAPI, run: Run, client_as: ClientAs) -> None:
    c = client_as("operator")
    csrf = csrf_of(_html(c.get("/dashboard")))
    before = _rollout_state(app, run.rollout_id)
    audit_before = len(_audit(app, "rollout.pause"))
    assert "does not exist" in _error_message(
        _html(c.post("/dashboard/rollouts/ro-nope/actions/pause", data={"csrf": csrf}), 404)
    )
    _html(c.post(f"/dashboard/rollouts/{run.rollout_id}/actions/explode", data={"csrf": csrf}), 422)
    _html(c.post(f"/dashboard/rollouts/{run.rollout_id}/actions/pause", data={"csrf": "x" * 500}), 422)
    assert _rollout_state(app, run.rollout_id) == before
    refused = _audit(app, "rollout.pause")[audit_before:]
    assert [(e.target, e.outcome) for e in refused] == [("ro-nope", "rejected")]


# ----------------------------------------------------------------------------- sign-in, sessions


def test_pages_need_a_session(run: Run, app: FastAPI) -> None:
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/dashboard/alerts?severity=P1", follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Falerts%3Fseverity%3DP1"
        before = _rollout_state(app, run.rollout_id)
        r = c.post(f"/dashboard/rollouts/{run.rollout_id}/actions/pause", data={"csrf": "x"})
        _html(r, 401)
        assert _rollout_state(app, run.rollout_id) == before


def test_login_sets_a_strict_httponly_cookie_and_returns_to_next(run: Run, app: FastAPI) -> None:
    with TestClient(app, raise_server_exceptions=False) as c:
        page = c.get("/dashboard/login?next=/dashboard/alerts")
        assert "content-security-policy" in page.headers
        r = c.post(
            "/dashboard/login",
            data={"token": run.tokens["viewer"], "csrf": csrf_of(page.text), "next": "/dashboard/alerts"},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/alerts"
        cookie = r.headers["set-cookie"].lower()
        assert "tinyfleet_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert run.tokens["viewer"].lower() not in cookie  # the token itself never goes into the cookie


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/api/v1/devices", "/dashboard\\x"]
)
def test_login_never_redirects_off_the_dashboard(run: Run, app: FastAPI, target: str) -> None:
    with TestClient(app, raise_server_exceptions=False) as c:
        page = c.get("/dashboard/login")
        r = c.post(
            "/dashboard/login",
            data={"token": run.tokens["viewer"], "csrf": csrf_of(page.text), "next": target},
            follow_redirects=False,
        )
        assert r.headers["location"] == "/dashboard"


def test_bad_logins(run: Run, app: FastAPI) -> None:
    with TestClient(app, raise_server_exceptions=False) as c:
        page = c.get("/dashboard/login")
        r = c.post("/dashboard/login", data={"token": "tfo_wrong", "csrf": csrf_of(page.text)})
        assert 'id="login-error"' in _html(r, 401)
        r = c.post("/dashboard/login", data={"token": run.tokens["admin"], "csrf": "forged"})
        assert "sign-in form" in _error_message(_html(r, 403))
        r = c.post("/dashboard/login", data={"csrf": csrf_of(page.text)})
        assert "token" in _error_message(_html(r, 422))
        r = c.post("/dashboard/login", data={"token": "x" * 301, "csrf": csrf_of(page.text)})
        _html(r, 422)
        assert c.get("/dashboard", follow_redirects=False).status_code == 303  # still signed out
    failed = [e for e in _audit(app, "POST /dashboard/login") if e.status_code == 401]
    assert failed and failed[-1].actor == "anonymous" and failed[-1].outcome == "denied"


def test_tampered_cookie_and_revoked_token_end_the_session(
    run: Run, app: FastAPI, client_as: ClientAs
) -> None:
    from fleet_server.auth import Role, issue_token

    with app.state.session_factory() as s:
        issued = issue_token(s, name=f"short-lived-{time.time_ns()}", role=Role.operator, created_by="test")
        s.commit()
    with TestClient(app, raise_server_exceptions=False) as c:
        assert login(c, issued.secret).status_code == 200
        cookie = c.cookies.get("tinyfleet_session")
        assert cookie
        body, sig = cookie.split(".")
        c.cookies.set("tinyfleet_session", body + "." + sig[::-1], path="/dashboard")
        assert c.get("/dashboard", follow_redirects=False).status_code == 303
        c.cookies.set("tinyfleet_session", cookie, path="/dashboard")
        assert c.get("/dashboard", follow_redirects=False).status_code == 200
        with app.state.session_factory() as s:
            from fleet_server.db import ApiToken

            row = s.get(ApiToken, issued.row.id)
            assert row is not None
            row.revoked_at = row.created_at
            s.commit()
        assert c.get("/dashboard", follow_redirects=False).status_code == 303


def test_logout_needs_csrf_and_ends_the_session(client_as: ClientAs, app: FastAPI) -> None:
    c = client_as("viewer")
    csrf = csrf_of(_html(c.get("/dashboard")))
    _html(c.post("/dashboard/logout", data={"csrf": "nope"}), 403)
    assert c.get("/dashboard", follow_redirects=False).status_code == 200
    r = c.post("/dashboard/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    assert c.get("/dashboard", follow_redirects=False).status_code == 303
    assert _audit(app, "dashboard.logout")[-1].actor == "viewer-token"


def test_static_stylesheet_is_served(app: FastAPI) -> None:
    with TestClient(app) as c:
        r = c.get("/dashboard/static/dashboard.css")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/css")
        assert "svg.plot" in r.text


def test_stored_text_is_escaped(app: FastAPI, run: Run, client_as: ClientAs) -> None:
    from fleet_server.alert_store import raise_alert

    evil = '<script>alert("x")</script>'
    with app.state.session_factory() as s:
        raise_alert(s, severity="P3", code="evil", title=evil, dedup_key="evil", evidence={"note": evil})
        s.commit()
    html = _html(client_as("viewer").get("/dashboard/alerts?severity=P3"))
    assert evil not in html and "&lt;script&gt;" in html
