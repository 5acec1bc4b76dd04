"""Funding rates, reproduced: a deterministic schedule per symbol, REST
``GET /fapi/v1/fundingRate``, monthly archive zips and a truth endpoint.

Schedule: every symbol settles funding on the UTC grid of its interval (8 h by default:
00:00, 08:00, 16:00) from its onboard time until its delist time. ``SimConfig.funding_changes``
entries ``(symbol, from_ms, hours)`` switch a symbol's interval from ``from_ms`` on (e.g. 8 h
→ 4 h mid-history). A funding's ``interval_hours`` is the length of the period it settles (the
time since the previous funding; the segment's interval for the first).

Values: the rate and the mark price are pure functions of (symbol, funding time): the rate in
[-0.0003, 0.0007) with 8 decimals, the mark price within ±5 % of the symbol's base price.

REST (docs/futures.md): ``symbol`` (required here; the exchange also answers without it),
``startTime``, ``endTime``, ``limit`` (default 100, max 1000, else -1130). With a start: the
first ``limit`` fundings at or after it (and at or before the end); otherwise the last
``limit`` at or before the end (or now). Only settled fundings (time <= now). Besides the
request weight, the endpoint has its own limit of 500 requests per 5 minutes per IP (wall
time here); beyond it: HTTP 429 -1003 with Retry-After.

Archive: ``/data/futures/um/monthly/fundingRate/SYM/SYM-fundingRate-YYYY-MM.zip[.CHECKSUM]``,
CSV ``calc_time,funding_interval_hours,last_funding_rate`` (no mark price), published on the
2nd at 06:00 of the next month; the archive fault flags (missing, corrupt) apply by zip name.
"""

from __future__ import annotations

import bisect
import calendar
import hashlib
import io
import json
import re
import time
import zipfile
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from sim.archive import MONTHLY_PUBLISH_DELAY_MS, BuiltArchive, corrupt, not_found_xml
from sim.market import SymbolSpec, stable_fraction, stable_string_key

if TYPE_CHECKING:
    from sim.server import SimState

HOUR_MS = 3_600_000
DEFAULT_HOURS = 8
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
WINDOW_S = 300.0  # the endpoint's own limit: requests per 5 minutes
WINDOW_REQUESTS = 500
CSV_HEADER = "calc_time,funding_interval_hours,last_funding_rate"
_FILE_RE = re.compile(r"^(?P<sym>[A-Z0-9_]+)-fundingRate-(?P<y>[0-9]{4})-(?P<m>[0-9]{2})\.zip$")
_RATE_TAG = 0xF0
_MARK_TAG = 0xF1

FundingChange = tuple[str, int, int]  # (symbol, from ms, hours)


def _e8(value: int) -> str:
    """An integer count of 1e-8 as a decimal string with 8 places."""
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 100_000_000)
    return f"{sign}{whole}.{frac:08d}"


@dataclass(frozen=True, slots=True)
class Funding:
    symbol: str
    time: int
    rate: str
    mark_price: str
    interval_hours: int

    def rest(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "fundingRate": self.rate,
            "fundingTime": self.time,
            "markPrice": self.mark_price,
        }


