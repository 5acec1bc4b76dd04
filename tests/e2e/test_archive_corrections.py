"""Corrections to published history, end to end: the simulator re-uploads a monthly archive
file with changed content (hours gone, an hour with other values, a former maintenance gap now
filled); ``qryptify audit`` re-ingests it through Kafka into PostgreSQL, and the database equals
the simulator's new truth — also after restarting the sink and the backfiller on the warm
cache. And an audit with nothing changed asks the exchange for one CHECKSUM per file, nothing
else."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from qryptify import db
from qryptify.kline import Event, Kline
from qryptify.pairs import DAY_MS, HOUR_MS, Pair, align_open
from sim.check import compare_db_with_truth, format_report
from sim.server import SimulatorThread
from sim.symbols import parse_time_ms
from tests.e2e.backfill_support import BackfillEnv, read_topic
from tests.integration.conftest import fresh_database, fresh_topics
from tests.support.processes import PYTHON, ROOT, wait_until
from tests.support.processes import TIMEOUT_FACTOR as FACTOR

pytestmark = pytest.mark.e2e

MAY = parse_time_ms("2024-05-01")
MAY_FILE = "BTCUSDT-1h-2024-05.zip"
MAY_PATH = "data/futures/um/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-05.zip"
JUNE_PATH = "data/futures/um/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-06.zip"
#: Exchange maintenance in the first upload: two hours without candles.
MAINTENANCE = (MAY + 8 * DAY_MS, MAY + 8 * DAY_MS + 2 * HOUR_MS)
#: The re-upload: three whole hours gone, half of one hour gone (other values), the
#: maintenance hours filled.
GONE = (MAY + 2 * DAY_MS, MAY + 2 * DAY_MS + 3 * HOUR_MS)
HALF = (MAY + 4 * DAY_MS + 30 * 60_000, MAY + 4 * DAY_MS + HOUR_MS)


@pytest.fixture
def env(backfill_env: Callable[..., BackfillEnv]) -> BackfillEnv:
    maintenance = {"symbol": "BTCUSDT", "start": MAINTENANCE[0], "end": MAINTENANCE[1]}
    return backfill_env(
        ("BTCUSDT/1h",), start_date="2024-05-01", faults={"empty_ranges": [maintenance]}
    )


def run_qryptify(env: BackfillEnv, *args: str, check: bool = True) -> str:
    """``qryptify --config … ARGS``; stdout (plus stderr when ``check``)."""
    done = subprocess.run(
        [PYTHON, "-m", "qryptify", "--config", str(env.config_path()), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300 * FACTOR,
        check=False,
    )
    print(done.stdout + done.stderr)
    if not check:
        return done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def topic_events(env: BackfillEnv) -> list[Event]:
    """The topic's events in (partition, offset) order (one pair: one partition)."""
    return [e for _, _, e in sorted(read_topic(env.kafka), key=lambda t: (t[0], t[1]))]


def run_audit(env: BackfillEnv, *args: str) -> str:
    return run_qryptify(env, "audit", *args)


def assert_db_equals_truth(env: BackfillEnv) -> None:
    wait_until(env.sink_caught_up, 120, "the sink to write everything")
    reports = env.check()
    # ignored = rows kept inside ranges the exchange has no candles for: none allowed either
    assert [(len(r.missing), len(r.extra), len(r.wrong), len(r.ignored)) for r in reports] == [
        (0, 0, 0, 0)
    ]
    # and the recorded empty ranges agree with the candles: none holds one
    with db.connect(env.dsn) as conn:
        inside = conn.execute(
            "SELECT count(*) FROM candlesticks c JOIN empty_ranges e USING (symbol, interval)"
            " WHERE c.ts >= e.start_ts AND c.ts < e.end_ts"
        ).fetchone()
    assert inside == (0,)


def backfill(env: BackfillEnv) -> dict[str, int]:
    backfiller = env.backfiller()
    assert backfiller.run() == 0
    assert backfiller.archive is not None
    stats = backfiller.archive.stats
    return {"downloaded": stats.downloaded, "cached": stats.cached, "fixes": stats.corrections}


