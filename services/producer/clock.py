"""The producer's exchange clock: ``qryptify.clock.ExchangeClock`` that also follows the
exchange clock's *rate* and the stream's event times.

* Rate: ``/fapi/v1/time`` observations give exchange ms per local ms. Against Binance this is 1
  (within noise, snapped to exactly 1); against the simulator at speed N it is N, and an
  offset-only clock would fall behind by (N - 1) × elapsed between syncs.
* Noise: the server stamps its time somewhere inside the round trip, and a busy server makes
  round trips long. As in NTP, the observations with the shortest round trips are trusted: the
  anchor is the recent one with the smallest RTT, the rate is measured between the best old
  and the best new one.
* Event times: a valid frame's ``E`` is exchange time the exchange has already reached, so
  "now" never reads earlier than the newest one (bounded, so a bogus ``E`` cannot jump it).

Nothing decides "closed" from this clock alone: WebSocket candles are closed by their ``x``
flag, REST candles by being followed by a newer row (see ``stream.closed_rest_klines``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import NamedTuple

from qryptify.clock import Clock, ExchangeClock

#: Observations older than this (local ms) no longer take part in the estimates.
RATE_WINDOW_MS = 30_000
#: The anchor is the best observation of this recent span (local ms).
ANCHOR_WINDOW_MS = 5_000
#: A rate this close to 1 is 1: the real exchange runs at wall speed.
RATE_SNAP = 0.02
#: An event time more than this ahead of the estimate is not trusted to move the clock.
MAX_EVENT_LEAD_MS = 600_000


class MonotonicClock:
    """Local milliseconds from ``time.monotonic_ns``: immune to wall-clock steps."""

    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


class _Obs(NamedTuple):
    mid: int  # local ms, middle of the round trip
    server: int  # exchange ms
    rtt: int  # local ms


def _best(observations: list[_Obs]) -> _Obs:
    return min(observations, key=lambda o: (o.rtt, -o.mid))


class StreamClock(ExchangeClock):
    def __init__(self, local: Clock | None = None) -> None:
        super().__init__(local or MonotonicClock())
        self._mutex = threading.Lock()
        self._obs: deque[_Obs] = deque()
        self._rate = 1.0
        self._anchor: _Obs | None = None
        self._floor = 0  # newest trusted event time / previous reading

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def uncertainty_ms(self) -> int:
        """How far "now" may be off: half the anchor's round trip, in exchange ms."""
        anchor = self._anchor
        return (0 if anchor is None else int(anchor.rtt / 2 * self._rate)) + 1

    def observe(self, sent_ms: int, received_ms: int, server_ms: int) -> None:
        super().observe(sent_ms, received_ms, server_ms)
        obs = _Obs((sent_ms + received_ms) // 2, server_ms, max(0, received_ms - sent_ms))
        with self._mutex:
            self._obs.append(obs)
            while len(self._obs) > 2 and obs.mid - self._obs[0].mid > RATE_WINDOW_MS:
                self._obs.popleft()
            recent = [o for o in self._obs if obs.mid - o.mid <= ANCHOR_WINDOW_MS]
            anchor = _best(recent)
            older = [o for o in self._obs if anchor.mid - o.mid >= 50]
            if older:
                base = _best(older[: max(1, len(older) // 2)] if len(older) > 2 else older)
                rate = (anchor.server - base.server) / (anchor.mid - base.mid)
                self._rate = 1.0 if abs(rate - 1.0) <= RATE_SNAP else max(rate, 0.0)
            self._anchor = anchor

    def observe_event(self, event_ms: int) -> None:
        """A frame's ``E``: the exchange has reached at least this time."""
        estimate = self._estimate()
        if estimate is not None and event_ms > estimate + MAX_EVENT_LEAD_MS:
            return
        with self._mutex:
            self._floor = max(self._floor, event_ms)

    def _estimate(self) -> int | None:
        with self._mutex:
            anchor = self._anchor
            rate = self._rate
        if anchor is None:
            return None
        return anchor.server + int((self.local_ms() - anchor.mid) * rate)

    def now_ms(self) -> int:
        estimate = self._estimate()
        with self._mutex:
            if estimate is None:
                estimate = super().now_ms()
            self._floor = max(self._floor, estimate)
            return self._floor
