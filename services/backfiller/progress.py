"""Where each pair stands in a pass, and the progress shown: a tqdm bar on a terminal,
otherwise one log line per pair every few seconds."""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Gauge
from tqdm import tqdm

from qryptify.binance.rest import SymbolInfo
from qryptify.kline import Kline
from qryptify.pairs import Pair
from qryptify.planning import PairRange

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0

BEHIND = Gauge(
    "qryptify_backfill_candles_remaining",
    "Candles left in the current pass",
    ["symbol", "interval"],
)


@dataclass(slots=True)
class PairState:
    pair: Pair
    info: SymbolInfo | None = None
    range: PairRange | None = None
    position: int | None = None  # newest open time published by this process (or resumed)
    total: int = 0  # candles expected in this pass
    done: int = 0  # grid slots handled in this pass (candles + confirmed empty)
    recent: OrderedDict[int, Kline] = field(default_factory=OrderedDict)
    failed: str | None = None
    last_end_ms: int | None = None  # stopped contract without a settlement date: end of data


class Progress:
    """A tqdm bar on a terminal; otherwise one log line per pair every few seconds."""

    def __init__(self, states: Sequence[PairState], every_s: float = PROGRESS_EVERY_S) -> None:
        self.states = states
        self.every_s = every_s
        self.started = time.monotonic()
        self._last_log = self.started
        self._bar: tqdm[Any] | None = None
        if sys.stderr.isatty():
            total = sum(s.total for s in states)
            self._bar = tqdm(total=total, unit="candle", unit_scale=True, desc="backfill")

    def advance(self, state: PairState, slots: int) -> None:
        state.done += slots
        BEHIND.labels(state.pair.symbol, state.pair.interval).set(max(0, state.total - state.done))
        if self._bar is not None:
            self._bar.update(slots)
            return
        now = time.monotonic()
        if now - self._last_log >= self.every_s:
            self._last_log = now
            self.log()

    def log(self) -> None:
        elapsed = max(1e-6, time.monotonic() - self.started)
        for s in self.states:
            if s.total == 0:
                continue
            rate = s.done / elapsed
            eta = (s.total - s.done) / rate if rate > 0 else float("inf")
            logger.info(
                "progress %s: %d/%d candles (%.0f%%), %.0f/s, ETA %s",
                s.pair,
                s.done,
                s.total,
                100.0 * s.done / s.total,
                rate,
                "-" if eta == float("inf") else f"{eta:.0f}s",
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
