"""qryptify.futures.status.breaches and ``qryptify status``'s verdict: a gap in a futures kind
breaches --max-gaps like a kline gap (the database and Kafka stand-ins report nothing wrong)."""

from __future__ import annotations

import argparse

import pytest

from qryptify.commands import status
from qryptify.config import Config, build_config
from qryptify.futures.status import Coverage, breaches, render
from qryptify.health_report import EXIT_UNHEALTHY, DatabaseHealth, KafkaHealth

FUNDING_OK = Coverage("funding", "BTCUSDT", 3, "a", "b", 0, 0, "b")
FUNDING_GAP = Coverage("funding", "ETHUSDT", 3, "a", "b", 1, 0, "b")
MARK_OK = Coverage("mark", "BTCUSDT/1h", 10, "a", "b", 0, 3, "b")
INDEX_GAP = Coverage("index", "BTCUSDT/1h", 8, "a", "b", 2, 0, "b")


def test_no_gap_no_breach() -> None:
    assert breaches([FUNDING_OK, MARK_OK], 0) == []


def test_every_kind_is_one_row_of_one_block() -> None:
    lines = render([FUNDING_OK, MARK_OK]).splitlines()
    assert lines[0] == "futures: funding rates, mark / index / premium-index klines"
    assert lines[1].split() == ["kind", "series", "rows", "first", "last", "gaps", "empty",
                                "pointer"]  # fmt: skip
    assert [line.split() for line in lines[2:]] == [
        ["funding", "BTCUSDT", "3", "a", "b", "0", "0", "b"],
        ["mark", "BTCUSDT/1h", "10", "a", "b", "0", "3", "b"],
    ]


def test_each_kind_with_gaps_is_a_gaps_breach_naming_the_series() -> None:
    found = breaches([FUNDING_OK, FUNDING_GAP, MARK_OK, INDEX_GAP], 0)
    assert [(b.check, b.subject) for b in found] == [
        ("gaps", "funding ETHUSDT"),
        ("gaps", "index BTCUSDT/1h"),
    ]
    assert "2 candles missing > --max-gaps 0" in found[1].detail


def test_max_gaps_allows_as_many_as_it_says() -> None:
    assert breaches([FUNDING_GAP, INDEX_GAP], 2) == []
    assert [b.subject for b in breaches([FUNDING_GAP, INDEX_GAP], 1)] == ["index BTCUSDT/1h"]


def _run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    futures: list[Coverage],
) -> tuple[int, str]:
    cfg: Config = build_config(
        {"pairs": ["BTCUSDT/1h"], "futures": {"funding_rates": True, "index_price": True}}
    )
    monkeypatch.setattr(status, "collect_database", lambda *a: (DatabaseHealth("db"), []))
    monkeypatch.setattr(status, "collect_kafka", lambda *a: KafkaHealth("k", "t", "g", "d"))
    monkeypatch.setattr(status, "_futures", lambda *a: futures)
    parser = argparse.ArgumentParser()
    status.register(parser.add_subparsers())
    args = parser.parse_args(["status", "--now", "1720000000000"])
    code = status.run(args, cfg)
    return code, capsys.readouterr().out


def test_status_exit_code_follows_futures_gaps(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(monkeypatch, capsys, [FUNDING_OK, MARK_OK])
    assert code == 0 and "HEALTHY" in out
    code, out = _run(monkeypatch, capsys, [FUNDING_OK, INDEX_GAP])
    assert code == EXIT_UNHEALTHY
    assert "gaps     index BTCUSDT/1h: 2 candles missing > --max-gaps 0" in out
