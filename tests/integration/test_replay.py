"""Invariant 3 and 4 through ``qryptify replay``: the topic rebuilds the same table any number
of times, into an empty or a full database; later values win; sync_state never decreases."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from qryptify import db
from qryptify.config import Config
from qryptify.kline import EmptyRange
from tests.conftest import T0
from tests.integration.conftest import fresh_database, unique
from tests.integration.sink_helpers import (
    expected_rows,
    produce,
    produce_raw,
    series,
    sync_state,
    table_rows,
    write_config,
)
from tests.support.processes import PYTHON, ROOT

PAIRS = [("BTCUSDT", "1m"), ("ETHUSDT", "5m"), ("DOGEUSDT", "1h")]


@pytest.fixture
def empty_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A database that does not even have the schema yet (replay migrates it)."""
    with fresh_database(pg_admin_dsn, "replay", migrated=False) as dsn:
        yield dsn


def counts(out: str) -> dict[str, int]:
    found = re.search(r"(\d+) rows written, (\d+) unchanged, (\d+) invalid, (\d+) empty", out)
    assert found, out
    return dict(
        zip(("written", "unchanged", "invalid", "empty"), map(int, found.groups()), strict=True)
    )


def replay(config: Path, dsn: str, *extra: str) -> str:
    proc = subprocess.run(
        [PYTHON, "-m", "qryptify", "--config", str(config), "replay", "--dsn", dsn, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_replays_rebuild_identical_tables(
    app_config: Config, empty_dsn: str, tmp_path: Path
) -> None:
    v1 = series(PAIRS, 400)
    # Later corrections of existing keys, and an old candle re-sent after newer ones.
    fixes = series(PAIRS, 25, start=T0 + 100 * 60_000, tag=".25")[:25]
    late = series(PAIRS[:1], 3)
    gap = EmptyRange("BTCUSDT", "1m", T0 + 400 * 60_000, T0 + 460 * 60_000, T0 + 1)
    produce(app_config.kafka, [*v1, gap, *fixes])
    produce_raw(app_config.kafka, [(b"BTCUSDT|1m", b"not avro at all")])
    produce(app_config.kafka, late)
    events = [*v1, *fixes, *late]
    config = write_config(tmp_path / "cfg.yaml", app_config)
    full_dsn = app_config.db.dsn.get_secret_value()

    out = replay(config, full_dsn, "--no-progress")
    got = counts(out)
    # Corrections count as writes when they land in a later transaction than the original.
    assert len(v1) <= got["written"] <= len(v1) + len(fixes), out
    assert (got["invalid"], got["empty"]) == (1, 1)
    assert "rows/s" in out
    first = table_rows(full_dsn)
    assert first == expected_rows(events)
    newest = {
        (s, i): max(k.open_time for k in v1 if (k.symbol, k.interval) == (s, i)) for s, i in PAIRS
    }
    assert sync_state(full_dsn) == newest

    # Live progress ahead of the topic (e.g. the sink on a newer topic): never moved back.
    ahead = newest[("ETHUSDT", "5m")] + 10 * 300_000
    with db.connect(full_dsn) as conn:
        conn.execute(
            "UPDATE sync_state SET last_closed_ts = TIMESTAMPTZ 'epoch' + %s * INTERVAL '1 ms'"
            " WHERE symbol = 'ETHUSDT'",
            (ahead,),
        )
        conn.commit()
    # Second replay into the same database (explicit group, reset to the earliest offsets).
    out = replay(config, full_dsn, "--no-progress", "--group", unique("replay"))
    got = counts(out)
    assert got["written"] == 0, out
    assert got["unchanged"] >= len(expected_rows(events))
    assert table_rows(full_dsn) == first
    assert sync_state(full_dsn) == newest | {("ETHUSDT", "5m"): ahead}

    # Once into an empty database: migrated, then the very same table.
    out = replay(config, empty_dsn, "--no-progress")
    assert table_rows(empty_dsn) == first
    assert sync_state(empty_dsn) == newest
    with db.connect(empty_dsn) as conn:
        ranges = conn.execute("SELECT count(*) FROM empty_ranges").fetchone()
    assert ranges == (1,)


def test_replay_of_an_empty_topic_exits_at_once(app_config: Config, tmp_path: Path) -> None:
    config = write_config(tmp_path / "cfg.yaml", app_config)
    out = replay(config, app_config.db.dsn.get_secret_value(), "--no-progress")
    assert "replayed 0 records" in out
