"""The simulator's aiohttp application: REST, WebSocket, archive and control on ONE port.

Entry points:

* :func:`build_app` — the ``web.Application`` for a :class:`SimState`;
* :func:`run_simulator` — async context manager: binds, serves, yields a :class:`RunningSim`;
* :class:`SimulatorThread` — the same in a background thread with its own loop (for sync tests).

Time semantics (documented in sim/README.md): candles, ``serverTime``, ``E`` and the 24-hour
WebSocket cut follow SIM time; the weight window, the 418 ban, the 250 ms update spacing, ping
frames, pong timeouts and injected drops/slowness follow WALL time (they protect or exercise
the server and the network, which live in wall time).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sim.clock import SimClock
from sim.control import (
    handle_archive_requests,
    handle_availability,
    handle_delete_faults,
    handle_get_clock,
    handle_get_faults,
    handle_post_clock,
    handle_post_faults,
    handle_stats,
    handle_truth,
)
from sim.faults import Faults
from sim.funding import add_funding_routes
from sim.price_klines import add_price_kline_routes
from sim.rest import (
    fapi_middleware,
    handle_archive,
    handle_exchange_info,
    handle_klines,
    handle_ping,
    handle_time,
)
from sim.state import STATE_KEY, SimConfig, SimState
from sim.ws import (
    handle_legacy_stream,
    handle_legacy_ws,
    handle_market_stream,
    handle_market_ws,
)

__all__ = ["RunningSim", "SimConfig", "SimState", "SimulatorThread", "build_app", "run_simulator"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Application and runners
# ---------------------------------------------------------------------------------------------


def build_app(state: SimState) -> web.Application:
    app = web.Application(middlewares=[fapi_middleware])
    app[STATE_KEY] = state
    app.router.add_get("/fapi/v1/time", handle_time)
    app.router.add_get("/fapi/v1/ping", handle_ping)
    app.router.add_get("/fapi/v1/exchangeInfo", handle_exchange_info)
    app.router.add_get("/fapi/v1/klines", handle_klines)
    app.router.add_get("/market/stream", handle_market_stream)
    app.router.add_get("/market/ws", handle_market_ws)
    app.router.add_get("/market/ws/{streams:.*}", handle_market_ws)
    app.router.add_get("/stream", handle_legacy_stream)
    app.router.add_get("/ws", handle_legacy_ws)
    app.router.add_get("/ws/{streams:.*}", handle_legacy_ws)
    add_funding_routes(app, state)  # before the catch-all /data/ route
    add_price_kline_routes(app, state)
    app.router.add_get("/data/{tail:.*}", handle_archive)
    app.router.add_get("/sim/faults", handle_get_faults)
    app.router.add_post("/sim/faults", handle_post_faults)
    app.router.add_delete("/sim/faults", handle_delete_faults)
    app.router.add_get("/sim/clock", handle_get_clock)
    app.router.add_post("/sim/clock", handle_post_clock)
    app.router.add_get("/sim/truth", handle_truth)
    app.router.add_get("/sim/archive-requests", handle_archive_requests)
    app.router.add_get("/sim/availability", handle_availability)
    app.router.add_get("/sim/stats", handle_stats)

    async def close_connections(app: web.Application) -> None:
        for conn in list(state.connections):
            await conn.close(1001, "server shutdown")

    app.on_shutdown.append(close_connections)
    return app


@dataclass(frozen=True, slots=True)
class RunningSim:
    """A started simulator: where to reach it and its state (owned by the serving loop)."""

    state: SimState
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def run_simulator(config: SimConfig | None = None) -> AsyncIterator[RunningSim]:
    """Serve the simulator on the running loop until the block exits."""
    cfg = config or SimConfig()
    state = SimState(cfg)
    runner = web.AppRunner(
        build_app(state), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.port))
        site = web.SockSite(runner, sock)
        await site.start()
        port = sock.getsockname()[1]
        yield RunningSim(state, cfg.host, port)
    finally:
        await runner.cleanup()
        sock.close()


class SimulatorThread:
    """The simulator in a background thread with its own event loop (port 0 by default).

    >>> with SimulatorThread(speed=60, start_ms=1_700_000_000_000) as sim:
    ...     sim.url, sim.ws_url
    """

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        base = config or SimConfig()
        if isinstance(overrides.get("faults"), Mapping):
            overrides["faults"] = Faults().updated(overrides["faults"])
        if "symbols" in overrides:
            overrides["symbols"] = tuple(overrides["symbols"])
        self.config = dataclasses.replace(base, **overrides)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._running: RunningSim | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="qryptify-sim", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError("simulator failed to start") from self._error
        if self._running is None:
            raise RuntimeError("simulator did not start within 30 s")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=30)
        self._thread = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - surfaced to the starting thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with run_simulator(self.config) as running:
            self._running = running
            self._ready.set()
            await self._stop.wait()

    # -- accessors -----------------------------------------------------------------------------

    @property
    def running(self) -> RunningSim:
        if self._running is None:
            raise RuntimeError("simulator not started")
        return self._running

    @property
    def state(self) -> SimState:
        return self.running.state

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def ws_url(self) -> str:
        return self.running.ws_url

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def clock(self) -> SimClock:
        return self.state.clock

    def now_ms(self) -> int:
        return self.state.clock.now_ms()

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the simulator's loop (its state is owned there) and return its result."""
        if self._loop is None:
            raise RuntimeError("simulator not started")

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=30)

    def set_faults(self, **patch: Any) -> Faults:
        """Patch fault flags (same keys as ``POST /sim/faults``); returns the new flags."""
        state = self.state

        def apply() -> Faults:
            state.set_faults(state.faults.updated(patch))
            return state.faults

        faults: Faults = self._call(apply)
        return faults

    def reset_faults(self) -> None:
        state = self.state
        self._call(lambda: state.set_faults(Faults(seed=state.faults.seed)))

    def advance(self, delta_ms: int) -> int:
        state = self.state
        return int(self._call(lambda: state.advance(delta_ms)))

    def set_speed(self, speed: float) -> None:
        self.state.clock.set_speed(speed)

    def stats(self) -> dict[str, int]:
        state = self.state
        return dict(self._call(lambda: state.stats.to_json()))

    def archive_requests(self) -> dict[str, int]:
        """Requests per archive path (zips and CHECKSUMs) since start."""
        state = self.state
        return dict(self._call(lambda: dict(state.archive_requests)))
