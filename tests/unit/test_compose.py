"""docker-compose.yml and Dockerfile, checked statically (no Docker engine on the dev machines)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("backfiller", "producer", "sink")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def env_of(service: dict[str, Any], host: dict[str, str] | None = None) -> dict[str, str]:
    """The service's environment as compose resolves it (``${NAME:-default}`` from ``host``)."""
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    values = host or {}

    def resolve(text: str) -> str:
        return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: values.get(m.group(1), m.group(2)), text)

    return {str(k): resolve(str(v)) for k, v in env.items()}


def host_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).split(":")[-2]) for p in service.get("ports", [])}


def test_published_ports_are_bound_to_localhost_by_default(services: dict[str, Any]) -> None:
    published = [str(p) for svc in services.values() for p in svc.get("ports", [])]
    assert published
    assert all(p.startswith("${QRYPTIFY_BIND:-127.0.0.1}:") for p in published)


def test_all_services_present(services: dict[str, Any]) -> None:
    assert set(services) >= {"kafka", "timescaledb", "migrate", *APP_SERVICES}


def test_kafka_kraft(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert 9092 in host_ports(kafka)
    env = env_of(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "localhost:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert len(env["CLUSTER_ID"]) == 22
    assert any(v.startswith("kafka-data:") for v in kafka["volumes"])
    assert env["KAFKA_LOG_DIRS"] in {v.split(":")[1] for v in kafka["volumes"]}
    test = " ".join(kafka["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in test


def test_timescaledb(services: dict[str, Any]) -> None:
    db = services["timescaledb"]
    image = db["image"]
    assert image.startswith("timescale/timescaledb:") and "latest" not in image  # pinned
    assert 5432 in host_ports(db)
    env = env_of(db)
    assert env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")  # from .env, no default
    assert env["POSTGRES_DB"] == "qryptify"
    assert any(v.startswith("pgdata:") for v in db["volumes"])
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])


def test_migrate_is_one_shot(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate["command"][:4] == ["python", "-m", "qryptify", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["timescaledb"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services(services: dict[str, Any], name: str) -> None:
    svc = services[name]
    assert svc["build"] == "."
    assert svc["command"][:3] == ["python", "-m", f"services.{name}"]
    env = env_of(svc)
    assert env["QRYPTIFY_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["QRYPTIFY_DB__DSN"].startswith("postgresql://postgres:${POSTGRES_PASSWORD:?")
    assert env["QRYPTIFY_DB__DSN"].endswith("@timescaledb:5432/qryptify")
    assert any(str(v).endswith(":/app/config.yaml:ro") for v in svc["volumes"])
    # the healthcheck asks the service's own /healthz on its metrics port
    port = 9400 + APP_SERVICES.index(name)
    assert env["QRYPTIFY_METRICS__PORT"] == "9400"
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(svc["healthcheck"]["test"])
    deps = svc["depends_on"]
    assert deps["kafka"]["condition"] == "service_healthy"
    assert deps["timescaledb"]["condition"] == "service_healthy"
    assert deps["migrate"]["condition"] == "service_completed_successfully"


def test_named_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert set(compose["volumes"]) >= {"kafka-data", "pgdata", "archive-cache"}
    backfiller = services["backfiller"]
    assert "archive-cache:/var/cache/qryptify" in backfiller["volumes"]
    cache = env_of(backfiller)["QRYPTIFY_ARCHIVE__CACHE_DIR"]
    assert cache.startswith("/var/cache/qryptify/")


def test_env_example_names_every_variable_compose_requires() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    example = (ROOT / ".env.example").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert required == {"POSTGRES_PASSWORD"}
    assert all(f"\n{name}=" in "\n" + example for name in required)


def test_dockerfile() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [line for line in lines if line.startswith("FROM ")]
    # the native core is compiled in a build stage; the image itself is the slim Python one
    assert stages == ["FROM rust:1-slim-bookworm AS native", "FROM python:3.11-slim"]
    assert "COPY native ./native" in lines and "COPY --from=native /wheels /wheels" in lines
    lines = lines[lines.index("FROM python:3.11-slim") :]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert any(line.startswith("RUN pip install .") for line in lines)
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    assert {"qryptify", "services"} <= copied  # schemas and sql are package data of qryptify
    # everything the image runs is copied before the USER switch
    assert lines.index(f"USER {users[-1]}") > max(
        i for i, line in enumerate(lines) if line.startswith(("COPY ", "RUN "))
    )


def test_three_broker_profile_is_one_kraft_quorum(services: dict[str, Any]) -> None:
    """``make up BROKERS=3`` with Docker: the profile's nodes 2 and 3 and the `kafka` service
    (node 1, with the Makefile's settings) form one quorum of three voters, RF 3, min ISR 2."""
    host = {
        "QRYPTIFY_COMPOSE_VOTERS": "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093",
        "QRYPTIFY_COMPOSE_RF": "3",
        "QRYPTIFY_COMPOSE_MIN_ISR": "2",
        "QRYPTIFY_COMPOSE_BOOTSTRAP": "kafka:9092,kafka-2:9092,kafka-3:9092",
    }
    nodes = [services["kafka"], services["kafka-2"], services["kafka-3"]]
    envs = [env_of(node, host) for node in nodes]
    assert [e["KAFKA_NODE_ID"] for e in envs] == ["1", "2", "3"]
    assert {e["KAFKA_CONTROLLER_QUORUM_VOTERS"] for e in envs} == {host["QRYPTIFY_COMPOSE_VOTERS"]}
    assert {e["CLUSTER_ID"] for e in envs} == {envs[0]["CLUSTER_ID"]}
    for env in envs:
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
    assert services["kafka-2"]["profiles"] == services["kafka-3"]["profiles"] == ["three-brokers"]
    assert "profiles" not in services["kafka"]
    assert host_ports(services["kafka-2"]) == {9093} and host_ports(services["kafka-3"]) == {9094}
    app = env_of(services["sink"], host)
    assert app["QRYPTIFY_KAFKA__BOOTSTRAP_SERVERS"] == host["QRYPTIFY_COMPOSE_BOOTSTRAP"]
    single = env_of(services["kafka"])  # without the Makefile's settings: one node as before
    assert single["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert single["KAFKA_MIN_INSYNC_REPLICAS"] == "1"
