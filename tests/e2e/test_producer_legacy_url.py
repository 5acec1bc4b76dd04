"""The 2026-04-23 WebSocket URL change: the seed's legacy ``/stream`` URL connects but delivers
no kline frame, the routed ``/market/stream`` URL does, and the producer's configuration turns
the one into the other."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

from qryptify.binance.ws import KlineFrame, parse_frame, stream_url
from qryptify.config import build_config
from sim.server import SimulatorThread

pytestmark = pytest.mark.e2e

STREAMS = ["btcusdt@kline_1m", "ethusdt@kline_1m"]
WINDOW_S = 3.0  # wall; at speed 60 three simulated minutes: three closes per stream


async def collect(url: str, seconds: float) -> tuple[int, int]:
    """(kline frames, closed kline frames) received on ``url`` within ``seconds``."""
    frames = closed = 0
    async with connect(url, proxy=None, open_timeout=10) as ws:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                message = await asyncio.wait_for(ws.recv(), timeout=left)
            except TimeoutError:
                break
            frame = parse_frame(message, 0)
            if isinstance(frame, KlineFrame):
                frames += 1
                closed += frame.closed
    return frames, closed


async def both(legacy: str, routed: str) -> tuple[tuple[int, int], tuple[int, int]]:
    return await asyncio.gather(collect(legacy, WINDOW_S), collect(routed, WINDOW_S))


def test_legacy_path_sends_nothing_while_market_path_delivers() -> None:
    with SimulatorThread(speed=60) as sim:
        legacy_endpoint = f"{sim.ws_url}/stream"
        legacy_url = f"{legacy_endpoint}?streams={'/'.join(STREAMS)}"
        # What the producer connects to when configured with the legacy endpoint.
        cfg = build_config({"ws": {"endpoint": legacy_endpoint}})
        routed_url = stream_url(cfg.ws.endpoint, STREAMS)
        assert routed_url == f"{sim.ws_url}/market/stream?streams={'/'.join(STREAMS)}"
        assert len(cfg.warnings) == 1 and "rewritten" in cfg.warnings[0]

        (legacy_frames, _), (routed_frames, routed_closed) = asyncio.run(
            both(legacy_url, routed_url)
        )

    # The same window, the same streams: the old path stays silent (handshake completed).
    assert legacy_frames == 0
    assert routed_frames > 0 and routed_closed >= 2
