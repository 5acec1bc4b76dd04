"""The README's "See the data" snippets, run as written against the real broker and database:
the pandas read of ``candlesticks`` and the ``klines.dlq`` reader."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qryptify import db
from qryptify.config import KafkaConfig
from qryptify.kafka import make_producer
from tests.conftest import T0, make_kline

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## See the data", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


def run_snippet(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )


def test_the_pandas_snippet_reads_candlesticks(db_dsn: str) -> None:
    pandas_block = next(b for b in readme_python_blocks() if "pandas" in b)
    klines = [make_kline("BTCUSDT", "4h", T0 + i * 4 * 3_600_000) for i in range(7)]
    with db.connect(db_dsn) as conn:
        db.write_batch(conn, klines, [])
        conn.commit()
    proc = run_snippet(pandas_block, DSN=db_dsn)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["open", "high", "low", "close", "volume"]
    assert len(lines) == 2 + 5  # header, index name, df.tail(): the last five candles


def test_the_dlq_reader_prints_the_reason_headers(kafka_cfg: KafkaConfig) -> None:
    dlq_block = next(b for b in readme_python_blocks() if "DLQ_TOPIC" in b)
    producer = make_producer(kafka_cfg)
    producer.produce(
        kafka_cfg.dlq_topic,
        key=b"BTCUSDT|1m",
        value=b"garbage",
        headers=[
            ("qryptify.reason", b"unknown framing"),
            ("qryptify.topic", kafka_cfg.topic.encode()),
            ("qryptify.partition", b"2"),
            ("qryptify.offset", b"41"),
            ("qryptify.error_class", b"UndecodableRecord"),
        ],
    )
    assert producer.flush(30) == 0
    proc = run_snippet(
        dlq_block, BOOTSTRAP=kafka_cfg.bootstrap_servers, DLQ_TOPIC=kafka_cfg.dlq_topic
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"{kafka_cfg.topic} 2 41 UndecodableRecord unknown framing b'BTCUSDT|1m'"
    )
