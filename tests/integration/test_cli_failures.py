"""Expected failures of the command-line tools are one line on stderr and a documented exit
code (qryptify/cli.py): Kafka, PostgreSQL or the exchange down (3), a pair that is not
configured (2), no data yet (4). Never a traceback, never librdkafka's lines in bulk."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qryptify.config import KafkaConfig
from tests.integration.conftest import unique

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, kafka: str, dsn: str, rest: str) -> Path:
    path = tmp_path / "config.yaml"
    doc = {
        "pairs": ["BTCUSDT/1m"],
        "rest": {"endpoint": rest},
        "db": {"dsn": dsn},
        "kafka": {"bootstrap_servers": kafka, "topic": unique("missing")},
        "log": {"format": "human"},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def qryptify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qryptify", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def down(tmp_path: Path) -> Path:
    port = closed_port()
    return write_config(
        tmp_path,
        f"127.0.0.1:{port}",
        f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/nothing",
        f"http://127.0.0.1:{port}",
    )


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        (["migrate"], "database unavailable"),
        (["reset-db", "-f"], "database unavailable"),
        (["replay"], "database unavailable"),
        (["tap", "--exit-at-end"], "kafka unavailable"),
    ],
)
def test_component_down_is_one_line_and_exit_3(
    down: Path, command: list[str], fragment: str
) -> None:
    proc = qryptify(*command, "--config", str(down))
    assert proc.returncode == 3
    line = one_line(proc)
    assert line.startswith(f"qryptify {command[0]}: {fragment}")
    assert "s3cret-pw" not in proc.stderr


def test_simulator_down_is_one_line_and_exit_3(down: Path) -> None:
    port = closed_port()
    proc = qryptify("check", "--against-sim", f"http://127.0.0.1:{port}", "--config", str(down))
    assert proc.returncode == 3
    assert "unavailable" in one_line(proc)


def test_pair_not_configured_is_exit_2(down: Path) -> None:
    proc = qryptify("tap", "--pair", "SOLUSDT/1m", "--config", str(down))
    assert proc.returncode == 2
    assert "not a configured pair (pairs: BTCUSDT/1m)" in one_line(proc)


def test_topic_missing_is_no_data_yet_exit_4(
    tmp_path: Path, kafka_cfg: KafkaConfig, pg_admin_dsn: str
) -> None:
    config = write_config(tmp_path, kafka_cfg.bootstrap_servers, pg_admin_dsn, "http://x.test")
    proc = qryptify("tap", "--exit-at-end", "--config", str(config))
    assert proc.returncode == 4
    assert "no data yet: topic" in one_line(proc)
