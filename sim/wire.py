"""Wire formatting: integer candles to Binance's decimal strings with the symbol's precision,
whole columns at a time (REST JSON rows, archive CSV lines)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sim.bars import Bar, KlineColumns, SymbolSpec
from sim.grid import (
    close_time,
    interval_ms,
    is_fixed,
)
from sim.noise import I64

# ---------------------------------------------------------------------------------------------
# Wire formatting (decimal strings with the symbol's precision)
# ---------------------------------------------------------------------------------------------


def decimal_formatter(decimals: int) -> Callable[[int], str]:
    """Integer units → fixed-point string, e.g. 5721269 with 2 → ``"57212.69"``."""
    if decimals == 0:
        return str
    div = 10**decimals
    pattern = "%d.%0" + str(decimals) + "d"

    def fmt(value: int) -> str:
        whole, frac = divmod(value, div)
        text: str = pattern % (whole, frac)
        return text

    return fmt


@dataclass(frozen=True, slots=True)
class Formatters:
    price: Callable[[int], str]
    qty: Callable[[int], str]
    quote: Callable[[int], str]

    @classmethod
    def for_symbol(cls, spec: SymbolSpec) -> Formatters:
        return cls(
            decimal_formatter(spec.price_precision),
            decimal_formatter(spec.quantity_precision),
            decimal_formatter(spec.quote_precision),
        )


_U8 = npt.NDArray[np.uint8]
_U32 = npt.NDArray[np.uint32]
_IDX = npt.NDArray[np.intp]


def _digit_table() -> _U32:
    """Four ASCII digits of 0..9999 as one uint32 word, in five variants of 10,000 entries.

    Variant ``k`` keeps at least the last ``k`` digits and every significant one; the other
    leading zeros become 0 bytes (removed when rows are packed). Variant 4 is the full
    zero-padded chunk, 1 is "the integer part's last chunk" (``0`` → ``"0"``), 0 is a higher
    chunk with nothing above it (``0`` → nothing).
    """
    r = np.arange(10_000, dtype=np.int64)
    chars = np.stack([r // 1000 % 10, r // 100 % 10, r // 10 % 10, r % 10], axis=1) + 48
    significant = np.zeros(10_000, dtype=np.int64)
    for k in range(1, 5):
        significant[r >= 10 ** (k - 1)] = k
    position = np.arange(4)[None, :]  # 0 = most significant byte of the chunk
    variants = []
    for keep in range(5):
        shown = position >= 4 - np.maximum(significant, keep)[:, None]
        variants.append(np.where(shown, chars, 0).astype(np.uint8))
    return np.ascontiguousarray(np.concatenate(variants)).view(np.uint32).ravel()


_DIGITS = _digit_table()
_CHUNK = 10_000
_FULL = 4 * _CHUNK


def _words(text: str) -> list[int]:
    """``text`` as uint32 words (native order), zero-padded at the front."""
    raw = text.encode("ascii")
    raw = b"\0" * (-len(raw) % 4) + raw
    return [int(w) for w in np.frombuffer(raw, dtype=np.uint32)]


class _RowFormat:
    """Fixed-point rows as ASCII, vectorised over the rows of a batch.

    A row is literal text and numbers; a number is its integer part in 4-digit chunks (leading
    zeros become 0 bytes), then ``.`` and its ``decimals`` fraction digits. Every piece is one
    uint32 word, so a batch is one index matrix, one gather from ``_DIGITS`` + literal words,
    and one pass that drops the 0 bytes: under 1 µs of CPU per 12-column row, instead of a Python
    format call per value.
    """

    def __init__(self, decimals: Sequence[int], quoted: Sequence[bool], csv: bool) -> None:
        self.decimals = tuple(decimals)
        # The text around the numbers: before field 0, between fields, after the last.
        gaps: list[str] = []
        text = "" if csv else "["
        for q in quoted:
            gaps.append(text + ('"' if q else ""))
            text = ('"' if q else "") + ","
        gaps.append(text + ("0\n" if csv else '"0"],'))
        literals = sorted({w for g in [*gaps, "."] for w in _words(g)})
        self.table: _U32 = np.concatenate([_DIGITS, np.array(literals, dtype=np.uint32)])
        slot = {w: len(_DIGITS) + i for i, w in enumerate(literals)}
        self.gap_slots = [[slot[w] for w in _words(g)] for g in gaps]
        self.point_slot = slot[_words(".")[0]]
        self._plans: dict[tuple[int, ...], tuple[int, _IDX, _IDX, list[int]]] = {}

    def _plan(self, whole_chunks: tuple[int, ...]) -> tuple[int, _IDX, _IDX, list[int]]:
        """Word layout of a row: width, literal columns and slots, first column per field."""
        plan = self._plans.get(whole_chunks)
        if plan is None:
            lit_cols: list[int] = []
            lit_slots: list[int] = []
            starts: list[int] = []
            col = 0

            def literal(slots: list[int]) -> None:
                nonlocal col
                for s in slots:
                    lit_cols.append(col)
                    lit_slots.append(s)
                    col += 1

            for f, k in enumerate(whole_chunks):
                literal(self.gap_slots[f])
                starts.append(col)
                col += k
                d = self.decimals[f]
                if d:
                    literal([self.point_slot])
                    col += -(-d // 4)
            literal(self.gap_slots[-1])
            plan = (
                col,
                np.array(lit_cols, dtype=np.intp),
                np.array(lit_slots, dtype=np.intp),
                starts,
            )
            self._plans[whole_chunks] = plan
        return plan

    def format(self, columns: Sequence[I64]) -> bytes:
        """Rows of non-negative integer columns (one per field), each row terminated."""
        n = len(columns[0])
        if n == 0:
            return b""
        wholes: list[I64] = []
        fracs: list[I64 | None] = []
        chunks: list[int] = []
        for values, d in zip(columns, self.decimals, strict=True):
            if d:
                whole = values // (10**d)
                fracs.append(values - whole * (10**d))
            else:
                whole = values
                fracs.append(None)
            wholes.append(whole)
            chunks.append(max(1, -(-len(str(int(whole.max()))) // 4)))
        width, lit_cols, lit_slots, starts = self._plan(tuple(chunks))
        # Word-major while building (contiguous stores), row-major when gathered.
        idx = np.empty((width, n), dtype=np.int32)
        idx[lit_cols] = lit_slots[:, None]
        for f, d in enumerate(self.decimals):
            col = starts[f] + chunks[f] - 1  # least significant whole chunk
            rest = wholes[f]
            for j in range(chunks[f]):
                if j == chunks[f] - 1:
                    # the top chunk: nothing above it, strip its leading zeros
                    np.add(rest, _CHUNK if j == 0 else 0, out=idx[col], casting="unsafe")
                    break
                above = rest // _CHUNK
                low = rest - above * _CHUNK
                np.add(
                    low,
                    np.where(above == 0, _CHUNK if j == 0 else 0, _FULL),
                    out=idx[col],
                    casting="unsafe",
                )
                rest = above
                col -= 1
            frac = fracs[f]
            if frac is None:
                continue
            words = -(-d // 4)
            col = starts[f] + chunks[f] + words  # last fraction word (after the point)
            for j in range(words):
                if j == words - 1:
                    np.add(frac, (d - 4 * j) * _CHUNK, out=idx[col], casting="unsafe")
                    break
                above = frac // _CHUNK
                np.add(frac - above * _CHUNK, _FULL, out=idx[col], casting="unsafe")
                frac = above
                col -= 1
        packed: bytes = self.table.take(idx.T).tobytes().translate(None, b"\0")
        return packed


_ROW_FORMATS: dict[tuple[int, int, bool], _RowFormat] = {}
# Rows per batch: keeps the index matrix and the byte pass inside the CPU caches.
_FORMAT_BATCH = 4096


def _row_format(spec: SymbolSpec, csv: bool) -> _RowFormat:
    key = (spec.price_precision, spec.quantity_precision, csv)
    found = _ROW_FORMATS.get(key)
    if found is None:
        pp, qp, up = spec.price_precision, spec.quantity_precision, spec.quote_precision
        decimals = (0, pp, pp, pp, pp, qp, 0, up, 0, qp, up)
        quoted = [False] + [not csv] * 5 + [False, not csv, False, not csv, not csv]
        found = _ROW_FORMATS.setdefault(key, _RowFormat(decimals, quoted, csv))
    return found


def format_rows(
    spec: SymbolSpec, interval: str, opens: I64, values: Sequence[I64], csv: bool
) -> bytes:
    """Rows as ASCII: CSV lines (``\n``-terminated) or JSON arrays (``,``-terminated).

    ``values``: open, high, low, close, volume, quote, trades, taker_base, taker_quote in
    integer units (see :class:`Bar`), one array per column, aligned with ``opens``.
    """
    n = len(opens)
    if n == 0:
        return b""
    if is_fixed(interval):
        closes = opens + (interval_ms(interval) - 1)
    else:
        closes = np.array([close_time(interval, int(t)) for t in opens], dtype=np.int64)
    o, h, lw, c, v, q, t, tb, tq = values
    fields = (opens, o, h, lw, c, v, closes, q, t, tb, tq)
    fmt = _row_format(spec, csv)
    if n <= _FORMAT_BATCH:
        return fmt.format(fields)
    return b"".join(
        fmt.format([x[i : i + _FORMAT_BATCH] for x in fields]) for i in range(0, n, _FORMAT_BATCH)
    )


def _formatted_rows(spec: SymbolSpec, cols: KlineColumns, csv: bool) -> bytes:
    """All rows of ``cols`` as ASCII (see :func:`format_rows`)."""
    if not len(cols):
        return b""
    values = [
        np.array(x, dtype=np.int64)
        for x in (
            cols.open,
            cols.high,
            cols.low,
            cols.close,
            cols.volume,
            cols.quote,
            cols.trades,
            cols.taker_base,
            cols.taker_quote,
        )
    ]
    opens = np.array(cols.open_time, dtype=np.int64)
    return format_rows(spec, cols.interval, opens, values, csv)


def rest_rows_json(spec: SymbolSpec, cols: KlineColumns) -> str:
    """The JSON body of ``/fapi/v1/klines``: 12-element rows, times/trades as integers,
    prices/volumes as strings, the ignore column ``"0"`` as on the real exchange."""
    body = _formatted_rows(spec, cols, csv=False)
    return "[" + body[:-1].decode("ascii") + "]"


def csv_bytes(spec: SymbolSpec, cols: KlineColumns) -> bytes:
    """Archive CSV data lines (same decimal strings as REST, unquoted), newline-terminated."""
    return _formatted_rows(spec, cols, csv=True)


def csv_lines(spec: SymbolSpec, cols: KlineColumns) -> list[str]:
    return csv_bytes(spec, cols).decode("ascii").splitlines()


def rest_row(spec: SymbolSpec, interval: str, open_ms: int, bar: Bar) -> list[object]:
    """One row as Python values (for /sim/truth consumers and tests)."""
    fm = Formatters.for_symbol(spec)
    return [
        open_ms,
        fm.price(bar.open),
        fm.price(bar.high),
        fm.price(bar.low),
        fm.price(bar.close),
        fm.qty(bar.volume),
        close_time(interval, open_ms),
        fm.quote(bar.quote),
        bar.trades,
        fm.qty(bar.taker_base),
        fm.quote(bar.taker_quote),
        "0",
    ]
