"""Invariant 7: DSN passwords and SASL credentials never appear in any output.

Real processes (the ``qryptify`` commands and the three services) run with DEBUG logging
against the real PostgreSQL and Kafka, in working and in failing setups (wrong port, wrong
password, SASL against a broker that rejects it, bad config). Everything they write to
stdout and stderr is searched for each secret in its raw, percent-encoded and
``+``-encoded forms.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import psycopg
import pytest
import yaml
from psycopg import sql

from qryptify.config import KafkaConfig
from tests.integration.conftest import unique

SERVICES = ("backfiller", "producer", "sink")
#: Seconds a service keeps running after its first output: enough to connect, fail and log.
SERVICE_RUN_S = 4.0
START_WAIT_S = 60.0
STOP_WAIT_S = 90.0
#: Where the configs point the exchange: nothing listens there.
CLOSED_PORT = 9
#: (DSN password, SASL password): distinctive, then with characters URLs must escape.
SECRET_SETS = [
    ("pw-Secret-7731", "sasl-Secret-9917"),
    ("pw/Secret@7731:%x", "sasl/Secret@9917 %y"),
]


@dataclass(frozen=True, slots=True)
class Secrets:
    db_password: str
    sasl_password: str
    role: str
    dsn: str  # a working DSN for ``role`` with the password percent-encoded
    kafka: dict[str, Any]  # a working PLAINTEXT kafka section

    def forms(self) -> set[str]:
        found: set[str] = set()
        for secret in (self.db_password, self.sasl_password):
            found |= {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
        return found

    def with_port(self, port: int) -> str:
        parts = urlsplit(self.dsn)
        return parts._replace(netloc=parts.netloc.rsplit(":", 1)[0] + f":{port}").geturl()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(params=SECRET_SETS, ids=["plain", "url-special"])
def secrets(
    request: pytest.FixtureRequest, pg_admin_dsn: str, kafka_cfg: KafkaConfig
) -> Iterator[Secrets]:
    db_password, sasl_password = request.param
    role = unique("role").replace("-", "_")
    name = unique("secrets").replace("-", "_")
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(db_password)
            )
        )
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(role)
            )
        )
    admin_parts = urlsplit(pg_admin_dsn)
    host = f"{admin_parts.hostname}:{admin_parts.port or 5432}"
    dsn = f"postgresql://{role}:{quote(db_password, safe='')}@{host}/{name}"
    with psycopg.connect(dsn) as conn:  # the role really logs in with the secret
        conn.execute("SELECT 1")
    yield Secrets(db_password, sasl_password, role, dsn, kafka_cfg.model_dump(mode="json"))
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def write_config(path: Path, dsn: str, kafka: Mapping[str, Any], **sections: Any) -> Path:
    doc: dict[str, Any] = {
        "pairs": ["BTCUSDT/1m"],
        "db": {"dsn": dsn},
        "kafka": dict(kafka),
        "sink": {"group_id": unique("sink")},
        "backfill": {"start_date": "2024-01-01", "exit_when_done": True},
        "metrics": {"port": free_port()},
        "log": {"level": "DEBUG", "format": "human"},
        # No exchange here: a closed local port fails fast and offline.
        "rest": {"endpoint": f"http://127.0.0.1:{CLOSED_PORT}"},
        "ws": {"endpoint": f"ws://127.0.0.1:{CLOSED_PORT}/market/stream"},
        "archive": {"endpoint": f"http://127.0.0.1:{CLOSED_PORT}", "enabled": False},
    }
    doc.update(sections)
    path.write_text(yaml.safe_dump(doc))
    return path


def sasl_kafka(base: Mapping[str, Any], password: str) -> dict[str, Any]:
    """SASL/PLAIN against the test broker's PLAINTEXT listener: the handshake is rejected."""
    return dict(base) | {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_username": "qryptify",
        "sasl_password": password,
    }


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRYPTIFY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(
    config: Path | None, *args: str, env: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """One ``qryptify`` command; returns its exit code and ALL it wrote (stdout + stderr)."""
    argv = [sys.executable, "-m", "qryptify"]
    if config is not None:
        argv += ["--config", str(config)]
    proc = subprocess.run(
        [*argv, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(env),
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


class Service:
    """A service process whose combined stdout/stderr is read by a thread as it comes."""

    def __init__(self, name: str, config: Path, env: Mapping[str, str] | None) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env(env),
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self, terminate: bool = True) -> str:
        if terminate and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.lines.append(f"[{self.name} still running {STOP_WAIT_S}s after SIGTERM: killed]")
        self.reader.join(timeout=STOP_WAIT_S)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return "".join(self.lines)


def run_services(
    scenarios: Mapping[str, tuple[Path, Mapping[str, str] | None]],
    run_s: float | None = SERVICE_RUN_S,
) -> dict[str, tuple[int, str]]:
    """Start the three services for every scenario at once; once each has written something
    (or exited), let them work ``run_s`` seconds and SIGTERM them (``None``: wait for them to
    exit by themselves). Returns exit codes and ALL output."""
    running = [
        (f"{name} [{scenario}]", Service(name, config, env))
        for scenario, (config, env) in scenarios.items()
        for name in SERVICES
    ]
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline and any(
        not s.lines and s.proc.poll() is None for _, s in running
    ):
        time.sleep(0.1)
    if run_s is not None:
        time.sleep(run_s)
    outputs = {label: service.stop(terminate=run_s is not None) for label, service in running}
    return {label: (service.proc.returncode, outputs[label]) for label, service in running}


def assert_no_secret(where: str, text: str, secrets: Secrets) -> None:
    for form in sorted(secrets.forms()):
        at = text.find(form)
        assert at < 0, f"{where} leaked {form!r}: …{text[max(0, at - 200) : at + 200]}…"


Scenario = tuple[Path, dict[str, str] | None]


def scenarios(tmp_path: Path, secrets: Secrets) -> dict[str, Scenario]:
    """Configs holding the secrets: working, and failing in the ways that log errors."""
    parts = urlsplit(secrets.dsn)
    rejected_password = parts._replace(  # the server expects another password for postgres
        netloc=f"postgres:{quote(secrets.db_password, safe='')}@{parts.netloc.split('@')[1]}"
    ).geturl()
    sasl = sasl_kafka(secrets.kafka, secrets.sasl_password)
    dead_kafka = sasl | {"bootstrap_servers": f"127.0.0.1:{free_port()}"}
    env = {
        "QRYPTIFY_DB__DSN": secrets.with_port(free_port()),
        "QRYPTIFY_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "QRYPTIFY_KAFKA__SASL_MECHANISM": "PLAIN",
        "QRYPTIFY_KAFKA__SASL_USERNAME": "qryptify",
        "QRYPTIFY_KAFKA__SASL_PASSWORD": secrets.sasl_password,
    }
    dummy_dsn = "postgresql://nobody@127.0.0.1:1/nothing"
    return {
        "working": (write_config(tmp_path / "ok.yaml", secrets.dsn, secrets.kafka), None),
        "db-wrong-port": (
            write_config(tmp_path / "port.yaml", secrets.with_port(free_port()), secrets.kafka),
            None,
        ),
        "db-wrong-password": (
            write_config(tmp_path / "auth.yaml", rejected_password, secrets.kafka),
            None,
        ),
        "sasl-rejected": (write_config(tmp_path / "sasl.yaml", secrets.dsn, sasl), None),
        "sasl-unreachable": (
            write_config(tmp_path / "sasl-down.yaml", secrets.with_port(free_port()), dead_kafka),
            None,
        ),
        "env": (write_config(tmp_path / "env.yaml", dummy_dsn, secrets.kafka), env),
    }


def test_commands_with_a_working_setup(tmp_path: Path, secrets: Secrets) -> None:
    config, _ = scenarios(tmp_path, secrets)["working"]
    for args in (("migrate",), ("status",), ("status", "--json"), ("reset-db", "-f")):
        code, out = run_cli(config, *args)
        assert_no_secret(" ".join(args), out, secrets)
        assert "Traceback" not in out, out
        assert code in (0, 3), out  # status: 3 = unhealthy (no candles yet), still a report
        assert "***" in out, out  # the redacted DSN is shown


def test_commands_with_failing_setups(tmp_path: Path, secrets: Secrets) -> None:
    every = scenarios(tmp_path, secrets)
    config, _ = every["db-wrong-port"]
    code, out = run_cli(config, "migrate")
    assert code == 3 and "database unavailable" in out, out  # the failure reached the output
    assert_no_secret("migrate [db-wrong-port]", out, secrets)
    code, out = run_cli(config, "reset-db", "-f")
    assert code == 3 and "database unavailable" in out, out
    assert_no_secret("reset-db [db-wrong-port]", out, secrets)

    config, _ = every["db-wrong-password"]
    code, out = run_cli(config, "migrate")
    assert code == 3 and "password authentication failed" in out, out
    assert_no_secret("migrate [db-wrong-password]", out, secrets)

    for name, (config, env) in every.items():
        if name == "working":
            continue
        code, out = run_cli(config, "status", "--timeout", "3", env=env)
        assert code == 3 and "UNREACHABLE" in out, out  # DB or Kafka down, reported as a row
        assert_no_secret(f"status [{name}]", out, secrets)


def test_services(tmp_path: Path, secrets: Secrets) -> None:
    every = scenarios(tmp_path, secrets)
    assert run_cli(every["working"][0], "migrate")[0] == 0
    chosen = ("working", "db-wrong-port", "sasl-rejected", "env")
    outputs = run_services({name: every[name] for name in chosen})
    for label, (_code, out) in outputs.items():
        assert out.strip(), f"{label} wrote nothing at DEBUG level"
        assert_no_secret(label, out, secrets)


@pytest.mark.parametrize(
    "case",
    ["bad-port", "keyword-dsn", "sasl-without-mechanism", "misspelt-key", "bad-type"],
)
def test_config_errors(tmp_path: Path, secrets: Secrets, case: str) -> None:
    parts = urlsplit(secrets.dsn)
    encoded = quote(secrets.db_password, safe="")
    kafka: dict[str, Any] = dict(secrets.kafka)
    dsn = secrets.dsn
    if case == "bad-port":
        dsn = f"postgresql://{secrets.role}:{encoded}@{parts.hostname}:notaport/x"
    elif case == "keyword-dsn":  # libpq's key=value form: not a URL, refused by validation
        dsn = f"host={parts.hostname} user={secrets.role} password={secrets.db_password} dbname=x"
    elif case == "sasl-without-mechanism":
        kafka |= {"security_protocol": "SASL_SSL", "sasl_password": secrets.sasl_password}
    elif case == "misspelt-key":
        kafka |= {"sasl_passwd": secrets.sasl_password}
    elif case == "bad-type":
        kafka |= {"sasl_password": [secrets.sasl_password]}
    config = write_config(tmp_path / f"{case}.yaml", dsn, kafka)
    code, out = run_cli(config, "status")
    assert code == 2 and "config" in out, out
    assert_no_secret(f"status [{case}]", out, secrets)
    for label, (code, out) in run_services({case: (config, None)}, run_s=None).items():
        assert code == 2 and "config" in out, out  # refused at start, before any connection
        assert_no_secret(label, out, secrets)


def test_redaction_check_can_fail(secrets: Secrets) -> None:
    """The search itself works: a raw or encoded secret in a text is caught."""
    for text in (
        f"dsn={secrets.dsn}",
        f"pw {secrets.db_password}",
        f"sasl {quote(secrets.sasl_password, safe='')}",
    ):
        with pytest.raises(AssertionError, match="leaked"):
            assert_no_secret("probe", text, secrets)
