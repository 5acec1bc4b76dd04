from __future__ import annotations

from pathlib import Path

import pytest

from qryptify.config import build_config, check_config, load_config
from qryptify.errors import ConfigError, ConfigErrors
from qryptify.pairs import Pair

# The original ingestor's config file exactly as its README shows it (byte for byte).
ORIGINAL_CONFIG = Path(__file__).resolve().parents[2] / "fixtures" / "original-config.yaml"
SEED_CONFIG = ORIGINAL_CONFIG.read_text(encoding="utf-8")
JAN_2022_MS = 1_640_995_200_000  # 2022-01-01T00:00:00Z


def test_original_config_loads_unchanged() -> None:
    cfg = load_config(ORIGINAL_CONFIG, environ={})
    assert cfg.pairs == (Pair("BTCUSDT", "4h"), Pair("ETHUSDT", "1h"), Pair("BNBUSDT", "15m"))
    assert cfg.rest.endpoint == "https://fapi.binance.com"
    assert cfg.rest.klines_limit == 1500
    assert cfg.db.dsn.get_secret_value() == "postgresql://postgres:postgres@localhost:5432/qryptify"
    assert cfg.backfill.start_ms == JAN_2022_MS
    # The legacy /stream URL connects but sends nothing since 2026-04-23: rewritten, warned.
    assert cfg.ws.endpoint == "wss://fstream.binance.com/market/stream"
    assert len(cfg.warnings) == 1 and "rewritten" in cfg.warnings[0]