def test_a_reuploaded_month_reaches_the_database_and_survives_a_restart(
    env: BackfillEnv, pg_admin_dsn: str
) -> None:
    sim = env.sim
    assert isinstance(sim, SimulatorThread)
    sink = env.start("services.sink")
    assert backfill(env) == {"downloaded": 2, "cached": 0, "fixes": 0}  # May and June
    assert_db_equals_truth(env)

    at = sim.now_ms() + 1_000
    sim.set_faults(
        archive_reuploads=[
            {"file": MAY_FILE, "at": at, "empty": [list(GONE), list(HALF)],
             "filled": [list(MAINTENANCE)]}
        ]
    )  # fmt: skip
    # before its time nothing changed: the audit finds nothing
    assert "reingested=0" in run_audit(env)
    sim.advance(2_000)
    before = topic_events(env)
    out = run_audit(env)
    # 3 hours gone + 1 hour with other values + 2 maintenance hours filled
    assert "files_checked=2 unchanged=1 reingested=1 missing=0 failed=0 candles_corrected=6" in out
    assert "corrected BTCUSDT/1h [2024-05-01T00:00:00Z, 2024-06-01T00:00:00Z)" in out
    assert out.count("archive correction: BTCUSDT/1h") == 1  # logged once
    # only what changed went to the topic: the hour with other values and the two filled
    # hours, and one empty range for the three hours gone (REST confirms them empty)
    published = topic_events(env)[len(before) :]
    assert sorted((type(e).__name__, e.open_time if isinstance(e, Kline) else e.start_time)
                  for e in published) == sorted(
        [("Kline", HALF[0] - 30 * 60_000), ("Kline", MAINTENANCE[0]),
         ("Kline", MAINTENANCE[0] + HOUR_MS), ("EmptyRange", GONE[0])]
    )  # fmt: skip
    assert_db_equals_truth(env)
    status = run_qryptify(env, "status", "--json", check=False)
    audit = json.loads(status)["kafka"]["archive_audit"]
    assert {k: audit[k] for k in ("ledger_files", "files_checked", "files_reingested",
            "candles_corrected", "total_files_reingested", "total_candles_corrected")} == {
        "ledger_files": 2, "files_checked": 2, "files_reingested": 1, "candles_corrected": 6,
        "total_files_reingested": 1, "total_candles_corrected": 6,
    }  # fmt: skip
    assert audit["last_finished_ms"] is not None
    assert "archive audit: last " in run_qryptify(env, "status", check=False)

    # the topic is the system of record: a replay into a fresh database gives the same
    with fresh_database(pg_admin_dsn, "fresh", migrated=False) as fresh:
        run_qryptify(env, "replay", "--dsn", fresh, "--no-progress")
        replayed = compare_db_with_truth(
            fresh, sim.url, [Pair("BTCUSDT", "1h")], MAY, align_open("1h", sim.now_ms())
        )
        print(format_report(replayed))
        assert [(len(r.missing), len(r.extra), len(r.wrong), len(r.ignored))
                for r in replayed.pairs] == [(0, 0, 0, 0)]  # fmt: skip

    # restart everything on the warm cache: the cache holds the corrected file now
    sink.stop()
    env.start("services.sink")
    assert backfill(env) == {"downloaded": 0, "cached": 0, "fixes": 0}  # resumed past both
    assert_db_equals_truth(env)
    assert "files_checked=2 unchanged=2 reingested=0" in run_audit(env)
    assert_db_equals_truth(env)


