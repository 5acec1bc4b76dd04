"""The producer's exchange clock: ``qryptify.clock.ExchangeClock`` that also follows the
exchange clock's *rate* and the stream's event times.

* Rate: ``/fapi/v1/time`` observations give exchange ms per local ms. Against Binance this is 1
  (anything near 1 is snapped to exactly 1); against the simulator at speed N it is N, and an
  offset-only clock would fall behind by (N - 1) × elapsed between syncs. The rate is measured
  between the newest observation and the newest one at least ``RATE_BASELINE_MS`` older, so a
  change of speed is followed within one or two syncs.
* Noise: the server stamps its time somewhere inside the round trip, and a busy server makes
  round trips long. As in NTP, the recent observation with the shortest round trip anchors
  the estimate.
* Event times: a valid frame's ``E`` was the exchange's time when it sent the frame. While
  frames flow, the newest one anchors the estimate (extrapolated only over the milliseconds
  since), so a wrong rate or a slow sync cannot carry the clock far off.

Readings never go backwards. Nothing decides "closed" from this clock alone: WebSocket candles
are closed by their ``x`` flag, REST candles by being followed by a newer row (see
``stream.closed_rest_klines``).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import NamedTuple

from qryptify.clock import Clock, ExchangeClock, MonotonicClock

#: Observations kept for the estimates (local ms).
OBS_WINDOW_MS = 600_000
#: The time anchor is the best observation of this recent span (local ms).
ANCHOR_WINDOW_MS = 3_000
#: The rate is measured over at least this much local time.
RATE_BASELINE_MS = 1_000
#: A rate within these bounds is 1: the real exchange runs at wall speed.
RATE_SNAP = (0.8, 1.25)
#: An event time more than this ahead of the estimate is not trusted.
MAX_EVENT_LEAD_MS = 600_000


class _Obs(NamedTuple):
    local: int  # local ms (middle of the round trip, or when the frame arrived)
    server: int  # exchange ms
    rtt: int  # local ms; 0 for event times


class StreamClock(ExchangeClock):
    def __init__(self, local: Clock | None = None) -> None:
        super().__init__(local or MonotonicClock())
        self._mutex = threading.Lock()
        self._obs: deque[_Obs] = deque()
        self._rate = 1.0
        self._time_anchor: _Obs | None = None
        self._event_anchor: _Obs | None = None
        self._last = 0

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def uncertainty_ms(self) -> int:
        """How far "now" may be ahead: half the time anchor's round trip, in exchange ms."""
        anchor = self._time_anchor
        return (0 if anchor is None else int(anchor.rtt / 2 * self._rate)) + 1

    def observe(self, sent_ms: int, received_ms: int, server_ms: int) -> None:
        super().observe(sent_ms, received_ms, server_ms)
        obs = _Obs((sent_ms + received_ms) // 2, server_ms, max(0, received_ms - sent_ms))
        with self._mutex:
            self._obs.append(obs)
            while len(self._obs) > 2 and obs.local - self._obs[0].local > OBS_WINDOW_MS:
                self._obs.popleft()
            recent = [o for o in self._obs if obs.local - o.local <= ANCHOR_WINDOW_MS]
            anchor = min(recent, key=lambda o: (o.rtt, -o.local))
            base = next(
                (o for o in reversed(self._obs) if anchor.local - o.local >= RATE_BASELINE_MS),
                None,
            )
            if base is not None:
                rate = (anchor.server - base.server) / (anchor.local - base.local)
                low, high = RATE_SNAP
                self._rate = 1.0 if low <= rate <= high else max(rate, 0.0)
            self._time_anchor = anchor

    def observe_event(self, event_ms: int) -> None:
        """A frame's ``E``, just received: the exchange's time a moment ago. Called for every
        frame, so it takes the lock once and builds nothing unless the anchor moves."""
        local = self.local_ms()
        with self._mutex:
            anchor = self._event_anchor
            if anchor is not None and event_ms < anchor.server:
                return  # older than the anchor: nothing to learn
            estimate = self._estimate_locked(local)
            if estimate is not None and event_ms > estimate + MAX_EVENT_LEAD_MS:
                return
            self._event_anchor = _Obs(local, event_ms, 0)

    def _estimate(self, local: int) -> int | None:
        with self._mutex:
            return self._estimate_locked(local)

    def _estimate_locked(self, local: int) -> int | None:
        """The estimate from the newer of the two anchors (by local time, then exchange time);
        the caller holds ``_mutex``."""
        newest = self._time_anchor
        event_anchor = self._event_anchor
        if newest is None or (
            event_anchor is not None
            and (event_anchor.local, event_anchor.server) > (newest.local, newest.server)
        ):
            newest = event_anchor
        if newest is None:
            return None
        return newest.server + int((local - newest.local) * self._rate)

    def now_ms(self) -> int:
        estimate = self._estimate(self.local_ms())
        if estimate is None:
            estimate = super().now_ms()
        with self._mutex:
            self._last = max(self._last, estimate)
            return self._last
