"""Bulk archive end to end: monthly and daily zips from the simulator's data.binance.vision,
a missing monthly file (→ daily files), a missing and a corrupt daily file (→ REST), all
compared row by row with the truth after the real sink wrote them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from qryptify.kline import Kline
from qryptify.pairs import DAY_MS
from sim.symbols import parse_time_ms
from tests.e2e.backfill_support import BackfillEnv, read_topic
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e

MISSING_MONTH = "BTCUSDT-1m-2024-06.zip"
MISSING_DAY = "BTCUSDT-1m-2024-07-03.zip"
CORRUPT_DAY = "BTCUSDT-1m-2024-07-05.zip"


@pytest.fixture
def env(backfill_env: Callable[..., BackfillEnv]) -> BackfillEnv:
    return backfill_env(
        ("BTCUSDT/1m", "ETHUSDT/5m"),
        start_date="2024-05-01",
        faults={
            "archive_missing": [MISSING_MONTH, MISSING_DAY],
            "archive_corrupt": [CORRUPT_DAY],
        },
    )


def test_missing_and_corrupt_archive_files_are_filled_from_rest(env: BackfillEnv) -> None:
    env.start("services.sink")
    backfiller = env.backfiller()
    assert backfiller.run() == 0
    wait_until(env.sink_caught_up, 120, "the sink to write everything")

    reports = env.check()
    assert [(len(r.missing), len(r.extra), len(r.wrong)) for r in reports] == [(0, 0, 0)] * 2

    stats = backfiller.archive.stats if backfiller.archive else None
    assert stats is not None
    assert stats.missing == 2  # the monthly and the daily file
    assert stats.corrupt == 2  # the corrupt daily, downloaded twice, rejected both times
    summary = backfiller.summary
    print(summary.line())

    def day_sources(day: str) -> Counter[str]:
        start = parse_time_ms(day)
        return Counter(
            e.source
            for _, _, e in events
            if isinstance(e, Kline) and e.interval == "1m" and start <= e.open_time < start + DAY_MS
        )

    events = read_topic(env.kafka)
    # the missing and the corrupt daily file came from REST, whole days of them
    assert day_sources("2024-07-03") == Counter({"rest": 1440})
    assert day_sources("2024-07-05") == Counter({"rest": 1440})
    # June's missing monthly file was replaced by June's daily files
    assert day_sources("2024-06-15") == Counter({"archive": 1440})
    assert day_sources("2024-05-15") == Counter({"archive": 1440})
    # nothing was published twice
    keys = [(e.symbol, e.interval, e.open_time) for _, _, e in events if isinstance(e, Kline)]
    assert len(keys) == len(set(keys))
