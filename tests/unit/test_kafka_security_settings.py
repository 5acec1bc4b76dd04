"""Kafka SSL / SASL_SSL settings pass through to every client (docs/security.md).

``kafka.security_protocol``, ``sasl_*`` and ``ssl_*`` config keys (and their
``QRYPTIFY_KAFKA__*`` environment overrides) become librdkafka's ``security.protocol``,
``sasl.*`` and ``ssl.*`` settings in ``qryptify.kafka.client_settings``, which the producer,
consumer and admin factories all start from. The password stays a ``SecretStr`` until that
moment and never shows in ``repr`` or errors. librdkafka itself accepts the keys (a real
client is constructed; nothing connects).
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from qryptify import kafka
from qryptify.config import KafkaConfig, load_config
from qryptify.errors import ConfigError

SASL_SSL: dict[str, Any] = {
    "bootstrap_servers": "broker-1.example:9093,broker-2.example:9093",
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "qryptify",
    "sasl_password": "s3cret-Sasl-pw",
    "ssl_ca_location": "/etc/kafka/ca.pem",
}
MTLS: dict[str, Any] = {
    "bootstrap_servers": "broker.example:9093",
    "security_protocol": "SSL",
    "ssl_ca_location": "/etc/kafka/ca.pem",
    "ssl_certificate_location": "/etc/kafka/client.pem",
    "ssl_key_location": "/etc/kafka/client.key",
}


def test_sasl_ssl_settings_reach_librdkafka_names() -> None:
    settings = kafka.client_settings(KafkaConfig(**SASL_SSL))
    assert settings == {
        "bootstrap.servers": "broker-1.example:9093,broker-2.example:9093",
        "client.id": "qryptify",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "qryptify",
        "sasl.password": "s3cret-Sasl-pw",
        "ssl.ca.location": "/etc/kafka/ca.pem",
        "logger": kafka.LIBRDKAFKA_LOG,
    }


def test_mutual_tls_settings_reach_librdkafka_names() -> None:
    settings = kafka.client_settings(KafkaConfig(**MTLS))
    assert settings["security.protocol"] == "SSL"
    assert settings["ssl.ca.location"] == "/etc/kafka/ca.pem"
    assert settings["ssl.certificate.location"] == "/etc/kafka/client.pem"
    assert settings["ssl.key.location"] == "/etc/kafka/client.key"
    assert not any(k.startswith("sasl.") for k in settings)


def test_plaintext_sends_no_security_settings() -> None:
    settings = kafka.client_settings(KafkaConfig())
    assert settings["security.protocol"] == "PLAINTEXT"
    assert not any(k.startswith(("sasl.", "ssl.")) for k in settings)


@pytest.mark.parametrize("factory", ["make_producer", "make_consumer"])
def test_every_client_factory_starts_from_the_security_settings(
    factory: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(kafka, "Producer", lambda settings: seen.append(settings))
    monkeypatch.setattr(kafka, "Consumer", lambda settings: seen.append(settings))
    cfg = KafkaConfig(**SASL_SSL)
    if factory == "make_producer":
        kafka.make_producer(cfg)
    else:
        kafka.make_consumer(cfg, "group")
    assert seen and kafka.client_settings(cfg).items() <= seen[0].items()


def test_librdkafka_accepts_the_settings_without_connecting() -> None:
    sasl = kafka.client_settings(KafkaConfig(**{**SASL_SSL, "ssl_ca_location": "probe"}))
    del sasl["bootstrap.servers"]  # no broker to contact: a unit test opens no socket
    Producer({**sasl, "error_cb": lambda _err: None}).flush(0)
    consumer = Consumer({**sasl, "group.id": "security-test", "error_cb": lambda _err: None})
    consumer.close()


def test_environment_overrides_configure_sasl_and_keep_the_password_secret(
    tmp_path: Any,
) -> None:
    env = {
        "QRYPTIFY_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "QRYPTIFY_KAFKA__SASL_MECHANISM": "PLAIN",
        "QRYPTIFY_KAFKA__SASL_USERNAME": "svc",
        "QRYPTIFY_KAFKA__SASL_PASSWORD": "env-Sasl-pw-0042",
        "QRYPTIFY_KAFKA__SSL_CA_LOCATION": "/run/secrets/ca.pem",
    }
    cfg = load_config(None, env)
    settings = kafka.client_settings(cfg.kafka)
    assert settings["security.protocol"] == "SASL_SSL"
    assert settings["sasl.mechanism"] == "PLAIN"
    assert settings["sasl.password"] == "env-Sasl-pw-0042"
    assert settings["ssl.ca.location"] == "/run/secrets/ca.pem"
    assert "env-Sasl-pw-0042" not in repr(cfg) and "env-Sasl-pw-0042" not in str(cfg.kafka)


def test_sasl_without_a_mechanism_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="sasl_mechanism") as caught:
        load_config(None, {"QRYPTIFY_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                           "QRYPTIFY_KAFKA__SASL_PASSWORD": "pw-in-error-9"})  # fmt: skip
    assert "pw-in-error-9" not in str(caught.value)


def test_an_unknown_protocol_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="kafka.security_protocol"):
        load_config(None, {"QRYPTIFY_KAFKA__SECURITY_PROTOCOL": "TLS"})
