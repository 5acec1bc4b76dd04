"""The simulator's state shared by every handler: configuration, clock, market, faults,
weight limiter, caches and counters (:class:`SimState`), reachable from a request via
``STATE_KEY``."""

from __future__ import annotations

import collections
import dataclasses
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from sim.archive import (
    BuiltArchive,
)
from sim.bars import Availability, SymbolSpec
from sim.cache import LruCache
from sim.clock import SimClock
from sim.faults import Faults, corrected_empty_ranges
from sim.grid import DAY_MS
from sim.limits import WeightLimiter
from sim.market import Market
from sim.symbols import DEFAULT_SYMBOLS
from sim.wire import Formatters

if TYPE_CHECKING:  # only the annotation: a connection holds the state, not the reverse
    from sim.ws import Connection


PERPETUAL_DELIVERY_MS = 4133404800000  # 2100-12-25 08:00 UTC, the perpetuals' sentinel


#: Built archive zips kept by default (monthly 1m zips are ~2 MB).
ARCHIVE_CACHE_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything the simulator is started with (all overridable by ``SimulatorThread(**kw)``)."""

    symbols: tuple[SymbolSpec, ...] = DEFAULT_SYMBOLS
    speed: float = 1.0
    start_ms: int | None = None  # sim time at start; None: the real current time
    host: str = "127.0.0.1"
    port: int = 0
    weight_limit: int = 2400
    weight_window_s: float = 60.0  # wall seconds
    ban_after_429s: int = 5  # further requests tolerated while limited before the 418 ban
    ban_s: float = 120.0  # wall seconds
    ping_interval_s: float = 180.0  # wall seconds between server ping frames (0: never)
    pong_timeout_s: float = 600.0  # wall seconds without a pong before the server disconnects
    ws_max_age_ms: int = DAY_MS  # sim ms: the exchange's 24-hour cut
    max_streams: int = 200
    ws_max_incoming_per_s: int = 10
    update_interval_s: float = 0.25  # wall seconds between x:false frames of one stream
    faults: Faults = field(default_factory=Faults)
    seed: int = 7
    #: Funding interval changes, (symbol, from ms, hours): see sim/funding.py.
    funding_changes: tuple[tuple[str, int, int], ...] = ()
    #: Bytes of built archive zips kept (the bench prebuilds ~150 MB of them before timing).
    archive_cache_bytes: int = ARCHIVE_CACHE_BYTES

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError(f"speed must be > 0, got {self.speed}")
        if not self.symbols:
            raise ValueError("at least one symbol is needed")
        if self.archive_cache_bytes < 0:
            raise ValueError(f"archive cache must be ≥ 0 bytes, got {self.archive_cache_bytes}")


@dataclass(slots=True)
class Stats:
    """Counters served by ``GET /sim/stats``."""

    requests: int = 0
    weight_used: int = 0
    responses_429: int = 0
    responses_418: int = 0
    responses_5xx: int = 0
    request_errors: int = 0  # 4xx with a Binance error body (-1121, -1120, …)
    ws_connections_total: int = 0
    ws_connections_open: int = 0
    ws_frames_sent: int = 0
    ws_closed_frames_sent: int = 0
    ws_malformed_sent: int = 0
    ws_pings_sent: int = 0
    ws_drops: int = 0
    ws_sender_late_ms_max: int = 0  # worst wall delay between a stream being due and served
    ws_send_blocked_ms: int = 0  # wall time senders waited on slow clients (TCP backpressure)
    archive_files_served: int = 0
    archive_not_found: int = 0
    klines_requests: int = 0  # GET /fapi/v1/klines
    archive_checksum_requests: int = 0  # GET …zip.CHECKSUM
    archive_zip_requests: int = 0  # GET …zip

    def to_json(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _archive_weight(built: BuiltArchive) -> int:
    return len(built.zip_bytes) + 300


class SimState:
    """The mutable state of one running simulator. Owned by its event loop; the clock and the
    market are thread-safe and may be read from other threads."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        start = config.start_ms if config.start_ms is not None else int(time.time() * 1000)
        self.clock = SimClock(start, config.speed)
        self.clock_jumps = 0
        self.market = Market(config.symbols)
        self.symbols = self.market.symbols
        self.formatters = {s.symbol: Formatters.for_symbol(s) for s in config.symbols}
        self.limiter = WeightLimiter(
            config.weight_limit, config.weight_window_s, config.ban_after_429s, config.ban_s
        )
        self.stats = Stats()
        self.rng = random.Random(config.seed)  # noqa: S311 - fault dice, not cryptography
        self._faults = config.faults
        self._avail: dict[tuple[str, int], Availability] = {}  # by (symbol, re-uploads done)
        self._five_xx_turn = 0
        # Built zips (a file is immutable once published): the CHECKSUM and the zip, and
        # retries, cost one build. Bounded in bytes (monthly 1m zips are ~2 MB).
        self.archives: LruCache[tuple[str, Availability], BuiltArchive] = LruCache(
            4096, _archive_weight, config.archive_cache_bytes
        )
        self.connections: set[Connection] = set()
        #: Archive request path → requests (GET /sim/archive-requests).
        self.archive_requests: collections.Counter[str] = collections.Counter()

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        self._faults = faults
        self._avail.clear()

    def availability(self, spec: SymbolSpec) -> Availability:
        reuploads = self._faults.reuploads_done(spec.symbol, self.clock.now_ms())
        found = self._avail.get((spec.symbol, len(reuploads)))
        if found is None:
            ranges = list(spec.maintenance) + self._faults.empty_ranges_for(spec.symbol)
            ranges = corrected_empty_ranges(ranges, reuploads)
            found = Availability.build(spec.onboard_ms, spec.delist_ms, ranges)
            self._avail[(spec.symbol, len(reuploads))] = found
        return found

    def advance(self, delta_ms: int) -> int:
        self.clock_jumps += 1
        return self.clock.advance(delta_ms)

    def take_rest_fault(self) -> str | None:
        """Consume the injected REST fault for one request: "429", "5xx" or None."""
        f = self._faults
        if f.rest_429_next > 0:
            self._faults = dataclasses.replace(f, rest_429_next=f.rest_429_next - 1)
            return "429"
        if f.rest_5xx_next > 0:
            self._faults = dataclasses.replace(f, rest_5xx_next=f.rest_5xx_next - 1)
            return "5xx"
        if f.rest_429_rate and self.rng.random() < f.rest_429_rate:
            return "429"
        if f.rest_5xx_rate and self.rng.random() < f.rest_5xx_rate:
            return "5xx"
        return None

    def next_5xx(self) -> int:
        self._five_xx_turn += 1
        return (503, 500, 502)[self._five_xx_turn % 3 - 1]


STATE_KEY = web.AppKey("sim_state", SimState)
