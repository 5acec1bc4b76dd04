"""``/metrics`` and ``/healthz`` over real HTTP on localhost (port 0)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry, Counter

from qryptify.metrics import Health, serve_metrics


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def health() -> Health:
    return Health()


@pytest.fixture
def server(registry: CollectorRegistry, health: Health) -> Iterator[ThreadingHTTPServer]:
    srv = serve_metrics("127.0.0.1", 0, health, registry)
    yield srv
    srv.shutdown()
    srv.server_close()


def get(server: ThreadingHTTPServer, path: str) -> tuple[int, str, bytes]:
    url = f"http://127.0.0.1:{server.server_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - fixed http URL
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read()


def test_port_zero_binds_a_free_port(server: ThreadingHTTPServer) -> None:
    assert server.server_port > 0


def test_metrics_exposes_the_registry(
    server: ThreadingHTTPServer, registry: CollectorRegistry
) -> None:
    written = Counter("qryptify_test_rows_written", "rows written", ["pair"], registry=registry)
    written.labels(pair="BTCUSDT|1m").inc(42)
    status, ctype, body = get(server, "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    assert 'qryptify_test_rows_written_total{pair="BTCUSDT|1m"} 42.0' in body.decode()


def test_healthz_follows_the_health_flag(server: ThreadingHTTPServer, health: Health) -> None:
    status, ctype, body = get(server, "/healthz")
    assert (status, ctype) == (503, "application/json")
    assert json.loads(body) == {"ready": False, "reason": "starting"}

    health.set(True, "consuming")
    status, _, body = get(server, "/healthz")
    assert status == 200
    assert json.loads(body) == {"ready": True, "reason": "consuming"}

    health.set(False, "database unavailable")
    status, _, body = get(server, "/healthz")
    assert status == 503
    assert json.loads(body)["reason"] == "database unavailable"


def test_unknown_paths_are_404(server: ThreadingHTTPServer) -> None:
    status, _, body = get(server, "/nope")
    assert status == 404
    assert body == b"not found\n"
