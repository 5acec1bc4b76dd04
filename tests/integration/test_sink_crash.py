"""Invariant 2 under hard kills: the sink is killed (exit 137, no cleanup) at every point of its
cycle and by a real SIGKILL at arbitrary moments; after restarts nothing is missing, nothing is
duplicated, and no committed offset is ahead of the rows durably written."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

from qryptify.config import Config
from qryptify.sink.loop import HOOK_POINTS
from services.sink.run import ENV_INSTANCE_ID
from tests.integration.sink_helpers import (
    assert_offsets_not_ahead,
    caught_up,
    committed_nonempty,
    expected_rows,
    nonempty_watermarks,
    produce,
    produce_raw,
    read_topic,
    row_count,
    series,
    start_sink,
    sync_state,
    table_rows,
    topic_klines,
    write_config,
)
from tests.support.processes import wait_until
from tests.support.sink_crash import CRASH_EXIT_CODE, ENV_CRASH_AT

PAIRS = [("BTCUSDT", "1m"), ("ETHUSDT", "1m"), ("BNBUSDT", "5m"), ("ADAUSDT", "1h")]


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _finish(config: Path, log: Path, app_config: Config, env: dict[str, str]) -> None:
    seen = log.stat().st_size if log.exists() else 0
    proc = start_sink(config, log, env)
    try:
        # Running (signal handlers in place) before we look: the killed ones may already have
        # written everything, and a SIGTERM during start-up would only test the interpreter.
        wait_until(
            lambda: b"assigned partitions" in log.read_bytes()[seen:] or proc.poll() is not None,
            60,
            "the sink to join its group",
        )
        wait_until(caught_up(app_config.kafka, app_config.sink.group_id), 90, "final catch-up")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, _log_tail(log)


def test_killed_at_every_point_of_the_cycle(app_config: Config, tmp_path: Path) -> None:
    events = series(PAIRS, 150) + series(PAIRS, 30, tag=".75")
    produce(app_config.kafka, events[:300])
    produce_raw(app_config.kafka, [(b"BTCUSDT|1m", b"\x00garbage"), (b"ETHUSDT|1m", b"junk")])
    produce(app_config.kafka, events[300:])
    records = topic_klines(app_config.kafka, len(events) + 2)
    assert len(records) == len(events)
    dsn = app_config.db.dsn.get_secret_value()
    group = app_config.sink.group_id
    config = write_config(tmp_path / "sink.yaml", app_config, batch_size=60, max_latency_ms=50)
    log = tmp_path / "sink.log"
    env = {ENV_INSTANCE_ID: "crash-test"}

    progress: list[dict[int, int]] = []
    for point in HOOK_POINTS:
        proc = start_sink(
            config, log, env | {ENV_CRASH_AT: f"{point}:2"}, module="tests.support.sink_crash"
        )
        assert proc.wait(90) == CRASH_EXIT_CODE, _log_tail(log)
        progress.append(assert_offsets_not_ahead(app_config.kafka, group, dsn, records))
    # Each run committed its first batch before crashing in the second: progress was made,
    # and committed offsets never went backwards.
    assert max(progress[-1].values()) > 0
    for earlier, later in zip(progress, progress[1:], strict=False):
        assert all(later[p] >= earlier[p] for p in earlier)
    assert row_count(dsn) < len(events)

    _finish(config, log, app_config, env)
    assert table_rows(dsn) == expected_rows(events)
    assert sync_state(dsn) == {
        (s, i): max(k.open_time for k in events if (k.symbol, k.interval) == (s, i))
        for s, i in PAIRS
    }
    marks = nonempty_watermarks(app_config.kafka)
    assert committed_nonempty(app_config.kafka, group) == marks
    # Both garbage records reached the DLQ (at least once: a crash after the DLQ delivery and
    # before the offset commit sends them again).
    dlq = read_topic(app_config.kafka, app_config.kafka.dlq_topic, 2)
    assert {m.value() for m in dlq} == {b"\x00garbage", b"junk"}


def test_real_sigkill_at_arbitrary_moments(app_config: Config, tmp_path: Path) -> None:
    events = series(PAIRS, 2500) + series(PAIRS, 500, tag=".75")
    produce(app_config.kafka, events)
    records = topic_klines(app_config.kafka, len(events))
    dsn = app_config.db.dsn.get_secret_value()
    group = app_config.sink.group_id
    config = write_config(tmp_path / "sink.yaml", app_config, batch_size=300, max_latency_ms=50)
    log = tmp_path / "sink.log"
    env = {ENV_INSTANCE_ID: "kill-test"}
    rng = random.Random(20240101)

    kills = 0
    marks = nonempty_watermarks(app_config.kafka)
    for _ in range(3):
        before = row_count(dsn), committed_nonempty(app_config.kafka, group)
        proc = start_sink(config, log, env)

        def progressed(
            b: tuple[int, dict[int, int]] = before, p: subprocess.Popen[bytes] = proc
        ) -> bool:
            # More rows, or offsets moved (corrections change no count), or nothing left to do
            # (a fast sink may finish within the first runs): then the kill hits an idle sink.
            done = committed_nonempty(app_config.kafka, group)
            return row_count(dsn) > b[0] or done != b[1] or done == marks or p.poll() is not None

        try:
            wait_until(progressed, 60, "progress")
        except AssertionError:
            proc.kill()  # a failed wait must not leave the sink running after the test
            proc.wait(30)
            raise
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is not None:
            raise AssertionError(f"sink exited early:\n{_log_tail(log)}")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
        kills += 1
        assert_offsets_not_ahead(app_config.kafka, group, dsn, records)
    assert kills == 3

    _finish(config, log, app_config, env)
    assert table_rows(dsn) == expected_rows(events)
    assert committed_nonempty(app_config.kafka, group) == marks
