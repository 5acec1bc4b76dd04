"""Prometheus metrics and the /healthz endpoint, served on one small HTTP thread per service."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

logger = logging.getLogger(__name__)

SERVICE_PORT_OFFSET = {"backfiller": 0, "producer": 1, "sink": 2, "replay": 3}


class Health:
    """Ready / not ready with a reason; services flip it as their edges come and go."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = False
        self._reason = "starting"

    def set(self, ready: bool, reason: str) -> None:
        with self._lock:
            self._ready, self._reason = ready, reason

    def get(self) -> tuple[bool, str]:
        with self._lock:
            return self._ready, self._reason


def serve_metrics(
    host: str, port: int, health: Health, registry: CollectorRegistry = REGISTRY
) -> ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/healthz`` in a daemon thread; port 0 picks a free port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.startswith("/metrics"):
                body, status, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
            elif self.path.startswith("/healthz"):
                ready, reason = health.get()
                body = json.dumps({"ready": ready, "reason": reason}).encode()
                status, ctype = (200 if ready else 503), "application/json"
            else:
                body, status, ctype = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    logger.info("metrics on http://%s:%d/metrics, health on /healthz", host, server.server_port)
    return server
