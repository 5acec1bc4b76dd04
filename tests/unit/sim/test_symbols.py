"""Symbol lists: the built-in default and the YAML loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.symbols import (
    DEFAULT_SYMBOLS,
    generated_symbols,
    load_symbols,
    parse_time_ms,
    symbols_to_yaml,
)


def test_default_list_has_a_delisted_and_a_quiet_symbol() -> None:
    names = [s.symbol for s in DEFAULT_SYMBOLS]
    assert {"BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"} <= set(names)
    delisted = [s for s in DEFAULT_SYMBOLS if s.delist_ms is not None]
    assert len(delisted) == 1 and delisted[0].status in ("SETTLING", "CLOSE")
    btc = DEFAULT_SYMBOLS[names.index("BTCUSDT")]
    assert btc.onboard_ms == 1569398400000  # the real onboardDate


def test_parse_time_ms() -> None:
    assert parse_time_ms("2024-01-01") == 1_704_067_200_000
    assert parse_time_ms("2024-01-01T00:01:00Z") == 1_704_067_260_000
    assert parse_time_ms("1704067200000") == 1_704_067_200_000
    assert parse_time_ms(5) == 5
    with pytest.raises(ValueError, match="ISO"):
        parse_time_ms("yesterday")


def test_yaml_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "symbols.yaml"
    path.write_text(symbols_to_yaml(DEFAULT_SYMBOLS))
    assert load_symbols(path) == DEFAULT_SYMBOLS
    many = generated_symbols(3)
    path.write_text(symbols_to_yaml(many))
    assert [s.symbol for s in load_symbols(path)] == ["SIM000USDT", "SIM001USDT", "SIM002USDT"]


def test_yaml_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "symbols.yaml"
    path.write_text("symbols:\n  - symbol: BTCUSDT\n    colour: red\n")
    with pytest.raises(ValueError, match="colour"):
        load_symbols(path)
    path.write_text("symbols: []\n")
    with pytest.raises(ValueError, match="non-empty"):
        load_symbols(path)
    path.write_text("symbols:\n  - symbol: btcusdt\n")
    with pytest.raises(ValueError, match="symbol"):
        load_symbols(path)
