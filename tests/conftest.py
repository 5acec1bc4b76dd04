"""Shared test data: a kline factory and fixed clocks. No I/O here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings

from qryptify.kline import Kline
from qryptify.pairs import close_time

# Timings are never asserted: a property example that runs slowly on a loaded CI machine is
# not a failure (hypothesis' default 200 ms deadline would make it one).
settings.register_profile("qryptify", deadline=None)
settings.load_profile("qryptify")

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def make_kline(
    symbol: str = "BTCUSDT",
    interval: str = "1m",
    open_time: int = T0,
    *,
    close: str = "42000.5",
    source: str = "rest",
    **overrides: Any,
) -> Kline:
    values: dict[str, Any] = {
        "symbol": symbol,
        "interval": interval,
        "open_time": open_time,
        "close_time": overrides.pop("close_time", None) or close_time(interval, open_time),
        "open": "42000.0",
        "high": "42100.0",
        "low": "41900.0",
        "close": close,
        "volume": "12.345",
        "quote_volume": "518000.25",
        "trades": 321,
        "taker_buy_base": "6.1",
        "taker_buy_quote": "256000.0",
        "source": source,
        "ingested_at": open_time + 61_000,
    }
    values.update(overrides)
    return Kline(**values)


@pytest.fixture
def kline_factory() -> Callable[..., Kline]:
    return make_kline
