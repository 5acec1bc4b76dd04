"""Connection rotation before the exchange's 24-hour cut, pure.

Binance drops every connection 24 h after it opened. Each connection is replaced earlier
(``ws.rotate_after_s``, in *exchange* time, so an accelerated simulator rotates on its own
clock): the replacement is opened first, and the old one is closed only once the replacement
delivered a frame, so there is no moment without a live stream for those pairs. Candles seen
on both during the overlap are duplicates the book drops and counts.

Connections opened together would rotate together; each one's deadline is staggered by its
index so replacements are opened gradually.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from qryptify.binance.ws import CONNECTION_LIFETIME_MS


class Handover(Enum):
    WAIT = "wait"  # replacement not delivering yet: keep both
    CLOSE_OLD = "close_old"  # replacement delivered: close the old connection
    ABANDON = "abandon"  # replacement never delivered in time: drop it, keep the old one


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    rotate_after_ms: int  # exchange time a connection lives before it is replaced
    stagger_ms: int = 0  # added per connection index, capped to stay before the 24 h cut
    handover_timeout_s: float = 30.0  # wall time a replacement gets to deliver
    retry_after_ms: int = 60_000  # exchange time before trying again after an abandon

    def __post_init__(self) -> None:
        if self.rotate_after_ms < 1 or self.stagger_ms < 0 or self.handover_timeout_s <= 0:
            raise ValueError("need rotate_after_ms >= 1, stagger_ms >= 0, handover_timeout_s > 0")

    def deadline(self, opened_at_ms: int, index: int = 0) -> int:
        """Exchange time at which the connection opened at ``opened_at_ms`` is replaced."""
        after = self.rotate_after_ms + index * self.stagger_ms
        # However staggered, stay ahead of the exchange's cut (keep 1 % of the lifetime).
        after = min(after, max(self.rotate_after_ms, CONNECTION_LIFETIME_MS * 99 // 100))
        return opened_at_ms + after

    def due(self, opened_at_ms: int, now_ms: int, index: int = 0) -> bool:
        return now_ms >= self.deadline(opened_at_ms, index)

    def handover(self, replacement_delivered: bool, waited_s: float) -> Handover:
        if replacement_delivered:
            return Handover.CLOSE_OLD
        if waited_s >= self.handover_timeout_s:
            return Handover.ABANDON
        return Handover.WAIT
