"""``rejected_values`` (the backfiller's check before publishing) against the oracle it
shortcuts: ``split_batch`` of every value on the pure-Python path. Same DLQ verdicts on valid,
arbitrary and damaged candles of one pair key; and the comparison fails when the compiled
fast path's answer is altered."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from qryptify import native
from qryptify.avro import KlineCodec
from qryptify.sink import batch as batch_module
from qryptify.sink.batch import DlqEntry, Record, StagedBatch, rejected_values, split_batch
from tests.conftest import T0, make_kline
from tests.unit.native.test_sink_staging import _any_kline, damaged, valid_klines

CODEC = KlineCodec()
KEY = b"BTCUSDT|1m"


def oracle(key: bytes, values: list[bytes]) -> list[DlqEntry]:
    records = [Record("", 0, i, key, v) for i, v in enumerate(values)]
    return split_batch(records, CODEC, native=False).dlq


@st.composite
def pair_values(draw: st.DrawFn) -> list[bytes]:
    """One pair's bodies as the backfiller holds them: mostly valid candles of the pair, some
    arbitrary (other pairs, bad OHLC), some damaged (cut, a byte flipped, junk appended)."""
    klines = draw(st.lists(valid_klines() | _any_kline, min_size=1, max_size=30))
    values: list[bytes] = []
    for k in klines:
        value = damaged(draw, CODEC.encode(k))
        assert value is not None
        values.append(value)
    if draw(st.booleans()):  # the common case: a valid candle of the pair first
        values.insert(0, CODEC.encode(make_kline("BTCUSDT", "1m", T0)))
    return values


@given(pair_values())
def test_rejected_values_equals_split_batch_on_the_python_path(values: list[bytes]) -> None:
    assert rejected_values(KEY, values, CODEC) == oracle(KEY, values)


def test_a_clean_file_is_checked_without_a_record_per_candle(monkeypatch: Any) -> None:
    values = [CODEC.encode(make_kline("BTCUSDT", "1m", T0 + i * 60_000)) for i in range(500)]
    staged: list[int] = []
    real_add = StagedBatch.add

    def counting_add(self: StagedBatch, records: Any, now_ms: int) -> None:
        staged.append(len(records))
        real_add(self, records, now_ms)

    monkeypatch.setattr(StagedBatch, "add", counting_add)
    assert rejected_values(KEY, values, CODEC) == []
    assert native.MODULE is not None and sum(staged) == 1  # only the first, to learn the pair


def test_equivalence_fails_when_the_fast_path_takes_a_damaged_candle(monkeypatch: Any) -> None:
    good = CODEC.encode(make_kline("BTCUSDT", "1m", T0))
    bad = CODEC.encode(make_kline("BTCUSDT", "1m", T0 + 60_000, high="1", low="2"))
    values = [good, bad]
    assert len(oracle(KEY, values)) == 1

    class Lenient:
        """The stager, altered to say its fast path took every candle."""

        def __init__(self, real: Any) -> None:
            self.real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

        def fast_misses(self, key: bytes, vals: list[bytes], start: int) -> list[int]:
            return []

    monkeypatch.setattr(
        batch_module, "make_kline_stager", lambda p: Lenient(native.make_kline_stager(p))
    )
    assert rejected_values(KEY, values, CODEC) != oracle(KEY, values)