class FundingBook:
    """Every symbol's funding schedule and values (pure; thread-safe: immutable)."""

    def __init__(self, symbols: Sequence[SymbolSpec], changes: Sequence[FundingChange] = ()):
        self.specs = {s.symbol: s for s in symbols}
        self._segments: dict[str, list[tuple[int, int]]] = {}
        for spec in symbols:
            segs = [(spec.onboard_ms, DEFAULT_HOURS)]
            for symbol, start, hours in sorted(changes, key=lambda c: c[1]):
                if symbol != spec.symbol:
                    continue
                if not 1 <= hours <= 24 or 24 % hours:
                    raise ValueError(f"funding change {symbol}: hours {hours} must divide 24")
                segs.append((max(start, spec.onboard_ms), hours))
            self._segments[spec.symbol] = segs

    def _times(self, spec: SymbolSpec, lo: int, hi: int) -> list[int]:
        """Funding times in [lo, hi), ascending."""
        segs = self._segments[spec.symbol]
        end = spec.delist_ms if spec.delist_ms is not None else hi
        out: list[int] = []
        for i, (start, hours) in enumerate(segs):
            seg_end = min(segs[i + 1][0] if i + 1 < len(segs) else hi, hi, end)
            step = hours * HOUR_MS
            t = max(lo, start)
            t = -(-t // step) * step  # the first grid point at or after t
            while t < seg_end:
                out.append(t)
                t += step
        return out

    def _make(self, spec: SymbolSpec, t: int, prev: int | None) -> Funding:
        key = stable_string_key(spec.symbol)
        rate = int(stable_fraction(key, _RATE_TAG, t) * 100_000) - 30_000  # e-8 units
        base = int(spec.base_price * 100_000_000)
        mark = base + int((stable_fraction(key, _MARK_TAG, t) - 0.5) * 0.1 * base)
        hours = (t - prev) // HOUR_MS if prev is not None else self._hours_at(spec, t)
        return Funding(spec.symbol, t, _e8(rate), _e8(mark), hours)

    def _hours_at(self, spec: SymbolSpec, t: int) -> int:
        segs = self._segments[spec.symbol]
        i = bisect.bisect_right([s for s, _ in segs], t) - 1
        return segs[max(i, 0)][1]

    def between(self, spec: SymbolSpec, lo: int, hi: int) -> list[Funding]:
        """Fundings with lo <= time < hi."""
        before = self._times(spec, lo - 24 * HOUR_MS, lo)
        prev = before[-1] if before else None
        out: list[Funding] = []
        for t in self._times(spec, lo, hi):
            out.append(self._make(spec, t, prev))
            prev = t
        return out

    def select(
        self, spec: SymbolSpec, start: int | None, end: int | None, limit: int, now: int
    ) -> list[Funding]:
        """What REST returns (see the module doc)."""
        last = min(end, now) if end is not None else now
        if start is not None:
            found: list[Funding] = []
            lo = start
            while len(found) < limit and lo <= last:
                hi = min(last + 1, lo + 400 * 24 * HOUR_MS)
                found += self.between(spec, lo, hi)
                lo = hi
            return found[:limit]
        lo = max(spec.onboard_ms, last + 1 - limit * 24 * HOUR_MS)
        return self.between(spec, lo, last + 1)[-limit:]


class WindowLimit:
    """At most ``requests`` per ``window_s`` wall seconds per client."""

    def __init__(self, requests: int = WINDOW_REQUESTS, window_s: float = WINDOW_S) -> None:
        self.requests = requests
        self.window_s = window_s
        self._sent: dict[str, deque[float]] = {}

    def retry_after(self, client: str, now: float) -> int:
        """0 when admitted (and counted), else the seconds until a slot frees."""
        sent = self._sent.setdefault(client, deque())
        while sent and sent[0] <= now - self.window_s:
            sent.popleft()
        if len(sent) >= self.requests:
            return max(1, int(sent[0] + self.window_s - now) + 1)
        sent.append(now)
        return 0


def build_zip(zip_name: str, rows: Sequence[Funding], published_ms: int) -> BuiltArchive:
    """Deterministic zip with one CSV member (fixed timestamp → stable checksum)."""
    lines = [CSV_HEADER] + [f"{f.time},{f.interval_hours},{f.rate}" for f in rows]
    published = datetime.fromtimestamp(published_ms / 1000, tz=UTC)
    info = zipfile.ZipInfo(
        zip_name.removesuffix(".zip") + ".csv", date_time=published.timetuple()[:6]
    )
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(info, "".join(f"{line}\n" for line in lines).encode("ascii"))
    packed = buffer.getvalue()
    return BuiltArchive(packed, hashlib.sha256(packed).hexdigest())


def month_bounds(year: int, month: int) -> tuple[int, int]:
    start = calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
    ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
    return start, calendar.timegm((ny, nm, 1, 0, 0, 0)) * 1000


# -- HTTP --------------------------------------------------------------------------------------
BOOK_KEY = web.AppKey("funding_book", FundingBook)
LIMIT_KEY = web.AppKey("funding_limit", WindowLimit)


def _error(
    code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)


def _int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise ValueError(name)
    return int(raw)


def add_funding_routes(app: web.Application, state: SimState) -> None:
    """Register the funding endpoints; call before the catch-all ``/data/`` route."""
    app[BOOK_KEY] = FundingBook(state.config.symbols, state.config.funding_changes)
    app[LIMIT_KEY] = WindowLimit()

    async def handle_rest(request: web.Request) -> web.Response:
        book = request.app[BOOK_KEY]
        wait = request.app[LIMIT_KEY].retry_after(request.remote or "unknown", time.monotonic())
        if wait:
            state.stats.responses_429 += 1
            msg = "Too many requests; fundingRate is limited to 500 requests per 5 minutes."
            return _error(-1003, msg, 429, {"Retry-After": str(wait)})
        try:
            start, end, limit = (_int(request, n) for n in ("startTime", "endTime", "limit"))
        except ValueError as exc:
            return _error(-1100, f"Illegal characters found in parameter '{exc}'.")
        spec = book.specs.get(request.query.get("symbol", ""))
        if spec is None:
            return _error(-1121, "Invalid symbol.")
        limit = DEFAULT_LIMIT if limit is None else limit
        if not 1 <= limit <= MAX_LIMIT:
            return _error(-1130, "Data sent for parameter 'limit' is not valid.")
        if start is not None and end is not None and start > end:
            return _error(-1023, "Start time is greater than end time.")
        rows = book.select(spec, start, end, limit, state.clock.now_ms())
        return web.json_response([f.rest() for f in rows])

    async def handle_archive(request: web.Request) -> web.Response:
        name = request.match_info["file"]
        zip_name = name.removesuffix(".CHECKSUM")
        key = request.path.lstrip("/")
        match = _FILE_RE.match(zip_name)
        book = request.app[BOOK_KEY]
        spec = book.specs.get(request.match_info["symbol"])

        def missing() -> web.Response:
            state.stats.archive_not_found += 1
            return web.Response(text=not_found_xml(key), status=404, content_type="application/xml")

        if match is None or spec is None or match["sym"] != spec.symbol:
            return missing()
        year, month = int(match["y"]), int(match["m"])
        if not 1 <= month <= 12:
            return missing()
        start, end = month_bounds(year, month)
        published = end + MONTHLY_PUBLISH_DELAY_MS
        if state.clock.now_ms() < published or state.faults.is_archive_missing(zip_name):
            return missing()
        rows = book.between(spec, start, end)
        if not rows:
            return missing()
        built = build_zip(zip_name, rows, published)
        state.stats.archive_files_served += 1
        if name.endswith(".CHECKSUM"):
            return web.Response(body=built.checksum_text(zip_name).encode())
        body = built.zip_bytes
        if state.faults.is_archive_corrupt(zip_name):
            body = corrupt(body)
        return web.Response(body=body, content_type="application/zip")

    async def handle_truth(request: web.Request) -> web.Response:
        book = request.app[BOOK_KEY]
        spec = book.specs.get(request.query.get("symbol", ""))
        if spec is None:
            return web.json_response({"error": "unknown symbol"}, status=400)
        now = state.clock.now_ms()
        try:
            lo = _int(request, "start") or 0
            hi = _int(request, "end")
        except ValueError as exc:
            return web.json_response({"error": f"{exc} must be an integer"}, status=400)
        hi = now + 1 if hi is None else min(hi, now + 1)
        rows = book.between(spec, max(lo, spec.onboard_ms), hi)
        body = [{**f.rest(), "intervalHours": f.interval_hours} for f in rows]
        return web.Response(text=json.dumps(body), content_type="application/json")

    app.router.add_get("/fapi/v1/fundingRate", handle_rest)
    app.router.add_get("/data/futures/um/monthly/fundingRate/{symbol}/{file}", handle_archive)
    app.router.add_get("/sim/truth/funding", handle_truth)


def parse_funding_changes(text: str | None) -> tuple[FundingChange, ...]:
    """``--funding-changes`` JSON: ``[[symbol, ISO date or ms, hours], …]``."""
    if not text:
        return ()
    from sim.symbols import parse_time_ms  # symbols imports market only; no cycle at load

    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--funding-changes: not JSON: {exc}") from None
    if not isinstance(raw, list):
        raise ValueError("--funding-changes: expected a list of [symbol, from, hours]")
    out: list[FundingChange] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)):
            raise ValueError(f"--funding-changes: entry {item!r} is not [symbol, from, hours]")
        hours = item[2]
        if not isinstance(hours, int) or isinstance(hours, bool):
            raise ValueError(f"--funding-changes: hours {hours!r} is not an integer")
        out.append((item[0], parse_time_ms(item[1], "--funding-changes"), hours))
    return tuple(out)
