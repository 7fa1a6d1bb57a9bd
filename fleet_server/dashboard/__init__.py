"""The web dashboard: server-rendered pages (Jinja2 + inline SVG plots, no JavaScript) under /dashboard.

``router`` holds every page; ``STATIC_DIR`` is mounted at /dashboard/static by the app factory.
Sign-in uses an operator API token; see docs/dashboard.md.
"""

from fastapi import APIRouter

from fleet_server.dashboard import (
    routes_alerts,
    routes_fleet,
    routes_login,
    routes_rollouts,
    routes_telemetry,
)
from fleet_server.dashboard.web import PREFIX, STATIC_DIR

router = APIRouter()
for _module in (routes_login, routes_fleet, routes_rollouts, routes_telemetry, routes_alerts):
    router.include_router(_module.router)

__all__ = ["PREFIX", "STATIC_DIR", "router"]
