"""Secrets never reach error messages or log lines (invariant 7). No I/O."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from qryptify import logs
from qryptify.config import build_config
from qryptify.errors import ConfigError
from qryptify.redaction import redact_dsn, redact_message, redact_text, redact_value

PW = "pw/Secret@7731:%x"
PW_URL = "pw%2FSecret%407731%3A%25x"
SASL = "sasl-Secret-9917"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://u:pw-Secret-7731@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:pw@7731@h/db", "postgresql://u:***@h/db"),
        (f"postgresql://u:{PW_URL}@h/db", "postgresql://u:***@h/db"),
        ("host=h password=pw-Secret-7731 dbname=x", "host=h password=*** dbname=x"),
        ("host=h PASSWORD = 'a b\\' c' dbname=x", "host=h PASSWORD = *** dbname=x"),
        # Not secrets: stream names and query strings after the authority stay as they are.
        (
            "wss://fstream.binance.com:443/market/stream?streams=btcusdt@kline_1m",
            "wss://fstream.binance.com:443/market/stream?streams=btcusdt@kline_1m",
        ),
        ("http://127.0.0.1:9400/metrics", "http://127.0.0.1:9400/metrics"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_redact_text(text: str, shown: str) -> None:
    assert redact_text(text) == shown


def test_redact_value_walks_mappings_and_lists() -> None:
    value = {
        "sasl_password": SASL,
        "nested": [{"token": "t0k3n"}, "postgresql://u:pw-Secret-7731@h/db"],
        "port": 5432,
    }
    assert redact_value(value) == {
        "sasl_password": "<redacted>",
        "nested": [{"token": "<redacted>"}, "postgresql://u:***@h/db"],
        "port": 5432,
    }


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("kafka.sasl_password", SASL, "Input should be a valid string"),
        ("kafka.sasl_passwd", SASL, "unknown key; allowed: sasl_password"),
        ("kafka.sasl_pw", SASL, "unknown key; allowed: sasl_password"),
        ("kafka", {"security_protocol": "SASL_SSL", "sasl_password": SASL}, "needs sasl_mechanism"),
        ("db.dsn", f"host=h password={SASL}", "must be a postgresql:// URL"),
        ("db.dsn", f"postgresql://u:{SASL}@h:port/db", f"bad port in postgresql://u:{SASL}@h"),
    ],
)
def test_config_error_messages_hold_no_secret(key: str, value: object, reason: str) -> None:
    message = str(ConfigError(key, value, reason))
    assert SASL not in message
    assert key in message


def test_config_error_still_names_ordinary_values() -> None:
    assert str(ConfigError("kafka.partitions", 0, "must be >= 1")) == (
        "config kafka.partitions=0: must be >= 1"
    )


@pytest.mark.parametrize(
    "data",
    [
        {"db": {"dsn": f"host=h user=u password={SASL} dbname=x"}},
        {"kafka": {"security_protocol": "SASL_SSL", "sasl_password": SASL}},
        {"kafka": {"sasl_passwd": SASL}},
        {"kafka": {"sasl_password": [SASL]}},
        {"db": {"dsn": f"postgresql://u:{SASL}@h:notaport/db"}},
    ],
)
def test_config_loading_errors_hold_no_secret(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(data)
    assert SASL not in str(caught.value)


@pytest.fixture
def registered() -> None:
    cfg = build_config(
        {
            "db": {"dsn": f"postgresql://u:{PW_URL}@h:5432/db"},
            "kafka": {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_password": SASL,
            },
        }
    )
    logs.register_config_secrets(cfg)


@pytest.mark.usefixtures("registered")
@pytest.mark.parametrize("leak", [PW, PW_URL, SASL, "pw/Secret%407731%3A%25x"])
def test_scrub_removes_every_form_of_a_registered_secret(leak: str) -> None:
    text = logs.scrub(f"connecting with {leak} now")
    assert "Secret" not in text
    assert text.startswith("connecting with ") and text.endswith(" now")


@pytest.mark.usefixtures("registered")
@pytest.mark.parametrize("as_json", [True, False])
def test_formatter_scrubs_message_arguments_and_traceback(as_json: bool) -> None:
    formatter = logs.RedactingFormatter(json_lines=as_json, service="t")
    try:
        raise RuntimeError(f"cannot log in as u/{PW}")
    except RuntimeError:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "dsn %s sasl %s", (PW_URL, SASL), sys.exc_info()
        )
    line = formatter.format(record)
    assert "Secret" not in line
    assert "RuntimeError" in line


@pytest.mark.usefixtures("registered")
def test_uncaught_exception_hooks_scrub(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise ValueError(f"bad password {SASL}")
    except ValueError as exc:
        logs._scrubbing_excepthook(ValueError, exc, exc.__traceback__)
        logs._scrubbing_thread_excepthook(
            threading.ExceptHookArgs([ValueError, exc, exc.__traceback__, None])
        )
    err = capsys.readouterr().err
    assert "Secret" not in err
    assert err.count("ValueError: bad password ***") == 2


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (
            "postgresql://u@h:5432/db?password=s3cr3t-77&sslmode=require",
            "postgresql://u@h:5432/db?password=***&sslmode=require",
        ),
        (
            "postgresql://u@h/db?sslmode=require&PASSWORD=s3cr3t-77",
            "postgresql://u@h/db?sslmode=require&PASSWORD=***",
        ),
        (
            "host=h port=5432 password=s3cr3t-77 dbname=db",
            "host=h port=5432 password=*** dbname=db",
        ),
        ("host=h password='s3cr3t 77' dbname=db", "host=h password=*** dbname=db"),
        ("postgresql://u:s3cr3t-77@h/db", "postgresql://u:***@h/db"),
    ],
)
def test_redact_dsn_handles_query_and_keyword_forms(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown


def test_redact_message_scrubs_a_password_the_driver_quotes() -> None:
    dsn = "host=h user=u password='a b' dbname=db"
    message = f"connection to {dsn} failed: password 'a b' rejected for u"
    cleaned = redact_message(message, dsn)
    assert "a b" not in cleaned
    dsn = "postgresql://u@h/db?password=p%40ss"
    assert "p@ss" not in redact_message("bad password p@ss for u", dsn)


def test_numeric_looking_secrets_and_ids_from_the_environment_stay_text() -> None:
    from qryptify.config import load_config

    cfg = load_config(
        None,
        {
            "QRYPTIFY_KAFKA__SASL_PASSWORD": "123456",
            "QRYPTIFY_KAFKA__SASL_USERNAME": "42",
            "QRYPTIFY_KAFKA__CLIENT_ID": "007",
            "QRYPTIFY_SINK__GROUP_ID": "12",
            "QRYPTIFY_KAFKA__PARTITIONS": "6",  # a number stays a number
        },
    )
    assert cfg.kafka.sasl_password is not None
    assert cfg.kafka.sasl_password.get_secret_value() == "123456"
    assert (cfg.kafka.sasl_username, cfg.kafka.client_id, cfg.sink.group_id) == ("42", "007", "12")
    assert cfg.kafka.partitions == 6
