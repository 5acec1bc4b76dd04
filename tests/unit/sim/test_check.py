"""The DB-vs-truth comparison, as a pure function over rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from qryptify.pairs import Pair
from sim.check import CheckReport, compare_rows, format_report, report_to_json

PAIR = Pair("BTCUSDT", "1m")
T0 = 1_704_067_200_000


def truth_row(t: int, close: str = "42000.10") -> list[Any]:
    return [
        t,
        "42000.00",
        "42010.50",
        "41990.25",
        close,
        "12.345",
        t + 59_999,
        "518000.12345",
        321,
        "6.100",
        "256000.00000",
        "0",
    ]


def db_row(row: list[Any]) -> dict[str, Any]:
    def ts(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    return {
        "ts": ts(row[0]),
        "open": float(row[1]),
        "high": float(row[2]),
        "low": float(row[3]),
        "close": float(row[4]),
        "volume": float(row[5]),
        "close_time": ts(row[6]),
        "quote_asset_volume": float(row[7]),
        "number_of_trades": row[8],
        "taker_buy_base": float(row[9]),
        "taker_buy_quote": float(row[10]),
    }


def test_identical_rows_pass() -> None:
    truth = [truth_row(T0 + i * 60_000) for i in range(5)]
    report = compare_rows(PAIR, truth, [db_row(r) for r in truth])
    assert report.ok and report.truth_rows == report.db_rows == 5


def test_missing_extra_and_wrong_are_reported() -> None:
    truth = [truth_row(T0 + i * 60_000) for i in range(5)]
    db = [db_row(r) for r in truth[:3]]  # 3 and 4 missing
    db[1]["close"] = 42000.11  # wrong
    db.append(db_row(truth_row(T0 + 10 * 60_000)))  # extra
    report = compare_rows(PAIR, truth, db)
    assert not report.ok
    assert report.missing == (T0 + 3 * 60_000, T0 + 4 * 60_000)
    assert report.extra == (T0 + 10 * 60_000,)
    assert [(w.open_time, w.column) for w in report.wrong] == [(T0 + 60_000, "close")]
    text = format_report(CheckReport(T0, T0 + 3_600_000, (report,)))
    assert "DISCREPANCIES FOUND" in text and "wrong" in text
    assert report_to_json(CheckReport(T0, T0, (report,)))["ok"] is False


def test_rows_inside_exchange_empty_ranges_are_ignored_not_extra() -> None:
    truth = [truth_row(T0)]
    inside = db_row(truth_row(T0 + 60_000))
    report = compare_rows(PAIR, truth, [db_row(truth[0]), inside], [(T0 + 60_000, T0 + 120_000)])
    assert report.ok and report.ignored == (T0 + 60_000,)


def test_wrong_close_time_and_trades_are_caught() -> None:
    truth = [truth_row(T0)]
    db = db_row(truth[0])
    db["number_of_trades"] = 320
    db["close_time"] = datetime.fromtimestamp((T0 + 60_000) / 1000, tz=UTC)
    report = compare_rows(PAIR, truth, [db])
    assert {w.column for w in report.wrong} == {"number_of_trades", "close_time"}
