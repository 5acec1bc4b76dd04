"""``db.write_rows`` on the real PostgreSQL: plain COPY when nothing stored overlaps, the upsert
when something does, and the fall-back when a row appears between the check and the COPY."""

from __future__ import annotations

import dataclasses

import pytest

from qryptify import db, native
from qryptify.sink.rows import CandleBatch, copy_binary
from tests.conftest import T0, make_kline


def _table(dsn: str) -> list[tuple[object, ...]]:
    with db.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT symbol, interval, (extract(epoch FROM ts) * 1000)::bigint, open, high, low,"
            " close, volume, (extract(epoch FROM close_time) * 1000)::bigint,"
            " quote_asset_volume, number_of_trades, taker_buy_base, taker_buy_quote"
            " FROM candlesticks ORDER BY 1, 2, 3"
        ).fetchall()
    return [tuple(r) for r in rows]


def _statements(conn: db.Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT 1").fetchall()]


def test_plain_copy_then_upsert_then_changed_value(db_dsn: str) -> None:
    first = [make_kline(s, open_time=T0 + i * 60_000) for s in ("BTCUSDT", "ETHUSDT")
             for i in range(30)]  # fmt: skip
    with db.connect(db_dsn) as conn:
        assert db.write_batch(conn, first).written == 60
        stored = _table(db_dsn)
        assert len(stored) == 60
        assert stored[0] == ("BTCUSDT", "1m", T0, 42000.0, 42100.0, 41900.0, 42000.5, 12.345,
                             T0 + 59_999, 518000.25, 321, 6.1, 256000.0)  # fmt: skip
        # Overlapping: the upsert path. Identical rows are not rewritten.
        again = db.write_batch(conn, first[10:40])
        assert (again.written, again.unchanged) == (0, 30)
        changed = [dataclasses.replace(first[5], close="42050.25"), *first[6:9]]
        assert db.write_batch(conn, changed).written == 1
        synced = conn.execute(
            "SELECT symbol, (extract(epoch FROM last_closed_ts) * 1000)::bigint"
            " FROM sync_state ORDER BY 1"
        ).fetchall()
    assert [r[6] for r in _table(db_dsn) if r[2] == T0 + 5 * 60_000] == [42050.25, 42000.5]
    assert synced == [("BTCUSDT", T0 + 29 * 60_000), ("ETHUSDT", T0 + 29 * 60_000)]


def test_a_row_appearing_between_the_check_and_the_copy_falls_back_to_the_upsert(
    db_dsn: str,
) -> None:
    ks = [make_kline(open_time=T0 + i * 60_000) for i in range(5)]
    batch = CandleBatch.from_klines(ks)
    with db.connect(db_dsn) as conn:
        db.write_batch(conn, ks[2:3], [])
        with conn.transaction():
            # Spans that do not overlap what is stored: the check says "plain COPY", and the
            # COPY then meets the stored row (as if another writer had just inserted it).
            assert not db._insert_new(conn, batch.copy_text(), [("BTCUSDT", "1m")], [0], [0])
            assert _statements(conn) == ["1"]  # the transaction is still usable
            assert db._upsert(conn, batch.copy_text()) == 4
    assert [r[2] for r in _table(db_dsn)] == [k.open_time for k in ks]


def test_an_empty_range_deletes_the_stored_candles_in_its_span_before_the_batch_rows(
    db_dsn: str,
) -> None:
    from qryptify.kline import EmptyRange

    stored = [make_kline(s, open_time=T0 + i * 60_000) for s in ("BTCUSDT", "ETHUSDT")
              for i in range(6)]  # fmt: skip
    gone = EmptyRange("BTCUSDT", "1m", T0 + 60_000, T0 + 4 * 60_000, T0)
    refilled = make_kline(open_time=T0 + 2 * 60_000, close="42001.5")
    with db.connect(db_dsn) as conn:
        db.write_batch(conn, stored)
        result = db.write_batch(conn, [refilled], [gone])
        empty = conn.execute("SELECT count(*) FROM empty_ranges").fetchone()
    assert (result.deleted, result.empty_ranges, result.written) == (3, 1, 1)
    left = {(str(r[0]), int(str(r[2]))) for r in _table(db_dsn)}
    btc = sorted(t for s, t in left if s == "BTCUSDT")
    # T0+1m and T0+3m deleted; T0+2m written after the delete; ETHUSDT untouched
    assert btc == [T0, T0 + 2 * 60_000, T0 + 4 * 60_000, T0 + 5 * 60_000]
    assert sum(1 for s, _ in left if s == "ETHUSDT") == 6
    assert empty == (2,)  # the range minus the candle written after it: [1m, 2m), [3m, 4m)

    # replaying the same records leaves the same table
    def ranges() -> list[tuple[object, ...]]:
        with db.connect(db_dsn) as conn:
            return list(conn.execute("SELECT * FROM empty_ranges ORDER BY start_ts").fetchall())

    before = _table(db_dsn), ranges()
    with db.connect(db_dsn) as conn:
        db.write_batch(conn, [refilled], [gone])
    assert (_table(db_dsn), ranges()) == before


def test_candles_written_into_a_recorded_empty_range_trim_it_to_its_still_empty_parts(
    db_dsn: str,
) -> None:
    from qryptify.kline import EmptyRange

    minute = 60_000
    with db.connect(db_dsn) as conn:
        db.write_batch(conn, [make_kline(open_time=T0)],
                       [EmptyRange("BTCUSDT", "1m", T0 + minute, T0 + 6 * minute, T0)])  # fmt: skip
        # a corrected file fills two of the five minutes (and ETHUSDT is another pair)
        filled = [make_kline(open_time=T0 + 2 * minute), make_kline(open_time=T0 + 4 * minute),
                  make_kline("ETHUSDT", open_time=T0 + 3 * minute)]  # fmt: skip
        db.write_batch(conn, filled)
        ranges = conn.execute(
            "SELECT symbol, (extract(epoch FROM start_ts) * 1000)::bigint,"
            " (extract(epoch FROM end_ts) * 1000)::bigint,"
            " (extract(epoch FROM confirmed_at) * 1000)::bigint FROM empty_ranges ORDER BY 2"
        ).fetchall()
    assert ranges == [
        ("BTCUSDT", T0 + minute, T0 + 2 * minute, T0),
        ("BTCUSDT", T0 + 3 * minute, T0 + 4 * minute, T0),
        ("BTCUSDT", T0 + 5 * minute, T0 + 6 * minute, T0),
    ]


def test_binary_copy_stores_exactly_what_text_copy_stores(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled core sends rows as binary COPY; the table must hold the same bits as
    after a text COPY of the same lines (doubles compared by their bytes: -0, rounding)."""
    if native.MODULE is None:
        pytest.skip(f"binary COPY needs the native core: {native.CORE}")
    spellings = ["0", "-0.0", "1e-320", "123456789.123456789123", "0.1", "1.7976931348623157e308",
                 "4.9e-324", "2.5E+3", "00012.50"]  # fmt: skip
    ks = [
        make_kline(s, i, t, open=p, high=p, low=p, close=p, volume=v, quote_volume=v,
                   taker_buy_base=v, taker_buy_quote=v, trades=n)
        for s, i, t in [("BTCUSDT", "1m", T0), ("ETHUSDT", "1M", 1_262_304_000_000)]
        for p in ["42000.5", "-1.25", "1e-300"]
        for v, n in zip(spellings, [0, 1, 2**63 - 1, 7, 8, 9, 10, 11, 12], strict=True)
    ]  # fmt: skip
    ks = list({(k.key, k.open_time): k for k in ks}.values())
    batch = CandleBatch.from_klines(ks)
    assert copy_binary(batch.copy_text()) is not None
    stored = []
    for binary in (True, False):
        with db.connect(db_dsn) as conn:
            conn.execute("TRUNCATE candlesticks")
            conn.commit()
            if not binary:
                monkeypatch.setattr(db, "copy_binary", lambda text: None)
            db.write_rows(conn, batch)
            stored.append(
                conn.execute(
                    "SELECT ts, symbol, interval, float8send(open), float8send(high),"
                    " float8send(low), float8send(close), float8send(volume), close_time,"
                    " float8send(quote_asset_volume), number_of_trades,"
                    " float8send(taker_buy_base), float8send(taker_buy_quote)"
                    " FROM candlesticks ORDER BY symbol, interval, ts"
                ).fetchall()
            )
    assert len(stored[0]) == len(ks)
    assert stored[0] == stored[1]


def test_a_piece_the_core_does_not_take_goes_by_text_copy_with_the_rest(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Binary COPY piece by piece; from the first piece the core refuses, the rest goes by a
    text COPY in the same transaction: every row stored once, as the all-text path stores it."""
    if native.MODULE is None:
        pytest.skip(f"binary COPY needs the native core: {native.CORE}")
    ks = [make_kline("BTCUSDT", "1m", T0 + i * 60_000, open=f"{i}.5", high=f"{i + 1}",
                     low=f"{i}", close=f"{i}.25", trades=i) for i in range(300)]  # fmt: skip
    batch = CandleBatch.from_klines(ks)
    monkeypatch.setattr(db, "COPY_PIECE_BYTES", 2_000)
    pieces = db.copy_pieces(batch.copy_text(), 2_000)
    assert len(pieces) > 5
    converted: list[int] = []

    def refusing_the_third(text: bytes) -> bytes | None:
        index = pieces.index(text)
        if index == 2:
            return None
        converted.append(index)
        return copy_binary(text)

    stored = []
    for patch in (refusing_the_third, lambda text: None):
        with db.connect(db_dsn) as conn:
            conn.execute("TRUNCATE candlesticks")
            conn.commit()
            monkeypatch.setattr(db, "copy_binary", patch)
            db.write_rows(conn, batch)
            stored.append(
                conn.execute(
                    "SELECT ts, symbol, float8send(open), float8send(close), number_of_trades"
                    " FROM candlesticks ORDER BY ts"
                ).fetchall()
            )
    assert converted == [0, 1]  # the pieces after the refused one were not converted
    assert len(stored[0]) == len(ks)
    assert stored[0] == stored[1]
