"""Opt-in HTTP endpoints for operators: ``/metrics`` (Prometheus) and ``/healthz``.

Off unless ``METRICS_PORT`` is set, and bound to 127.0.0.1 by default: the bridge runs on
acquisition laptops and should not open ports to the lab network unless asked.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from bridge.observe.metrics import Metrics

log = logging.getLogger(__name__)

#: (ready, details) -> served as 200 or 503 with the details as JSON.
HealthCheck = Callable[[], tuple[bool, dict]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Scrapes every few seconds would flood the log."""


class _ThreadingWSGIServer(WSGIServer):
    daemon_threads = True


class HealthServer:
    def __init__(self, host: str, port: int, metrics: Metrics, check: HealthCheck) -> None:
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._check = check
        self._server = make_server(host, port, self._app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

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
        self._thread.start()
        log.info("metrics and health on http://%s:%d/metrics and /healthz", self._server.server_address[0], self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
