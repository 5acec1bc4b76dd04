"""The database goes away for 30 s mid-stream (a private PostgreSQL, really stopped): the sink
pauses, retries with backoff, commits nothing, does not exit or crash-loop, and catches up with
nothing lost once the database is back. The only long test of the suite."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from qryptify import db
from qryptify.config import Config, build_config
from tests.integration.conftest import PrivatePostgres
from tests.integration.sink_helpers import (
    caught_up,
    committed_nonempty,
    expected_rows,
    nonempty_watermarks,
    produce,
    series,
    start_sink,
    table_rows,
    write_config,
)
from tests.support.processes import wait_until

OUTAGE_S = 30
PAIRS = [("BTCUSDT", "1m"), ("ETHUSDT", "1m"), ("XRPUSDT", "15m")]


def test_database_down_for_30s_loses_nothing(
    app_config: Config, private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    db.create_database(private_pg.admin_dsn, "qryptify")
    dsn = private_pg.admin_dsn.rsplit("/", 1)[0] + "/qryptify"
    cfg = build_config(
        app_config.model_dump(mode="json", exclude={"pairs", "warnings"}) | {"db": {"dsn": dsn}}
    )
    config = write_config(tmp_path / "sink.yaml", cfg, batch_size=100, max_latency_ms=50)
    log = tmp_path / "sink.log"
    group = cfg.sink.group_id
    before = series(PAIRS, 200)
    during = series(PAIRS, 150, start=before[-1].open_time + 15 * 60_000)
    produce(cfg.kafka, before)

    sink = start_sink(config, log)
    try:
        wait_until(caught_up(cfg.kafka, group), 60, "the sink to write the first part")
        assert table_rows(dsn) == expected_rows(before)
        committed_before = committed_nonempty(cfg.kafka, group)

        private_pg.stop()
        produce(cfg.kafka, during)
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:
            assert sink.poll() is None, "the sink exited while the database was down"
            time.sleep(1)
        # Nothing could be written, so nothing was committed.
        assert committed_nonempty(cfg.kafka, group) == committed_before
        assert committed_before != nonempty_watermarks(cfg.kafka)

        private_pg.start()
        wait_until(caught_up(cfg.kafka, group), 60, "the sink to catch up after the outage")
        assert sink.poll() is None
    finally:
        sink.send_signal(signal.SIGTERM)
        code = sink.wait(60)
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert table_rows(dsn) == expected_rows(before + during)
    assert "database write failed" in text and "partitions paused" in text
    assert "resumed" in text
    # One process all along: started once (no crash loop), retried with growing delays.
    assert text.count("sink: topic") == 1
    assert "retrying in 4.0s" in text and "retrying in 5.0s" in text
