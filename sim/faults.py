"""Fault flags: what the simulator does wrong on purpose, and the pure decisions they drive.

Every flag can be given at start (``--faults`` JSON) and changed at run time
(``POST /sim/faults`` with a partial JSON object; ``GET`` returns the current flags,
``DELETE`` resets them). Count flags (``*_next``) are consumed as requests arrive, so
``{"rest_429_next": 3}`` answers exactly the next three REST requests with 429.

Rates (0..1) are drawn from a seeded RNG per event, except where every client must see the
same answer (which candle is corrected, which archive file is missing): those use a stable hash
of the candle or file, so the choice is reproducible and identical across connections.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qryptify.pairs import INTERVALS
from sim.market import stable_fraction, stable_string_key

MALFORMED_KINDS: tuple[str, ...] = ("bad_json", "missing_field", "wrong_type", "bad_ohlc")


class FaultError(ValueError):
    """A fault specification that is not understood (unknown key, wrong type or range)."""


@dataclass(frozen=True, slots=True)
class EmptyRange:
    """Exchange-side empty range (maintenance): no 1m candle opens in ``[start, end)``."""

    start: int
    end: int
    symbol: str | None = None  # None: every symbol

    def to_json(self) -> dict[str, object]:
        return {"symbol": self.symbol, "start": self.start, "end": self.end}


@dataclass(frozen=True, slots=True)
class CandleRef:
    symbol: str
    interval: str
    open_time: int

    def to_json(self) -> dict[str, object]:
        return {"symbol": self.symbol, "interval": self.interval, "open_time": self.open_time}


_ZIP_NAME_RE = re.compile(
    r"^(?P<sym>[A-Z0-9_]+)-(?P<ivl>[0-9]+[a-z]+)-[0-9]{4}-[0-9]{2}(?P<day>-[0-9]{2})?\.zip$"
)


@dataclass(frozen=True, slots=True)
class Reupload:
    """The exchange re-uploads ``file`` at sim time ``at`` with corrected content: from then on
    no 1m candle opens in the ``empty`` ranges and the ``filled`` ones have their candles again
    (they were empty: maintenance or ``empty_ranges``). A correction of the exchange's history,
    as Binance's re-uploads are: REST, the truth and every archive file covering those minutes
    change with it (so the file's content and CHECKSUM change); before ``at`` nothing does.
    """

    file: str  # zip name, e.g. "BTCUSDT-1h-2024-01.zip"
    at: int  # sim ms
    empty: tuple[tuple[int, int], ...] = ()
    filled: tuple[tuple[int, int], ...] = ()

    @property
    def symbol(self) -> str:
        return self.file.split("-", 1)[0]

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "at": self.at,
            "empty": [list(r) for r in self.empty],
            "filled": [list(r) for r in self.filled],
        }


@dataclass(frozen=True, slots=True)
class Faults:
    """All fault flags; the defaults are a healthy exchange."""

    # REST (/fapi/*)
    rest_429_next: int = 0  # the next N requests get 429 -1003 with Retry-After
    rest_429_rate: float = 0.0  # each request gets 429 with this probability
    rest_retry_after_s: int = 1  # Retry-After of injected 429s
    rest_5xx_next: int = 0  # the next N requests get a 5xx (503, 500, 502 in turn)
    rest_5xx_rate: float = 0.0
    slow_ms: int = 0  # added latency on every /fapi and /data response (wall ms)
    # WebSocket
    ws_drop_every_s: float = 0.0  # abort each connection N wall seconds after it opened
    ws_stall: bool = False  # connections stay open but send nothing (no frames, pings, pongs)
    ws_skip_close_rate: float = 0.0  # x:true frames never sent
    ws_duplicate_close_rate: float = 0.0  # x:true frames sent twice
    ws_malformed_rate: float = 0.0  # frames replaced by a malformed one
    ws_malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
    # Data
    empty_ranges: tuple[EmptyRange, ...] = ()
    corrected: tuple[CandleRef, ...] = ()  # WS sends a different value than REST/truth
    corrected_rate: float = 0.0  # share of all WS-closed candles that are corrected later
    # Archive (/data/*)
    archive_missing: tuple[str, ...] = ()  # file names (e.g. "BTCUSDT-1m-2024-01.zip"): 404
    archive_missing_rate: float = 0.0
    archive_corrupt: tuple[str, ...] = ()  # served with a flipped byte; CHECKSUM stays right
    archive_corrupt_rate: float = 0.0
    archive_reuploads: tuple[Reupload, ...] = ()  # corrected re-uploads at given sim times
    # RNG seed for rate-based faults
    seed: int = field(default=1)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("empty_ranges", "corrected", "archive_reuploads"):
                out[f.name] = [item.to_json() for item in value]
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            else:
                out[f.name] = value
        return out

    def updated(self, patch: Mapping[str, Any]) -> Faults:
        """A copy with the keys of ``patch`` replaced (validated)."""
        if not isinstance(patch, Mapping):
            raise FaultError("faults must be a JSON object")
        known = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, raw in patch.items():
            if key not in known:
                raise FaultError(f"unknown fault flag {key!r}; known: {', '.join(sorted(known))}")
            changes[key] = _coerce(key, raw, type(getattr(self, key)))
        return dataclasses.replace(self, **changes)

    # -- stable selections ---------------------------------------------------------------------

    def is_corrected(self, symbol: str, interval: str, open_time: int) -> bool:
        if self.corrected and CandleRef(symbol, interval, open_time) in self.corrected:
            return True
        if self.corrected_rate <= 0:
            return False
        key = stable_string_key(f"{symbol}|{interval}")
        return stable_fraction(self.seed, 0xC0, key, open_time) < self.corrected_rate

    def is_archive_missing(self, file_name: str) -> bool:
        base = file_name.removesuffix(".CHECKSUM")
        if base in self.archive_missing:
            return True
        return _file_fraction(self.seed, 0xA1, base) < self.archive_missing_rate

    def is_archive_corrupt(self, file_name: str) -> bool:
        if file_name in self.archive_corrupt:
            return True
        return _file_fraction(self.seed, 0xA2, file_name) < self.archive_corrupt_rate

    def empty_ranges_for(self, symbol: str) -> list[tuple[int, int]]:
        return [(r.start, r.end) for r in self.empty_ranges if r.symbol in (None, symbol)]

    def reuploads_done(self, symbol: str, now_ms: int) -> tuple[Reupload, ...]:
        """The re-uploads of ``symbol``'s files that happened by ``now_ms``, in time order."""
        done = [r for r in self.archive_reuploads if r.symbol == symbol and r.at <= now_ms]
        return tuple(sorted(done, key=lambda r: r.at))


def corrected_empty_ranges(
    ranges: list[tuple[int, int]], reuploads: tuple[Reupload, ...]
) -> list[tuple[int, int]]:
    """The empty ranges after ``reuploads`` (in time order): each adds its ``empty`` ranges and
    removes its ``filled`` ones."""
    current = list(ranges)
    for r in reuploads:
        current += list(r.empty)
        for fa, fb in r.filled:
            kept: list[tuple[int, int]] = []
            for a, b in current:
                if b <= fa or a >= fb:
                    kept.append((a, b))
                    continue
                if a < fa:
                    kept.append((a, fa))
                if b > fb:
                    kept.append((fb, b))
            current = kept
    return current


def _file_fraction(seed: int, tag: int, name: str) -> float:
    return stable_fraction(seed, tag, stable_string_key(name))


def _coerce(key: str, raw: Any, kind: type) -> Any:
    if key == "empty_ranges":
        return tuple(_empty_range(item) for item in _as_list(key, raw))
    if key == "corrected":
        return tuple(_candle_ref(item) for item in _as_list(key, raw))
    if key == "ws_malformed_kinds":
        kinds = tuple(str(k) for k in _as_list(key, raw))
        bad = [k for k in kinds if k not in MALFORMED_KINDS]
        if bad or not kinds:
            raise FaultError(f"{key}: expected a non-empty subset of {list(MALFORMED_KINDS)}")
        return kinds
    if key == "archive_reuploads":
        return tuple(_reupload(item) for item in _as_list(key, raw))
    if key in ("archive_missing", "archive_corrupt"):
        return tuple(str(k) for k in _as_list(key, raw))
    if kind is bool:
        if not isinstance(raw, bool):
            raise FaultError(f"{key}: expected true or false, got {raw!r}")
        return raw
    if kind is int:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            raise FaultError(f"{key}: expected an integer >= 0, got {raw!r}")
        return raw
    if kind is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
            raise FaultError(f"{key}: expected a number >= 0, got {raw!r}")
        if key.endswith("_rate") and raw > 1:
            raise FaultError(f"{key}: a rate is within 0..1, got {raw!r}")
        return float(raw)
    raise FaultError(f"{key}: unsupported value {raw!r}")  # pragma: no cover


def _as_list(key: str, raw: Any) -> list[Any]:
    if not isinstance(raw, list | tuple):
        raise FaultError(f"{key}: expected a list, got {raw!r}")
    return list(raw)


def _int_field(item: Mapping[str, Any], name: str, ctx: str) -> int:
    value = item.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultError(f"{ctx}: {name!r} must be an integer (ms), got {value!r}")
    return value


def _empty_range(item: Any) -> EmptyRange:
    if not isinstance(item, Mapping):
        raise FaultError(f"empty_ranges: expected {{symbol, start, end}}, got {item!r}")
    start = _int_field(item, "start", "empty_ranges")
    end = _int_field(item, "end", "empty_ranges")
    if end <= start:
        raise FaultError(f"empty_ranges: end {end} must be after start {start}")
    symbol = item.get("symbol")
    if symbol is not None and not isinstance(symbol, str):
        raise FaultError(f"empty_ranges: symbol must be a string or null, got {symbol!r}")
    return EmptyRange(start, end, symbol)


def _spans(item: Mapping[str, Any], name: str) -> tuple[tuple[int, int], ...]:
    spans: list[tuple[int, int]] = []
    for span in _as_list(f"archive_reuploads {name}", item.get(name, [])):
        if (
            not isinstance(span, list | tuple)
            or len(span) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)
            or span[1] <= span[0]
        ):
            raise FaultError(f"archive_reuploads: {name} needs [start, end] ms with end > start")
        spans.append((span[0], span[1]))
    return tuple(spans)


