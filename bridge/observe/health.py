"""Opt-in HTTP endpoints for operators: ``/metrics`` (Prometheus) and ``/healthz``.

Off unless ``METRICS_PORT`` is set, and bound to 127.0.0.1 by default: the bridge runs on
acquisition laptops and should not open ports to the lab network unless asked.
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Iterable

from prometheus_client import start_http_server

from bridge.observe.metrics import Metrics

log = logging.getLogger(__name__)

#: (ready, details) -> served as 200 or 503 with the details as JSON.
HealthCheck = Callable[[], tuple[bool, dict]]


class HealthServer:
    """prometheus-client's own threaded server, with ``/healthz`` routed beside its ``/metrics``.

    ``start_http_server`` binds (an ``OSError`` here means the port is taken) and starts serving
    in a daemon thread at once. It serves the registry on every path, so its WSGI app is wrapped
    (``set_app``, the standard wsgiref hook) to answer ``/healthz`` and 404 for unknown paths; in the
    microseconds before that, a request would get the metrics text. The one-line "metrics and
    health on ..." log comes after the wrap.
    """

    def __init__(self, host: str, port: int, metrics: Metrics, check: HealthCheck) -> None:
        self._check = check
        self._server, self._thread = start_http_server(port, addr=host, registry=metrics.registry)
        self._metrics_app = self._server.get_app()
        self._server.set_app(self._app)
        self.port = self._server.server_port

    def _app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            ready, details = self._check()
            body = json.dumps({"ready": ready, **details}, sort_keys=True).encode()
            status = "200 OK" if ready else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    def start(self) -> None:
        log.info("metrics and health on http://%s:%d/metrics and /healthz", self._server.server_address[0], self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
