"""Prometheus metrics for the HTTP API, on a registry per app (tests build many apps in one process).

Collected by a pure ASGI middleware: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``)
spawns a task group, a memory stream and a streaming response wrapper per request, which cost more
event-loop time than the whole of a small route (see bench/RESULTS-server-api.md).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Route templates, never raw paths, as labels: bounded cardinality.
UNMATCHED = "<unmatched>"


class HttpMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tinyfleet_http_requests",
            "HTTP requests handled, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tinyfleet_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )


def scope_route_template(scope: Scope) -> str:
    """The matched route's path template (the router records the route in the shared scope)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


def route_template(request: Request) -> str:
    return scope_route_template(request.scope)


class MetricsMiddleware:
    """Counts requests and observes latency per (method, route template, status)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets when the app raises before starting a response

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope_route_template(scope)
            method: Any = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)


def install_metrics(app: FastAPI, metrics: HttpMetrics) -> None:
    app.add_middleware(MetricsMiddleware, metrics=metrics)
