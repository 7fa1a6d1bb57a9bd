"""Application factory: ``create_app(settings)`` wires engine, migrations, routes, errors, metrics, audit."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from fleet_server import dashboard
from fleet_server.api.audit_middleware import install_audit
from fleet_server.api.body_limit import install_body_limit
from fleet_server.api.errors import install_error_handlers
from fleet_server.api.metrics import HttpMetrics, install_metrics
from fleet_server.api.routes import (
    alerts,
    artifacts,
    audit,
    device_self,
    devices,
    drift,
    health,
    keys,
    releases,
    retraining,
    rollouts,
    telemetry,
    tokens,
)
from fleet_server.api.routes import models as model_routes
from fleet_server.db import make_engine, make_session_factory
from fleet_server.db.migrate import upgrade_to_head
from fleet_server.settings import Settings

API_VERSION = "0.1.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. With ``settings.migrate_on_start`` the database is upgraded to head right here."""
    settings = settings or Settings()
    if settings.is_sqlite:
        settings.ensure_dirs()
    engine = make_engine(settings.database_url, echo=settings.db_echo)
    if settings.migrate_on_start:
        upgrade_to_head(engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        runner = None
        if settings.rollout_runner_enabled:  # the rollout runner thread (leads only if it gets the lock)
            from fleet_server.rollout_runner.metrics import RolloutMetrics
            from fleet_server.rollout_runner.runner import build_runner

            clock = getattr(_app.state, "rollout_clock", time.time)
            metrics = RolloutMetrics.on(_app.state.metrics.registry)  # rollout states on GET /metrics
            runner = build_runner(settings, engine, now=clock, metrics=metrics)
            runner.start()
        drift_scheduler = None
        if settings.drift_scheduler_enabled:  # PSI/KS/JS per version and cohort, alerts, retraining webhook
            from fleet_server.drift.scheduler import DriftScheduler

            drift_scheduler = DriftScheduler(_app.state.session_factory, settings)
            drift_scheduler.start()
        yield
        if drift_scheduler is not None:
            drift_scheduler.stop()
        if runner is not None:
            runner.stop()
        engine.dispose()

    app = FastAPI(
        title="TinyFleet fleet server",
        version=API_VERSION,
        description="Operator API (Bearer tokens: viewer < operator < admin) and device API (HTTP Basic "
        'with the device id and secret). Errors: {"error": {"code", "message", "details"}}.',
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.metrics = HttpMetrics()

    install_error_handlers(app)
    # Middleware added last runs first: metrics wraps everything, including the audit write; the body
    # limit sits inside the audit so that oversized requests are audited too.
    install_body_limit(app)
    install_audit(app)
    install_metrics(app, app.state.metrics)
    for module in (
        health,
        devices,
        device_self,
        tokens,
        audit,
        dashboard,
        releases,
        keys,
        artifacts,
        model_routes,
        rollouts,
        telemetry,
        drift,
        alerts,
        retraining,
    ):
        app.include_router(module.router)
    app.mount(
        f"{dashboard.PREFIX}/static", StaticFiles(directory=dashboard.STATIC_DIR), name="dashboard-static"
    )
    return app