@pytest.mark.parametrize(
    ("raw", "expected_ms"),
    [
        ('"2022-01-01T00:00:00Z"', JAN_2022_MS),
        ("2022-01-01T00:00:00Z", JAN_2022_MS),  # unquoted: YAML's own timestamp
        ('"2022-01-01"', JAN_2022_MS),
        ("2022-01-01", JAN_2022_MS),  # unquoted: YAML's own date
        # 13:37 at +02:00 is 11:37 UTC: the time and the offset both count.
        ('"2022-01-01T13:37:00+02:00"', JAN_2022_MS + (11 * 60 + 37) * 60_000),
        ('"2022-01-01T13:37:00.250Z"', JAN_2022_MS + (13 * 60 + 37) * 60_000 + 250),
        ('"2021-12-31T23:00:00-01:00"', JAN_2022_MS),
    ],
)
def test_start_date_takes_a_date_or_a_timestamp_and_keeps_the_time(
    tmp_path: Path, raw: str, expected_ms: int
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(SEED_CONFIG.replace('"2022-01-01T00:00:00Z"', raw))
    assert load_config(path, environ={}).backfill.start_ms == expected_ms


def test_start_date_from_the_environment_keeps_the_time(tmp_path: Path) -> None:
    env = {"QRYPTIFY_BACKFILL__START_DATE": "2022-01-01T13:37:00+02:00"}
    cfg = load_config(ORIGINAL_CONFIG, environ=env)
    assert cfg.backfill.start_ms == JAN_2022_MS + (11 * 60 + 37) * 60_000


@pytest.mark.parametrize("raw", ['"2022-01-01T13:37:00"', "2022-01-01 13:37:00", '"soon"', "5"])
def test_start_date_without_a_zone_or_not_a_time_is_refused(tmp_path: Path, raw: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(SEED_CONFIG.replace('"2022-01-01T00:00:00Z"', raw))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == "backfill.start_date"
    assert "ISO-8601 timestamp with Z or an offset" in str(info.value)


def test_environment_overrides_every_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(SEED_CONFIG)
    env = {
        "QRYPTIFY_DB__DSN": "postgresql://u:p@db:5433/other",
        "QRYPTIFY_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092",
        "QRYPTIFY_SINK__BATCH_SIZE": "777",
        "QRYPTIFY_PAIRS": "SOLUSDT/1m,XRPUSDT/1d",
    }
    cfg = load_config(path, environ=env)
    assert cfg.db.dsn.get_secret_value() == "postgresql://u:p@db:5433/other"
    assert cfg.kafka.bootstrap_servers == "kafka:9092"
    assert cfg.sink.batch_size == 777
    assert cfg.pairs == (Pair("SOLUSDT", "1m"), Pair("XRPUSDT", "1d"))


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("pairs: [BTCUSDT/1w]\n")
    assert load_config(None, environ={"QRYPTIFY_CONFIG": str(path)}).pairs == (
        Pair("BTCUSDT", "1w"),
    )


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"colour": "red"}, "colour", "unknown key; allowed: pairs, rest"),
        ({"rest": {"endpiont": "x"}}, "rest.endpiont", "allowed: endpoint, klines_limit"),
        ({"pairs": ["BTCUSDT"]}, "pairs[0]", "expected SYMBOL/interval"),
        ({"pairs": ["BTCUSDT/7m"]}, "pairs[0]", "allowed: 1m 3m 5m 15m 30m 1h"),
        ({"pairs": ["btcusdt/1m"]}, "pairs[0]", "symbols are upper case"),
        ({"pairs": ["BTC$USDT/1m"]}, "pairs[0]", "not a valid symbol"),
        ({"pairs": ["BTCUSDT/1m", "BTCUSDT-1m"]}, "pairs[1]", "duplicate of pairs[0]"),
        ({"db": {"dsn": "mysql://root:hunter2@h/db"}}, "db.dsn", "postgresql://"),
        ({"db": {"dsn": "postgresql://u:hunter2@h:port/db"}}, "db.dsn", "invalid port"),
        ({"backfill": {"start_date": "last tuesday"}}, "backfill.start_date", "YYYY-MM-DD or"),
        ({"rest": {"klines_limit": 5000}}, "rest.klines_limit", "1500"),
        ({"kafka": {"security_protocol": "SASL_SSL"}}, "kafka", "needs sasl_mechanism"),
    ],
)
def test_bad_config_names_key_value_and_allowed(
    data: dict[str, object], key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(data)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.key == key
    assert fragment in message
    assert "hunter2" not in message


def test_every_binance_interval_is_accepted() -> None:
    intervals = [
        "1m",
        "3m",
        "5m",
        "15m",
        "30m",
        "1h",
        "2h",
        "4h",
        "6h",
        "8h",
        "12h",
        "1d",
        "3d",
        "1w",
        "1M",
    ]
    cfg = build_config({"pairs": [f"BTCUSDT/{i}" for i in intervals]})
    assert [p.interval for p in cfg.pairs] == intervals


def test_secrets_never_in_repr() -> None:
    cfg = build_config(
        {
            "db": {"dsn": "postgresql://app:s3cr3t-db@h:5432/q"},
            "kafka": {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "svc",
                "sasl_password": "s3cr3t-sasl",
            },
        }
    )
    text = repr(cfg) + str(cfg) + repr(cfg.db) + str(cfg.kafka)
    assert "s3cr3t-db" not in text and "s3cr3t-sasl" not in text
    assert cfg.db.redacted_dsn() == "postgresql://app:***@h:5432/q"


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("pairs: [BTCUSDT/1m\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})


def test_every_error_at_once_with_its_source(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "pairs: [BTCUSDT/1m, btc/5m]\n"
        "rest: {endpiont: x, klines_limit: 5000}\n"
        'backfill: {start_date: "soon"}\n'
    )
    env = {"QRYPTIFY_DB__DSN": "mysql://u:hunter2@h/db"}
    with pytest.raises(ConfigErrors) as info:
        load_config(path, environ=env)
    found = {e.key: e for e in info.value.errors}
    assert set(found) == {
        "pairs[1]",
        "rest.klines_limit",
        "rest.endpiont",
        "db.dsn",
        "backfill.start_date",
    }
    assert found["db.dsn"].source == "environment QRYPTIFY_DB__DSN"
    assert found["rest.klines_limit"].source == f"file {path}"
    assert "less than or equal to 1500" in found["rest.klines_limit"].reason
    text = str(info.value)
    assert len(text.splitlines()) == 5
    assert "hunter2" not in text


def test_config_check_names_an_empty_pair_list_as_the_default() -> None:
    problems = check_config(build_config({}), {})
    assert [(p.key, p.source) for p in problems] == [("pairs", "default")]
    assert check_config(build_config({"pairs": ["BTCUSDT/1m"]}), {}) == []
