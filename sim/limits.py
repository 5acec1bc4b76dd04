"""Request-weight limiting as the exchange does it: pure decisions with ``now`` injected.

Windows are fixed, ``window_s`` long, in WALL time (default 60 s): the limit exists to protect
the server, whose capacity is measured in wall time, and a window in sim time would shrink to
17 ms at speed 3600 and make every client look abusive. The header is still called
``X-MBX-USED-WEIGHT-1M`` because that is what the exchange sends.

A request that would push the window over the limit is refused with 429 and does not add to the
weight. A client that sends more than ``ban_after`` further requests while limited in the same
window is banned: 418 with ``Retry-After`` for ``ban_s`` seconds, every request refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

OK = "ok"
LIMITED = "429"
BANNED = "418"


def klines_weight(limit: int) -> int:
    """Weight of ``/fapi/v1/klines`` by ``limit`` (binance-api.md §1.1)."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str  # OK, LIMITED or BANNED
    used_weight: int  # the window's weight after this request (for X-MBX-USED-WEIGHT-1M)
    retry_after_s: int = 0


@dataclass(slots=True)
class _Client:
    window: int = -1
    used: int = 0
    refused_in_window: int = 0
    banned_until: float = 0.0


class WeightLimiter:
    """Per-client-IP weight windows. Not thread-safe: the server's event loop owns it."""

    def __init__(
        self, limit: int = 2400, window_s: float = 60.0, ban_after: int = 5, ban_s: float = 120.0
    ) -> None:
        if limit < 1 or window_s <= 0 or ban_after < 0 or ban_s <= 0:
            raise ValueError("limit, window, ban_after and ban_s must be positive")
        self.limit = limit
        self.window_s = window_s
        self.ban_after = ban_after
        self.ban_s = ban_s
        self._clients: dict[str, _Client] = {}

    def admit(self, client: str, weight: int, now_s: float) -> Decision:
        state = self._clients.setdefault(client, _Client())
        window = math.floor(now_s / self.window_s)
        if window != state.window:
            state.window, state.used, state.refused_in_window = window, 0, 0
        if state.banned_until > now_s:
            return Decision(BANNED, state.used, math.ceil(state.banned_until - now_s))
        if state.used + weight > self.limit:
            state.refused_in_window += 1
            if state.refused_in_window > self.ban_after + 1:  # the first 429 + ban_after more
                state.banned_until = now_s + self.ban_s
                return Decision(BANNED, state.used, math.ceil(self.ban_s))
            window_end = (window + 1) * self.window_s
            return Decision(LIMITED, state.used, max(1, math.ceil(window_end - now_s)))
        state.used += weight
        return Decision(OK, state.used)

    def used(self, client: str, now_s: float) -> int:
        state = self._clients.get(client)
        if state is None or state.window != math.floor(now_s / self.window_s):
            return 0
        return state.used
