"""``qryptify tap`` and the documented third-party consumer against the real broker."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import time
from pathlib import Path

from qryptify.config import Config
from qryptify.kline import EmptyRange
from tests.conftest import T0
from tests.integration.conftest import unique
from tests.integration.sink_helpers import (
    PYTHON,
    ROOT,
    TIMEOUT_FACTOR,
    produce,
    produce_raw,
    series,
    write_config,
)

PAIRS = [("BTCUSDT", "1m"), ("ETHUSDT", "1m"), ("SOLUSDT", "1h")]


def tap(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "qryptify", "--config", str(config), "tap", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120 * TIMEOUT_FACTOR,
        check=False,
    )


def test_tap_prints_the_decoded_stream(app_config: Config, tmp_path: Path) -> None:
    events = series(PAIRS, 5)
    gap = EmptyRange("SOLUSDT", "1h", T0 + 5 * 3_600_000, T0 + 9 * 3_600_000, T0)
    produce(app_config.kafka, [*events, gap])
    produce_raw(app_config.kafka, [(b"BTCUSDT|1m", b"junk")])
    config = write_config(tmp_path / "cfg.yaml", app_config)

    got = tap(config, "--from-beginning", "--exit-at-end", "--format", "json")
    assert got.returncode == 0, got.stderr
    lines = [json.loads(line) for line in got.stdout.splitlines()]
    assert sorted(
        (x["symbol"], x["open_time"], x["close"]) for x in lines if x["type"] == "kline"
    ) == sorted((k.symbol, k.open_time, k.close) for k in events)
    assert [x for x in lines if x["type"] == "empty_range"][0]["end_time"] == gap.end_time
    assert "unknown framing" in got.stderr  # the junk record is reported, not fatal

    got = tap(
        config, "--from-beginning", "--exit-at-end", "--format", "csv", "--pair", "ETHUSDT/1m"
    )
    assert got.returncode == 0, got.stderr
    rows = list(csv.DictReader(io.StringIO(got.stdout)))
    assert [(r["symbol"], int(r["open_time"])) for r in rows] == [
        (k.symbol, k.open_time) for k in events if k.symbol == "ETHUSDT"
    ]

    got = tap(config, "--from-beginning", "--limit", "2", "--pair", "BTCUSDT-1m,SOLUSDT/1h")
    assert got.returncode == 0, got.stderr
    table = got.stdout.splitlines()
    assert table[0].startswith("open_time (UTC)") and len(table) == 3
    assert re.match(r"2024-01-01T00:0\d:00\.000Z +(BTCUSDT/1m|SOLUSDT/1h) ", table[1])


def test_tap_from_now_and_with_a_group(app_config: Config, tmp_path: Path) -> None:
    produce(app_config.kafka, series(PAIRS, 3))
    config = write_config(tmp_path / "cfg.yaml", app_config)
    # From now: nothing old is printed.
    got = tap(config, "--exit-at-end", "--format", "json")
    assert (got.returncode, got.stdout) == (0, ""), got.stderr
    group = unique("tap")
    got = tap(config, "--from-beginning", "--exit-at-end", "--format", "json", "--group", group)
    assert got.returncode == 0 and len(got.stdout.splitlines()) == 9, got.stderr
    # The group committed what it printed: a second run resumes after it.
    produce(app_config.kafka, series(PAIRS[:1], 1, start=T0 + 3 * 60_000))
    got = tap(config, "--exit-at-end", "--format", "json", "--group", group)
    assert got.returncode == 0, got.stderr
    assert [json.loads(x)["open_time"] for x in got.stdout.splitlines()] == [T0 + 3 * 60_000]


def _doc_consumer() -> str:
    text = (ROOT / "docs" / "consumers.md").read_text(encoding="utf-8")
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) <= 22  # "a 20-line consumer"
    return block


def test_documented_third_party_consumer_decodes_the_stream(
    app_config: Config, tmp_path: Path
) -> None:
    events = series(PAIRS, 4)
    produce(app_config.kafka, [*events, EmptyRange("BTCUSDT", "1m", T0, T0 + 60_000, T0)])
    script = tmp_path / "consumer.py"
    script.write_text(_doc_consumer(), encoding="utf-8")
    env = os.environ | {
        "BOOTSTRAP": app_config.kafka.bootstrap_servers,
        "TOPIC": app_config.kafka.topic,
        "GROUP": unique("third-party"),
        "AVSC": str(ROOT / "qryptify" / "schemas" / "kline.avsc"),
    }
    lines: list[list[str]] = []
    deadline = time.monotonic() + 60 * TIMEOUT_FACTOR
    with subprocess.Popen(
        [PYTHON, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        try:
            while len(lines) < len(events) and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line.split())
        finally:
            proc.kill()
    assert sorted((s, i, c) for s, i, _t, c in lines) == sorted(
        (k.symbol, k.interval, k.close) for k in events
    )
