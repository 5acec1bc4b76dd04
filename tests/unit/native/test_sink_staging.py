"""The compiled staging loop against its Python twin (``StagedBatch`` with ``native=False``):
byte-identical COPY text in the same row order, the same DLQ verdicts, offsets and spans, on
valid, arbitrary and damaged records; and the comparison fails when either side is altered."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qryptify import native
from qryptify.avro import KlineCodec
from qryptify.kline import EmptyRange, Kline
from qryptify.sink import batch as batch_module
from qryptify.sink.batch import Record, Rejected, Split, StagedBatch
from qryptify.sink.rows import copy_binary, ts_text
from tests.conftest import T0, make_kline
from tests.unit.qryptify.test_sink_batch import _any_kline as any_kline

CODEC = KlineCodec()
PAIRS = [("BTCUSDT", "1m"), ("ETHUSDT", "1M"), ("BTCUSDT", "1w"), ("SOLUSDT", "1h")]


def stage(
    batches: Sequence[Sequence[Record]], *, native_core: bool, floors: dict[int, int] | None = None
) -> Split:
    staged = StagedBatch(CODEC, floors=dict(floors or {}), native=native_core)
    assert (staged._native is not None) == native_core
    for i, records in enumerate(batches):
        staged.add(records, i)
    return staged.split()


def assert_same(ours: Split, oracle: Split) -> None:
    """Everything the transaction, the DLQ and the offset commit see, in order."""
    assert ours.batch.copy_text() == oracle.batch.copy_text()
    if ours.batch.binary is not None:  # converted line by line as staged: the writer's input
        assert ours.batch.binary == copy_binary(oracle.batch.copy_text())
    assert list(ours.batch.rows) == list(oracle.batch.rows)
    assert ours.batch.spans == oracle.batch.spans
    assert ours.dlq == oracle.dlq
    assert ours.empty_ranges == oracle.empty_ranges
    assert (ours.offsets, ours.first_offsets, ours.records) == (
        oracle.offsets,
        oracle.first_offsets,
        oracle.records,
    )
    assert ours.newest == oracle.newest and ours.row_partitions == oracle.row_partitions
    # the record behind each row, as the DLQ gets it when the database rejects the row
    for row in oracle.batch.rows:
        rejected = Rejected(row, None, "22P02", "refused")
        assert ours.rejected_entry(rejected) == oracle.rejected_entry(rejected)


# -- inputs -------------------------------------------------------------------------------------

_digits = st.from_regex(r"[0-9]{1,12}(\.[0-9]{1,10})?", fullmatch=True)


@st.composite
def valid_klines(draw: st.DrawFn) -> Kline:
    """Candles the fast path takes (and near misses: ties of different spellings)."""
    symbol, interval = draw(st.sampled_from(PAIRS))
    step = {"1m": 60_000, "1h": 3_600_000, "1w": 7 * 86_400_000}.get(interval, 0)
    open_time = T0 + draw(st.integers(0, 40)) * step if step else T0
    prices = sorted(draw(st.lists(_digits, min_size=4, max_size=4)), key=float)
    low, a, b, high = prices
    open_, close = draw(st.permutations([a, b]))
    return make_kline(
        symbol, interval, open_time, open=open_, high=high, low=low, close=close,
        volume=draw(_digits), quote_volume=draw(_digits), taker_buy_base=draw(_digits),
        taker_buy_quote=draw(_digits), trades=draw(st.integers(0, 2**21)),
        ingested_at=draw(st.sampled_from([T0, 0, -1, 2**40])),
    )  # fmt: skip


#: Edges of the fast path's checks: 30 and 31 digits, the last open time, a month's close.
_edge_klines = st.sampled_from(
    [
        make_kline(open="1" * 30, high="1" * 31, low="1", close="1" * 30),
        make_kline(volume="1." + "0" * 30, quote_volume="1." + "0" * 31),
        make_kline(open_time=7_258_118_400_000 - 60_000),
        make_kline("BTCUSDT", "1M", 1_706_745_600_000 - 31 * 86_400_000),
        make_kline(trades=2**20),
        make_kline(trades=2**20 - 1),
    ]
)
_any_kline = any_kline | _edge_klines
_empty_range = st.builds(
    EmptyRange,
    symbol=st.sampled_from(["BTCUSDT", "ETHUSDT"]),
    interval=st.sampled_from(["1m", "1h"]),
    start_time=st.sampled_from([T0, T0 + 60_000]),
    end_time=st.sampled_from([T0 + 120_000, T0 + 180_000]),
    confirmed_at=st.just(T0 + 10**6),
)


def damaged(draw: st.DrawFn, value: bytes, *, null: bool = False) -> bytes | None:
    """``value`` as it is (mostly), or cut, a byte flipped, junk appended (or None)."""
    kinds = ["none", "none", "none", "cut", "flip", "append"] + (["null"] if null else [])
    damage = draw(st.sampled_from(kinds))
    if damage == "cut":
        return value[: draw(st.integers(0, len(value)))]
    if damage == "flip":
        i = draw(st.integers(0, len(value) - 1))
        return value[:i] + bytes([draw(st.integers(0, 255))]) + value[i + 1 :]
    if damage == "append":
        return value + draw(st.binary(min_size=1, max_size=6))
    return None if damage == "null" else value


@st.composite
def record_batches(draw: st.DrawFn) -> list[list[Record]]:
    """Consumed batches: primers (the pairs' first good records), then valid, arbitrary,
    damaged (cut, bytes flipped, junk appended), null and mis-keyed records, over a few
    partitions, with repeated keys and offsets out of order."""
    events: list[Kline | EmptyRange] = [make_kline(s, i) for s, i in PAIRS]
    events += draw(st.lists(valid_klines() | _any_kline | _empty_range, max_size=25))
    records: list[Record] = []
    next_offset = {0: 0, 1: 0, 2: 0}
    for event in events:
        value = damaged(draw, CODEC.encode(event), null=True)
        key = draw(st.sampled_from([event.key.encode(), event.key.encode(), b"BTCUSDT|1m", None]))
        partition = draw(st.integers(0, 2))
        offset = next_offset[partition] + draw(st.sampled_from([0, 0, 1, -1]))
        next_offset[partition] = max(next_offset[partition], offset + 1)
        records.append(Record("klines", partition, max(0, offset), key, value))
    cuts = sorted(draw(st.lists(st.integers(0, len(records)), max_size=3)))
    return [records[a:b] for a, b in zip([0, *cuts], [*cuts, len(records)], strict=True)]


@given(record_batches(), st.sampled_from([None, {0: 2}, {1: 1, 2: 50}]))
def test_native_staging_equals_the_python_path(
    batches: list[list[Record]], floors: dict[int, int] | None
) -> None:
    assert_same(stage(batches, native_core=True, floors=floors),
                stage(batches, native_core=False, floors=floors))  # fmt: skip


class _Message(Record):
    """A consumed message as ``confluent_kafka.Message`` gives it: a record, or an error."""

    __slots__ = ("_error",)

    def __init__(self, record: Record, error: object = None) -> None:
        super().__init__(record.topic(), record.partition(), record.offset(), record.key(),
                         record.value())  # fmt: skip
        self._error = error

    def error(self) -> object:
        return self._error


@given(
    record_batches(),
    st.data(),
    st.sampled_from([None, {0: 2}]),
)
def test_consumed_messages_errors_partitions_drops_and_later_batches_match(
    batches: list[list[Record]], data: st.DataObject, floors: dict[int, int] | None
) -> None:
    """``add_consumed`` (the loop's filter) on both cores: messages with an error come back in
    order, unassigned partitions are skipped; then partitions dropped, a split, and staging
    that goes on after the split (the split keeps its rows)."""
    consumed = [
        [_Message(r, data.draw(st.sampled_from([None, None, None, "eof"]))) for r in b]
        for b in batches
    ]
    assigned = data.draw(st.sampled_from([{0, 1, 2}, {0, 2}, {1}]))
    dropped = data.draw(st.sampled_from([set(), {1}, {0, 2}]))
    both = [StagedBatch(CODEC, floors=dict(floors or {}), native=n) for n in (True, False)]
    errors: list[list[int]] = [[], []]
    for i, messages in enumerate(consumed):
        for staged, seen in zip(both, errors, strict=True):
            got = staged.add_consumed(messages, i, {("klines", p) for p in assigned})
            seen += [id(m) for m in got]
    assert errors[0] == errors[1]
    for staged in both:
        staged.drop_partitions({("klines", p) for p in dropped})
    assert_same(*(staged.split() for staged in both))
    assert both[0].first_at_ms == both[1].first_at_ms and len(both[0]) == len(both[1])
    for staged in both:
        staged.add([r for b in batches[:1] for r in b], 99)
    assert_same(*(staged.split() for staged in both))


@given(st.lists(valid_klines(), min_size=1, max_size=30))
def test_native_staging_takes_valid_candles_and_equals_the_exact_path(ks: list[Kline]) -> None:
    records = [Record("klines", 0, i, k.key.encode(), CODEC.encode(k)) for i, k in enumerate(ks)]
    primers = [Record("klines", 1, i, f"{s}|{i_}".encode(), CODEC.encode(make_kline(s, i_)))
               for i, (s, i_) in enumerate(PAIRS)]  # fmt: skip
    ours = stage([primers, records], native_core=True)
    assert_same(ours, stage([primers, records], native_core=False))
    # Valid candles: every line converted as it was staged, the writer converts nothing.
    assert ours.batch.binary == copy_binary(ours.batch.copy_text()) is not None
    exact = StagedBatch(CODEC, fast=False)
    exact.add([*primers, *records], 0)
    assert sorted(ours.batch.rows) == sorted(exact.split().batch.rows)


def test_the_fast_path_really_runs_natively() -> None:
    # After the primer, the candles must take the compiled fast path, not the exact one.
    staged = StagedBatch(CODEC)
    k0, k1 = make_kline(), make_kline(open_time=T0 + 60_000)
    staged.add([Record("klines", 0, 0, k0.key.encode(), CODEC.encode(k0))], 0)
    exact_calls: list[int] = []
    real = staged._add_exact

    def counted(r: Any, tp: Any, offset: int, value: bytes | None) -> None:
        exact_calls.append(offset)
        real(r, tp, offset, value)

    staged._add_exact = counted  # type: ignore[method-assign]
    staged.add([Record("klines", 0, 1, k1.key.encode(), CODEC.encode(k1))], 0)
    assert exact_calls == []
    assert len(staged.split().batch.rows) == 2


@given(st.lists(st.integers(1_262_304_000_000, 7_258_118_400_000 + 100 * 86_400_000), max_size=50))
def test_timestamp_text_equals_the_python_twin(times: list[int]) -> None:
    assert native.MODULE is not None
    assert native.MODULE.ts_texts(times) == [ts_text(t) for t in times]


# -- the comparison can fail --------------------------------------------------------------------


def _one_batch() -> list[list[Record]]:
    ks = [make_kline(), make_kline(open_time=T0 + 60_000, close="42001.5")]
    return [[Record("klines", 0, i, k.key.encode(), CODEC.encode(k)) for i, k in enumerate(ks)]]


class _AlteredRows:
    """The compiled rows of a batch with one byte of every COPY line changed at the split."""

    def __init__(self) -> None:
        self.inner = native.make_staged_rows()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    def __setitem__(self, ident: Any, staged: Any) -> None:
        self.inner[ident] = staged

    def split(self) -> Any:
        text, view, partitions, spans, newest, binary = self.inner.split()
        rows = [(*row[:3], row[3].replace(b"5", b"6")) for row in view]
        return text.replace(b"5", b"6"), rows, partitions, spans, newest, binary


class _AlteredStager:
    """The compiled stager, with what it hands to the exact path filtered by ``drop``."""

    def __init__(self, prefix: bytes, drop: Callable[[Any], bool]) -> None:
        self.inner = native.make_kline_stager(prefix)
        self.drop = drop

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def add(self, records: Any, assigned: Any, floors: Any, offsets: Any, held: Any,
            firsts: Any, rows: Any, add_exact: Any, errors: Any) -> Any:  # fmt: skip
        def exact(r: Any, tp: Any, offset: int, value: bytes | None) -> None:
            if not self.drop(r):
                add_exact(r, tp, offset, value)

        assert self.inner is not None
        store = getattr(rows, "inner", rows)
        return self.inner.add(records, assigned, floors, offsets, held, firsts, store, exact,
                              errors)  # fmt: skip


class _AlteredBinaryRows(_AlteredRows):
    """The compiled rows with one byte of the staged binary COPY changed, the text intact."""

    def split(self) -> Any:
        text, view, partitions, spans, newest, binary = self.inner.split()
        assert binary is not None
        return text, view, partitions, spans, newest, binary[:-1] + bytes([binary[-1] ^ 1])


@pytest.mark.parametrize("altered", [_AlteredRows, _AlteredBinaryRows], ids=["text", "binary"])
def test_equivalence_fails_when_the_native_output_is_altered(
    monkeypatch: Any, altered: type[_AlteredRows]
) -> None:
    monkeypatch.setattr(batch_module, "make_staged_rows", altered)
    monkeypatch.setattr(
        batch_module, "make_kline_stager", lambda p: _AlteredStager(p, lambda r: False)
    )
    batches = _one_batch()
    with pytest.raises(AssertionError):
        assert_same(stage(batches, native_core=True), stage(batches, native_core=False))


def _damaged_batch() -> list[list[Record]]:
    """A good candle, then its successor's body cut short (a DLQ verdict on both paths)."""
    ks = [make_kline(), make_kline(open_time=T0 + 60_000)]
    values = [CODEC.encode(k) for k in ks]
    values[1] = values[1][:-7]
    pairs = enumerate(zip(ks, values, strict=True))
    return [[Record("klines", 0, i, k.key.encode(), v) for i, (k, v) in pairs]]


def test_equivalence_fails_when_the_native_side_loses_a_damaged_record(monkeypatch: Any) -> None:
    # The compiled side swallows what it would hand to the exact path: the cut body's DLQ
    # verdict is missing on that side only.
    monkeypatch.setattr(
        batch_module, "make_kline_stager", lambda p: _AlteredStager(p, lambda r: True)
    )
    batches = _damaged_batch()
    assert [e.error_class for e in stage(batches, native_core=False).dlq] == ["UndecodableRecord"]
    with pytest.raises(AssertionError):
        assert_same(stage(batches, native_core=True), stage(batches, native_core=False))


def test_equivalence_fails_when_the_python_side_takes_a_damaged_record(monkeypatch: Any) -> None:
    # The Python fast reader altered to pad a cut body back to a candle: it stages a row where
    # the compiled side gives a DLQ verdict.
    real = StagedBatch._fast

    def lenient(self: StagedBatch, d: bytes, key: bytes | None) -> Any:
        staged = real(self, d, key)
        if staged is None and key is not None:
            return real(self, d + CODEC.encode(make_kline(open_time=T0 + 60_000))[len(d) :], key)
        return staged

    monkeypatch.setattr(StagedBatch, "_fast", lenient)
    batches = _damaged_batch()
    with pytest.raises(AssertionError):
        assert_same(stage(batches, native_core=True), stage(batches, native_core=False))


def test_equivalence_fails_when_the_python_path_is_altered(monkeypatch: Any) -> None:
    real = StagedBatch._fast

    def altered(self: StagedBatch, d: bytes, key: bytes | None) -> Any:
        """The Python fast reader with the trade count of every line it builds one higher."""
        staged = real(self, d, key)
        if staged is None:
            return None
        ident, ingested, row = staged
        return ident, ingested, (*row[:3], row[3].replace(b"\t321\t", b"\t322\t"))

    monkeypatch.setattr(StagedBatch, "_fast", altered)
    batches = _one_batch()
    with pytest.raises(AssertionError):
        assert_same(stage(batches, native_core=True), stage(batches, native_core=False))


def test_a_damaged_record_gets_the_same_dlq_verdict_on_both_paths() -> None:
    good = make_kline()
    bad = dataclasses.replace(make_kline(open_time=T0 + 60_000), high="1")  # high < open
    records = [
        Record("klines", 0, i, k.key.encode(), CODEC.encode(k)) for i, k in enumerate([good, bad])
    ]
    ours, oracle = stage([records], native_core=True), stage([records], native_core=False)
    assert_same(ours, oracle)
    assert [e.error_class for e in ours.dlq] == ["InvalidKline"]
