"""The request-weight budget shared by every REST request of a process. Pure: no I/O, no
clock of its own; every call takes ``now_ms`` from one wall-speed, monotonic clock.

Binance counts request weight per IP in one-minute windows and reports the count of the
current window in ``X-MBX-USED-WEIGHT-1M`` on every response. Where the server's windows
start is not observable, so the budget keeps a *sliding* log of what this process sent: in
any ``window_ms`` (plus a small guard for network jitter) it sends at most
``limit × (1 − safety_margin)``. Any fixed server window then holds at most that much of our
weight, whatever its phase — about 98 % of the limit in steady state, never 100 %.

The header is the truth about the rest: weight the server counted beyond what we sent in the
preceding window (another process on the same IP, a restart of this one) is adopted as
foreign weight until it ages out. It is never used to count *less* than we sent, because
out-of-order responses carry stale headers.

HTTP 429 pauses every request for ``Retry-After`` (else one window); HTTP 418 stops every
request until the ban ends.

Page sizes: weight by ``limit`` is [1,100) → 1, [100,500) → 2, [500,1000] → 5, > 1000 → 10, so
499 candles for weight 2 is the most candles per weight.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

WINDOW_MS = 60_000
#: Sends are remembered this much longer than a window (server-side arrival jitter): 250 ms
#: of a one-minute window.
GUARD_FRACTION = 1 / 240
#: A 418 without Retry-After: Binance bans for 2 minutes up to 3 days; assume the minimum.
DEFAULT_BAN_MS = 120_000
MAX_KLINES_LIMIT = 1500


def klines_weight(limit: int) -> int:
    """Request weight of ``/fapi/v1/klines`` for ``limit`` rows."""
    if not 1 <= limit <= MAX_KLINES_LIMIT:
        raise ValueError(f"klines limit must be 1..{MAX_KLINES_LIMIT}, got {limit}")
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def best_page_limit(configured: int | None = None) -> int:
    """The page size: ``configured`` if given, else the limit with the most candles per weight."""
    if configured is not None:
        klines_weight(configured)  # validates
        return configured
    return max(range(1, MAX_KLINES_LIMIT + 1), key=lambda n: (n / klines_weight(n), n))


@dataclass(slots=True)
class BudgetStats:
    requests: int = 0
    weight_sent: int = 0
    rate_limited: int = 0  # 429s seen
    banned: int = 0  # 418s seen
    waits: int = 0  # reserve() calls answered with a wait
    foreign_adopted: int = 0  # times a header showed more weight than we sent


@dataclass(slots=True)
class WeightBudget:
    """Request weight per minute shared by all requests (asyncio-safe: calls never suspend)."""

    limit: int = 2400
    safety_margin: float = 0.02
    window_ms: int = WINDOW_MS
    guard_ms: int = -1  # default: GUARD_FRACTION of the window
    stats: BudgetStats = field(default_factory=BudgetStats)
    # The send log: times (non-decreasing) and running totals of weight, from index _head.
    _times: list[int] = field(default_factory=list)
    _totals: list[int] = field(default_factory=list)
    _head: int = 0
    _total: int = 0  # weight ever sent
    _expired_total: int = 0  # running total at the newest expired entry
    _foreign: int = 0  # weight the server counted beyond ours
    _foreign_until_ms: int = 0
    _foreign_sent_ms: int = -1  # send time of the request that measured _foreign
    _pending: int = 0  # weight of requests whose response has not arrived
    _paused_until_ms: int = 0  # 429 Retry-After
    _banned_until_ms: int = 0  # 418

    def __post_init__(self) -> None:
        self._check(self.limit, self.safety_margin)
        if self.window_ms < 1:
            raise ValueError(f"window must be >= 1 ms, got {self.window_ms}")
        if self.guard_ms < 0:
            self.guard_ms = max(1, int(self.window_ms * GUARD_FRACTION))

    @staticmethod
    def _check(limit: int, margin: float) -> None:
        if limit < 1:
            raise ValueError(f"weight limit must be >= 1, got {limit}")
        if not 0 <= margin < 1:
            raise ValueError(f"safety margin must be in [0, 1), got {margin}")

    # -- configuration ---------------------------------------------------------------------
    def set_limit(self, limit: int) -> None:
        """Adopt the exchange's REQUEST_WEIGHT limit (from exchangeInfo)."""
        self._check(limit, self.safety_margin)
        self.limit = limit

    @property
    def usable(self) -> int:
        """Weight per window this process may use: the limit minus the safety margin."""
        return max(1, int(self.limit * (1 - self.safety_margin)))

    @property
    def horizon_ms(self) -> int:
        return self.window_ms + self.guard_ms

    # -- the send log ----------------------------------------------------------------------
    def _expire(self, now_ms: int) -> None:
        cutoff = now_ms - self.horizon_ms
        head = bisect.bisect_right(self._times, cutoff, lo=self._head)
        if head > self._head:
            self._expired_total = self._totals[head - 1]
        self._head = head
        if head > 4096 and head * 2 > len(self._times):
            del self._times[:head], self._totals[:head]
            self._head = 0

    def _sent_until(self, t_ms: int) -> int:
        """Weight ever sent at or before ``t_ms``."""
        i = bisect.bisect_right(self._times, t_ms, lo=self._head) - 1
        return self._totals[i] if i >= self._head else self._expired_total

    def own(self, now_ms: int) -> int:
        """Weight this process sent within the last window (including in-flight requests)."""
        self._expire(now_ms)
        return self._total - self._sent_until(now_ms - self.horizon_ms)

    def foreign(self, now_ms: int) -> int:
        return self._foreign if now_ms < self._foreign_until_ms else 0

    def used(self, now_ms: int) -> int:
        """Weight counted against the limit now: ours in the last window plus foreign."""
        return self.own(now_ms) + self.foreign(now_ms)

    @property
    def pending(self) -> int:
        return self._pending

    def blocked_until(self) -> int:
        """Time until which no request may be sent (429/418), 0 if none."""
        return max(self._paused_until_ms, self._banned_until_ms)

    def is_banned(self, now_ms: int) -> bool:
        return now_ms < self._banned_until_ms

    # -- the protocol ----------------------------------------------------------------------
    def reserve(self, weight: int, now_ms: int) -> int:
        """Reserve ``weight`` for a request about to be sent.

        Returns 0 when reserved (send now, then call ``after_response`` or ``release``), else
        the ms to wait before asking again; nothing is reserved then.
        """
        if not 1 <= weight <= self.limit:
            raise ValueError(f"weight must be 1..{self.limit}, got {weight}")
        blocked = self.blocked_until()
        if now_ms < blocked:
            self.stats.waits += 1
            return blocked - now_ms
        used = self.used(now_ms)
        # An empty window always admits one request, so no weight can wait forever.
        if used + weight > self.usable and used > 0:
            self.stats.waits += 1
            return self._wait_for(used + weight - self.usable, now_ms)
        if self._times and now_ms < self._times[-1]:
            now_ms = self._times[-1]  # keep the log ordered if a caller's clock jitters
        self._times.append(now_ms)
        self._total += weight
        self._totals.append(self._total)
        self._pending += weight
        self.stats.requests += 1
        self.stats.weight_sent += weight
        return 0

    def _own_expired_after(self, amount: int, now_ms: int) -> int | None:
        """ms until ``amount`` of our own weight has left the window (None: never enough)."""
        if amount <= 0:
            return 0
        base = self._sent_until(now_ms - self.horizon_ms)
        i = bisect.bisect_left(self._totals, base + amount, lo=self._head)
        if i >= len(self._times):
            return None
        return self._times[i] + self.horizon_ms - now_ms + 1

    def _wait_for(self, excess: int, now_ms: int) -> int:
        """ms until ``excess`` weight has left the window: our own sends age out one by one,
        foreign weight all at once when its measurement does."""
        foreign = self.foreign(now_ms)
        waits: list[int] = []
        own_only = self._own_expired_after(excess, now_ms)  # foreign still counted
        if own_only is not None:
            waits.append(own_only)
        if foreign:
            until_foreign = self._foreign_until_ms - now_ms
            rest = self._own_expired_after(excess - foreign, now_ms)
            if rest is not None:
                waits.append(max(until_foreign, rest))
        return max(1, min(waits) if waits else self.horizon_ms)

    def release(self, weight: int) -> None:
        """A reserved request got no response (timeout, connection error).

        Its weight stays in the window: the server may have counted it.
        """
        self._pending = max(0, self._pending - weight)

    def after_response(
        self,
        used_weight_header: int | None,
        now_ms: int,
        *,
        weight: int = 0,
        sent_ms: int | None = None,
    ) -> None:
        """Account a response; ``X-MBX-USED-WEIGHT-1M`` is the server's count.

        ``weight`` is what the request reserved, ``sent_ms`` when (by this budget's clock).
        Whatever the header counts beyond what we sent in the window before ``sent_ms`` is
        foreign weight, kept until it ages out.
        """
        self.release(weight)
        if used_weight_header is None or used_weight_header < 0:
            return
        sent = now_ms if sent_ms is None else sent_ms
        if sent < self._foreign_sent_ms:
            return  # an older measurement than the one we hold
        self._expire(now_ms)
        ours = self._sent_until(sent) - self._sent_until(sent - self.horizon_ms)
        excess = used_weight_header - ours
        self._foreign_sent_ms = sent
        if excess > 0:
            if excess > self.foreign(now_ms):
                self.stats.foreign_adopted += 1
            self._foreign = excess
            self._foreign_until_ms = sent + self.horizon_ms
        else:
            self._foreign = 0
            self._foreign_until_ms = 0

    def on_429(self, retry_after_s: float | None, now_ms: int) -> int:
        """HTTP 429: pause every request for Retry-After (else one window).

        Returns the time until which requests are paused.
        """
        self.stats.rate_limited += 1
        if retry_after_s is not None and retry_after_s >= 0:
            until = now_ms + int(retry_after_s * 1000)
        else:
            until = now_ms + self.window_ms
        self._paused_until_ms = max(self._paused_until_ms, until)
        return self._paused_until_ms

    def on_418(
        self,
        now_ms: int,
        *,
        retry_after_s: float | None = None,
        until_ms: int | None = None,
    ) -> int:
        """HTTP 418 (IP banned): stop every request until the ban ends. Returns its end.

        ``until_ms`` must be on this budget's clock; Retry-After wins when both are given.
        """
        self.stats.banned += 1
        if retry_after_s is not None and retry_after_s > 0:
            until = now_ms + int(retry_after_s * 1000)
        elif until_ms is not None and until_ms > now_ms:
            until = until_ms
        else:
            until = now_ms + DEFAULT_BAN_MS
        self._banned_until_ms = max(self._banned_until_ms, until)
        return self._banned_until_ms