def test_an_audit_with_nothing_changed_asks_only_one_checksum_per_file(env: BackfillEnv) -> None:
    sim = env.sim
    assert isinstance(sim, SimulatorThread)
    backfill(env)
    before_stats, before_files = sim.stats(), sim.archive_requests()
    out = run_audit(env)
    assert "files_checked=2 unchanged=2 reingested=0" in out
    after_stats, after_files = sim.stats(), sim.archive_requests()
    asked = {
        path: after_files[path] - before_files.get(path, 0)
        for path in after_files
        if after_files[path] != before_files.get(path, 0)
    }
    print(f"requests during the audit: {asked}, klines requests "
          f"{after_stats['klines_requests'] - before_stats['klines_requests']}")  # fmt: skip
    assert asked == {MAY_PATH + ".CHECKSUM": 1, JUNE_PATH + ".CHECKSUM": 1}
    assert after_stats["klines_requests"] == before_stats["klines_requests"]
    assert after_stats["archive_zip_requests"] == before_stats["archive_zip_requests"]
    # --since: only files whose period ends after the date (May ends at June's start)
    assert "files_checked=1 unchanged=1" in run_audit(env, "--since", "2024-06-01")
    since = sim.archive_requests()
    assert {p: n - after_files[p] for p, n in since.items() if n != after_files[p]} == {
        JUNE_PATH + ".CHECKSUM": 1
    }


def test_the_backfiller_audits_every_audit_every_s(env: BackfillEnv) -> None:
    sim = env.sim
    assert isinstance(sim, SimulatorThread)
    env.extra = {"backfill": {"audit_every_s": 0.001}}  # due right after the first pass
    env.start("services.sink")
    backfiller = env.backfiller()
    assert backfiller.run() == 0
    assert (backfiller.summary.audits, backfiller.summary.audit_files_reingested) == (1, 0)
    sim.set_faults(
        archive_reuploads=[{"file": MAY_FILE, "at": sim.now_ms(), "empty": [list(GONE)]}]
    )

    def metric(name: str) -> float:
        return REGISTRY.get_sample_value(f"qryptify_backfill_audit_{name}") or 0.0

    before = {n: metric(n) for n in ("files_reingested_total", "candles_corrected_total")}
    again = env.backfiller()
    assert again.run() == 0
    s = again.summary
    assert (s.audits, s.audit_files_reingested, s.audit_candles_corrected) == (1, 1, 3)
    assert {n: metric(n) - v for n, v in before.items()} == {
        "files_reingested_total": 1.0,
        "candles_corrected_total": 3.0,
    }
    assert metric("last_finished_timestamp_seconds") > 0
    assert_db_equals_truth(env)
    # off: the key is honoured
    env.extra = {"backfill": {"audit_every_s": 0}}
    off = env.backfiller()
    assert off.run() == 0 and off.summary.audits == 0


def test_a_fresh_pipeline_on_a_stale_warm_cache_gets_the_reuploaded_file(
    env: BackfillEnv, pg_admin_dsn: str, kafka_bootstrap: str
) -> None:
    """The reported bug: the same exchange month served twice with different content; the
    second run must not take the first run's candles from the cache."""
    sim = env.sim
    assert isinstance(sim, SimulatorThread)
    assert backfill(env) == {"downloaded": 2, "cached": 0, "fixes": 0}
    sim.set_faults(
        archive_reuploads=[
            {"file": MAY_FILE, "at": sim.now_ms(), "empty": [list(GONE), list(HALF)],
             "filled": [list(MAINTENANCE)]}
        ]
    )  # fmt: skip
    kafka = fresh_topics(kafka_bootstrap, "second")
    (env.tmp / "second").mkdir()
    with fresh_database(pg_admin_dsn, "fresh", migrated=False) as dsn:
        second = BackfillEnv(
            sim, kafka, dsn, env.tmp / "second", env.pairs, start_date=env.start_date,
            extra={"archive": {"cache_dir": str(env.tmp / "archive-cache")}},
        )  # fmt: skip
        try:
            second.start("services.sink")
            # June from the cache; May's published checksum changed: downloaded again
            assert backfill(second) == {"downloaded": 1, "cached": 1, "fixes": 1}
            assert_db_equals_truth(second)
        finally:
            second.cleanup()
