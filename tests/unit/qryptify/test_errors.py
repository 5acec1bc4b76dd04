"""The one exception tree: every project error lives in qryptify/errors.py, and one classifier
says which are worth retrying unchanged."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from qryptify import errors
from qryptify.pairs import Pair
from tests.support.source import places_outside

ROOT = Path(__file__).resolve().parents[3]
TREE = {
    name
    for name, obj in vars(errors).items()
    if inspect.isclass(obj) and issubclass(obj, errors.IngestorError)
}


def test_no_project_error_is_defined_outside_errors_py() -> None:
    bases = TREE | {"Exception", "RuntimeError", "ValueError"}

    def defines_an_error(node: ast.AST) -> bool:
        return isinstance(node, ast.ClassDef) and any(
            isinstance(b, ast.Name) and b.id in bases for b in node.bases
        )

    assert places_outside("qryptify/errors.py", defines_an_error) == []


@pytest.mark.parametrize(
    "name",
    ["KafkaSetupError", "DeliveryFailed", "OffsetStoreError", "DlqUnavailable", "KafkaFatal"],
)
def test_kafka_errors_form_one_branch(name: str) -> None:
    assert issubclass(getattr(errors, name), errors.KafkaFailure)


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (errors.RateLimited(1.0), True),
        (errors.ExchangeUnavailable("503"), True),
        (errors.DatabaseUnavailable("connection refused"), True),
        (errors.DlqUnavailable("1 undelivered"), True),
        (errors.KafkaFatal("fenced"), False),
        (errors.DeliveryFailed(Pair("BTCUSDT", "1m"), 5, "timed out"), False),
        (errors.IpBanned(0), False),
        (errors.ExchangeRejected(400, -1121, "Invalid symbol."), False),
        (errors.InvalidKline("high < low"), False),
        (errors.KeyMismatch(b"ETHUSDT|1m", "BTCUSDT|1m"), False),
        (errors.ConfigError("db.dsn", "x", "bad"), False),
        (ValueError("x"), False),
    ],
)
def test_one_classifier_decides_what_is_retried(exc: BaseException, retry: bool) -> None:
    assert errors.is_retryable(exc) is retry


def test_delivery_failed_names_the_pair_and_position() -> None:
    assert str(errors.DeliveryFailed(Pair("BTCUSDT", "1m"), 7, "timed out")) == (
        "delivery of BTCUSDT/1m @ 7 failed: timed out"
    )