def _reupload(item: Any) -> Reupload:
    if not isinstance(item, Mapping):
        raise FaultError(f"archive_reuploads: expected {{file, at, empty, filled}}, got {item!r}")
    file = item.get("file")
    if not isinstance(file, str) or _ZIP_NAME_RE.match(file) is None:
        raise FaultError(f"archive_reuploads: file must be a zip name like BTCUSDT-1h-2024-01.zip, "
                         f"got {file!r}")  # fmt: skip
    unknown = set(item) - {"file", "at", "empty", "filled"}
    if unknown:
        raise FaultError(f"archive_reuploads: unknown keys {sorted(unknown)}")
    empty, filled = _spans(item, "empty"), _spans(item, "filled")
    if not empty and not filled:
        raise FaultError("archive_reuploads: a re-upload changes something (empty or filled)")
    return Reupload(file, _int_field(item, "at", "archive_reuploads"), empty, filled)


def _candle_ref(item: Any) -> CandleRef:
    if not isinstance(item, Mapping):
        raise FaultError(f"corrected: expected {{symbol, interval, open_time}}, got {item!r}")
    symbol, interval = item.get("symbol"), item.get("interval")
    if not isinstance(symbol, str) or interval not in INTERVALS:
        raise FaultError(f"corrected: bad symbol/interval in {item!r}")
    return CandleRef(symbol, str(interval), _int_field(item, "open_time", "corrected"))


def load_faults(text_or_path: str | None) -> Faults:
    """``--faults``: inline JSON or the path of a JSON file."""
    if not text_or_path:
        return Faults()
    text = text_or_path
    if not text.lstrip().startswith("{"):
        text = Path(text_or_path).read_text(encoding="utf-8")
    try:
        patch = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FaultError(f"--faults is not valid JSON: {exc}") from exc
    return Faults().updated(patch)
