"""The archive audit's pure parts: diffing two contents of a file, ledger records."""

from __future__ import annotations

import dataclasses

from qryptify.archive_ledger import IngestedFile, ingested_from_record
from qryptify.audit import diff_candles
from qryptify.binance.archive import ArchiveFile
from qryptify.pairs import MINUTE_MS
from tests.conftest import T0, make_kline


def test_diff_finds_new_different_and_gone_candles_ignoring_ingest_time() -> None:
    old = [make_kline(open_time=T0 + i * MINUTE_MS) for i in range(5)]
    new = [dataclasses.replace(k, ingested_at=k.ingested_at + 999) for k in old]
    assert diff_candles(old, new).count == 0
    new[1] = dataclasses.replace(new[1], close="41999.5", low="41900")
    del new[3]
    new.append(make_kline(open_time=T0 + 7 * MINUTE_MS))
    diff = diff_candles(old, new)
    assert [k.open_time for k in diff.changed] == [T0 + MINUTE_MS, T0 + 7 * MINUTE_MS]
    assert diff.gone == [T0 + 3 * MINUTE_MS] and diff.count == 3


def test_ledger_records_map_back_to_files_and_unsound_ones_are_refused() -> None:
    file = ArchiveFile.monthly("BTCUSDT", "1h", 1_704_067_200_000)
    record: dict[str, object] = {
        "path": file.path,
        "kind": "monthly",
        "symbol": "BTCUSDT",
        "interval": "1h",
        "period_start": file.start_ms,
        "start_time": file.start_ms + 3_600_000,
        "end_time": file.end_ms,
        "sha256": "ab" * 32,
        "recorded_at": 1,
    }
    assert ingested_from_record(record) == IngestedFile(
        file, file.start_ms + 3_600_000, file.end_ms, "ab" * 32
    )
    for bad in (
        {"path": "data/elsewhere.zip"},
        {"kind": "weekly"},
        {"end_time": file.end_ms + 1},  # beyond the file's period
        {"start_time": file.end_ms},  # empty range
        {"sha256": None},
    ):
        assert ingested_from_record({**record, **bad}) is None
