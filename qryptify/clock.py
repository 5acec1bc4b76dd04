"""Clocks. "Closed" and "now" come from the exchange's clock (invariant 5), never the local one."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class MonotonicClock:
    """Local milliseconds of ``time.monotonic``: wall speed, immune to wall-clock steps. For
    deadlines and windows measured locally (batching, the weight budget), never for "now"."""

    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


class FixedClock:
    """For tests: a clock that moves only when told."""

    def __init__(self, now_ms: int) -> None:
        self._now = now_ms

    def now_ms(self) -> int:
        return self._now

    def set(self, now_ms: int) -> None:
        self._now = now_ms

    def advance(self, ms: int) -> None:
        self._now += ms


def server_offset_ms(sent_ms: int, received_ms: int, server_ms: int) -> int:
    """Exchange time minus local time, assuming the server stamped mid-way through the RTT."""
    return server_ms - (sent_ms + received_ms) // 2


class ExchangeClock:
    """Local monotonic time (``MonotonicClock`` unless told otherwise) plus the offset last
    measured against ``/fapi/v1/time``, so a step of the local wall clock (NTP, an operator)
    cannot make a candle look closed early. Readings never go backwards, even when a new
    measurement lowers the offset.
    """

    def __init__(self, local: Clock | None = None) -> None:
        self._local = local or MonotonicClock()
        self._lock = threading.Lock()
        self._offset_ms = 0
        self._synced = False
        self._last_ms = 0

    @property
    def synced(self) -> bool:
        return self._synced

    @property
    def offset_ms(self) -> int:
        return self._offset_ms

    def observe(self, sent_ms: int, received_ms: int, server_ms: int) -> None:
        with self._lock:
            self._offset_ms = server_offset_ms(sent_ms, received_ms, server_ms)
            self._synced = True

    def local_ms(self) -> int:
        return self._local.now_ms()

    def now_ms(self) -> int:
        with self._lock:
            now = self._local.now_ms() + self._offset_ms
            # Never run backwards, even when a new measurement lowers the offset.
            self._last_ms = max(self._last_ms, now)
            return self._last_ms
