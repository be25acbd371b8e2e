"""Request ids, structured JSON logs and Prometheus metrics.

Every request gets an id (the caller's `X-Request-ID` when it is sane, else a
new one), returned in the `X-Request-ID` header and written on every log line
emitted while the request runs. Metrics are labelled by route template, never
by raw path, so their cardinality stays fixed.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
access_log = logging.getLogger("astra.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the current request id."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info") -> None:
    """JSON logs on stderr for the app, uvicorn's own loggers included."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # replaced by astra.access


class Metrics:
    """The app's own Prometheus registry."""

    def __init__(self, app: FastAPI) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "astra_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "astra_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.registry.register(_PoolCollector(app))

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class _PoolCollector(Collector):
    """Database pool use, read when scraped."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size = GaugeMetricFamily("astra_db_pool_size", "Open connections.", labels=["pool"])
        idle = GaugeMetricFamily("astra_db_pool_idle", "Idle connections.", labels=["pool"])
        pools = {"writer": getattr(self._app.state, "writepool", None)}
        reader = getattr(self._app.state, "readpool", None)
        if reader is not None and reader is not pools["writer"]:
            pools["reader"] = reader
        for name, pool in pools.items():
            if pool is not None:
                size.add_metric([name], pool.get_size())
                idle.add_metric([name], pool.get_idle_size())
        yield size
        yield idle


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class RequestContextMiddleware:
    """Request id in and out, one access log line and the metrics of each request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER.lower(), "")
        request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route, scope["method"]).observe(elapsed)
            key = scope.get("state", {}).get("api_key")
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "fields": {
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "key": getattr(key, "name", None),
                    }
                },
            )
            request_id_var.reset(token)


def install(app: FastAPI, prefix: str) -> None:
    """Request ids, access logs and `GET {prefix}/_mgmt/metrics` on `app`."""
    metrics = Metrics(app)
    app.state.metrics = metrics

    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics of this worker process."""
        return metrics.render()

    app.add_api_route(
        f"{prefix}/_mgmt/metrics",
        prometheus_metrics,
        methods=["GET"],
        tags=["Liveliness/Readiness"],
        name="Metrics",
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
