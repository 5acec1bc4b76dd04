"""The simulator's clock: sim time = a chosen start + speed × elapsed wall time.

Wall time is read through an injectable monotonic function so that the clock is a pure object
in unit tests. Changing the speed rebases the clock at the current instant, so sim time never
jumps when the speed changes; jumps happen only through ``advance`` and only forwards
(the exchange's clock never runs backwards, and clients rely on that).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class SimClock:
    """Thread-safe accelerated clock. All sim times are integer milliseconds since the epoch."""

    def __init__(
        self,
        start_ms: int,
        speed: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._base_sim_ms = float(start_ms)
        self._base_wall_s = monotonic()
        self._speed = float(speed)

    @property
    def speed(self) -> float:
        return self._speed

    def now_ms(self) -> int:
        with self._lock:
            return int(
                self._base_sim_ms + (self._monotonic() - self._base_wall_s) * 1000.0 * self._speed
            )

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        with self._lock:
            wall = self._monotonic()
            self._base_sim_ms += (wall - self._base_wall_s) * 1000.0 * self._speed
            self._base_wall_s = wall
            self._speed = float(speed)

    def advance(self, delta_ms: int) -> int:
        """Jump sim time forward by ``delta_ms`` (>= 0) and return the new sim time."""
        if delta_ms < 0:
            raise ValueError(f"the clock only moves forward; got delta {delta_ms}")
        with self._lock:
            self._base_sim_ms += delta_ms
        return self.now_ms()

    def wall_seconds_until(self, sim_ms: int) -> float:
        """Wall seconds until sim time reaches ``sim_ms`` at the current speed (may be < 0)."""
        return (sim_ms - self.now_ms()) / 1000.0 / self._speed
