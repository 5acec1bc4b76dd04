"""The stack's settings: profiles, ports, the DSN, its directories and its Kafka nodes, resolved
from the profile, the project's config file and environment overrides.

All pure but ``settings_from``, which reads the config file a command names, so the unit tests
check every resolution rule without a file (tests/unit/test_stack_config.py).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import yaml

#: default: the real pipeline; demo: ``make demo`` beside it (own stack dir, ports from
#: config.demo.yaml, own database and topics); test: the test stack.
PROFILES = ("default", "demo", "test")


KAFKA_VERSION = "4.1.1"


LOG4J_VERSION = "2.24.3"


DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


DEFAULT_DSN = "postgresql://postgres:postgres@localhost:5432/qryptify"


TEST_KAFKA_PORT = 19092


TEST_PG_PORT = 15432


TEST_DB_USER = "postgres"


TEST_DB_PASSWORD = "postgres"  # noqa: S105 - the throwaway test cluster's documented password


TEST_DB_NAME = "postgres"


# Unix socket paths are limited to ~108 bytes (sun_path); keep a margin.
MAX_SOCKET_PATH = 100


REPO = Path(__file__).resolve().parents[1]


class StackConfigError(ValueError):
    """A configuration value the stack cannot use; the message names the key and the value."""


@dataclass(frozen=True)
class Dsn:
    user: str
    password: str
    host: str
    port: int
    dbname: str

    def url(self, *, host: str | None = None, port: int | None = None) -> str:
        """The DSN as a postgresql:// URL (contains the password: never log it)."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{host or self.host}:{port or self.port}/{quote(self.dbname, safe='')}"
        )

    def redacted(self) -> str:
        return f"postgresql://{self.user}:***@{self.host}:{self.port}/{self.dbname}"


def parse_dsn(dsn: str) -> Dsn:
    """Parse a ``postgresql://user:password@host:port/db`` URL or a ``key=value`` conninfo."""
    text = dsn.strip()
    if text.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(text)
        try:
            port = parts.port or 5432
        except ValueError as exc:
            raise StackConfigError(f"db.dsn: bad port in {_redact_url(text)!r}") from exc
        return Dsn(
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            host=parts.hostname or "localhost",
            port=port,
            dbname=unquote(parts.path.lstrip("/")) or unquote(parts.username or "postgres"),
        )
    values: dict[str, str] = {}
    for item in shlex.split(text):
        key, sep, value = item.partition("=")
        if not sep:
            raise StackConfigError(f"db.dsn: cannot parse {item!r} (expected key=value or a URL)")
        values[key.strip()] = value
    try:
        port = int(values.get("port", "5432"))
    except ValueError as exc:
        raise StackConfigError(f"db.dsn: bad port {values.get('port')!r}") from exc
    user = values.get("user", "postgres")
    return Dsn(
        user=user,
        password=values.get("password", ""),
        host=values.get("host", "localhost"),
        port=port,
        dbname=values.get("dbname", user),
    )


def _redact_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def parse_bootstrap(servers: str) -> tuple[str, int]:
    """First ``host:port`` of a bootstrap list; the stack runs the broker on that port."""
    first = servers.split(",")[0].strip()
    host, sep, port_text = first.rpartition(":")
    if not sep or not host:
        raise StackConfigError(f"kafka.bootstrap_servers: expected host:port, got {servers!r}")
    try:
        port = int(port_text)
    except ValueError as exc:
        raise StackConfigError(f"kafka.bootstrap_servers: bad port in {servers!r}") from exc
    return host.strip("[]"), port


def _env_port(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        port = int(raw)
    except ValueError as exc:
        raise StackConfigError(f"{name}: not a port number: {raw!r}") from exc
    if not 0 < port < 65536:
        raise StackConfigError(f"{name}: port out of range: {raw!r}")
    return port


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node of the stack: a broker and a controller (voter) in one JVM."""

    node_id: int
    name: str  # its supervisord program
    port: int
    controller_port: int
    properties: Path
    data: Path


#: Cluster sizes the stack runs: one node, or three (replication factor 3, min ISR 2).
BROKER_COUNTS = (1, 3)


#: With three nodes the controller ports start this far above the first broker port
#: (9092-9094 brokers, 9192-9194 controllers).
CONTROLLER_OFFSET = 100


@dataclass(frozen=True)
class StackSettings:
    profile: str
    repo: Path
    stack_dir: Path
    config_path: Path | None
    kafka_port: int
    controller_port: int
    pg_port: int
    dsn: Dsn
    cache_dir: Path
    kafka_version: str = KAFKA_VERSION
    log4j_version: str = LOG4J_VERSION
    #: 1: one combined broker+controller node; 3: a three-node KRaft cluster (each node a
    #: broker and a voter) on consecutive ports from ``kafka_port`` / ``controller_port``.
    brokers: int = 1

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.kafka_nodes)

    @property
    def kafka_nodes(self) -> list[KafkaNode]:
        """The KRaft nodes. One node keeps the single-node names and paths (program "kafka",
        ``kafka-data``); three are programs kafka-1..3 with their own directories."""
        if self.brokers == 1:
            return [
                KafkaNode(
                    1,
                    "kafka",
                    self.kafka_port,
                    self.controller_port,
                    self.stack_dir / "kafka" / "server.properties",
                    self.stack_dir / "kafka-data",
                )
            ]
        return [
            KafkaNode(
                i + 1,
                f"kafka-{i + 1}",
                self.kafka_port + i,
                self.controller_port + i,
                self.stack_dir / f"kafka-{i + 1}" / "server.properties",
                self.stack_dir / f"kafka-data-{i + 1}",
            )
            for i in range(self.brokers)
        ]

    @property
    def ports(self) -> list[tuple[str, int]]:
        """Every port the stack listens on, with the component that does."""
        nodes = self.kafka_nodes
        return [
            *((node.name, node.port) for node in nodes),
            *((f"{node.name} controller", node.controller_port) for node in nodes),
            ("postgres", self.pg_port),
        ]

    @property
    def effective_dsn(self) -> Dsn:
        """The DSN clients use: the configured one, on the port the stack actually runs."""
        return Dsn(self.dsn.user, self.dsn.password, self.dsn.host, self.pg_port, self.dsn.dbname)

    @property
    def logs_dir(self) -> Path:
        return self.stack_dir / "logs"

    @property
    def kafka_home(self) -> Path:
        return self.cache_dir / f"kafka-{self.kafka_version}"

    @property
    def kafka_libs(self) -> Path:
        return self.kafka_home / "libs"

    @property
    def log4j_config(self) -> Path:
        return self.kafka_home / "config" / "log4j2.properties"

    @property
    def supervisord_conf(self) -> Path:
        return self.stack_dir / "supervisord.conf"

    @property
    def supervisord_pidfile(self) -> Path:
        return self.stack_dir / "supervisord.pid"

    @property
    def supervisor_socket(self) -> Path:
        return socket_path(self.stack_dir, "supervisor.sock", "sv")

    def log_file(self, program: str) -> Path:
        return self.logs_dir / f"{program}.log"


def default_cache_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "/root")) / ".cache")
    return Path(base) / "qryptify"


def default_stack_dir(repo: Path, profile: str, env: Mapping[str, str]) -> Path:
    override = env.get("QRYPTIFY_STACK_DIR")
    if override:
        # The demo never shares the real pipeline's directory, even when it is overridden.
        base = Path(override).expanduser().resolve()
        return base.with_name(f"{base.name}-demo") if profile == "demo" else base
    return repo / {"default": ".stack", "demo": ".stack-demo"}.get(profile, ".stack-test")


def resolve_settings(
    *,
    profile: str,
    repo: Path,
    config: Mapping[str, Any] | None,
    config_path: Path | None,
    env: Mapping[str, str],
) -> StackSettings:
    """Combine profile, the config's ``db.dsn`` / ``kafka.bootstrap_servers`` and env overrides.

    Precedence (highest first): QRYPTIFY_KAFKA_PORT / QRYPTIFY_KAFKA_CONTROLLER_PORT /
    QRYPTIFY_PG_PORT; for the default profile QRYPTIFY_KAFKA__BOOTSTRAP_SERVERS /
    QRYPTIFY_DB__DSN (the project's config env overrides); the config file; the defaults.
    The test profile ignores the config file: fixed ports 19092/19093/15432.
    """
    if profile not in PROFILES:
        raise StackConfigError(f"--profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    if profile == "test":
        kafka_port = TEST_KAFKA_PORT
        dsn = Dsn(TEST_DB_USER, TEST_DB_PASSWORD, "127.0.0.1", TEST_PG_PORT, TEST_DB_NAME)
    else:
        bootstrap = env.get("QRYPTIFY_KAFKA__BOOTSTRAP_SERVERS") or _config_str(
            config, ("kafka", "bootstrap_servers"), DEFAULT_BOOTSTRAP
        )
        _, kafka_port = parse_bootstrap(bootstrap)
        dsn = parse_dsn(
            env.get("QRYPTIFY_DB__DSN") or _config_str(config, ("db", "dsn"), DEFAULT_DSN)
        )
    brokers = _brokers(env.get("QRYPTIFY_KAFKA_BROKERS"))
    kafka_port = _env_port(env, "QRYPTIFY_KAFKA_PORT") or kafka_port
    controller_port = _env_port(env, "QRYPTIFY_KAFKA_CONTROLLER_PORT") or (
        kafka_port + 1 if brokers == 1 else kafka_port + CONTROLLER_OFFSET
    )
    pg_port = _env_port(env, "QRYPTIFY_PG_PORT") or dsn.port
    ports = [kafka_port + i for i in range(brokers)]
    ports += [controller_port + i for i in range(brokers)] + [pg_port]
    if len(set(ports)) != len(ports):
        raise StackConfigError(
            f"ports must differ: kafka {kafka_port} (+{brokers - 1}), controller "
            f"{controller_port} (+{brokers - 1}), postgres {pg_port}"
        )
    return StackSettings(
        profile=profile,
        repo=repo,
        stack_dir=default_stack_dir(repo, profile, env),
        config_path=config_path,
        kafka_port=kafka_port,
        controller_port=controller_port,
        pg_port=pg_port,
        dsn=dsn,
        cache_dir=default_cache_dir(env),
        kafka_version=env.get("QRYPTIFY_KAFKA_VERSION") or KAFKA_VERSION,
        log4j_version=env.get("QRYPTIFY_LOG4J_VERSION") or LOG4J_VERSION,
        brokers=brokers,
    )


def _brokers(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return 1
    if not raw.strip().isdigit() or int(raw) not in BROKER_COUNTS:
        raise StackConfigError(f"BROKERS / QRYPTIFY_KAFKA_BROKERS: expected 1 or 3, got {raw!r}")
    return int(raw)


def _config_str(config: Mapping[str, Any] | None, path: tuple[str, str], default: str) -> str:
    if config is None:
        return default
    section = config.get(path[0])
    if section is None:
        return default
    if not isinstance(section, Mapping):
        raise StackConfigError(f"{path[0]}: expected a mapping, got {section!r}")
    value = section.get(path[1])
    if value is None:
        return default
    if not isinstance(value, str) or not value.strip():
        shown = "***" if path == ("db", "dsn") else repr(value)
        raise StackConfigError(f"{'.'.join(path)}: expected a non-empty string, got {shown}")
    return value


def env_exports(settings: StackSettings) -> list[tuple[str, str]]:
    """What ``python -m stack env`` prints for a profile."""
    dsn_url = settings.effective_dsn.url(host="127.0.0.1")
    if settings.profile == "test":
        return [
            ("QRYPTIFY_TEST_KAFKA_BOOTSTRAP", settings.bootstrap),
            ("QRYPTIFY_TEST_PG_DSN", dsn_url),
        ]
    return [
        ("QRYPTIFY_KAFKA__BOOTSTRAP_SERVERS", settings.bootstrap),
        ("QRYPTIFY_DB__DSN", dsn_url),
    ]


def socket_path(stack_dir: Path, name: str, tag: str) -> Path:
    """``stack_dir/name`` unless that is too long for a unix socket; then a hashed /tmp path."""
    candidate = stack_dir / name
    if len(str(candidate)) <= MAX_SOCKET_PATH:
        return candidate
    return Path("/tmp") / f"qryptify-{tag}-{stack_hash(stack_dir)}-{name}"  # noqa: S108


def stack_hash(stack_dir: Path) -> str:
    return hashlib.sha256(str(stack_dir).encode()).hexdigest()[:12]


def load_yaml(path: Path) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise StackConfigError(f"--config: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise StackConfigError(f"--config: {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise StackConfigError(f"--config: {path} must hold a mapping at the top level")
    return data


def settings_from(args: argparse.Namespace) -> StackSettings:
    env: Mapping[str, str] = os.environ
    explicit = getattr(args, "config", None)
    config_path: Path | None = None
    if explicit:
        config_path = Path(explicit).expanduser().resolve()
        if not config_path.exists():
            raise StackConfigError(f"--config: {explicit} does not exist")
    elif env.get("QRYPTIFY_CONFIG"):
        config_path = Path(env["QRYPTIFY_CONFIG"]).expanduser().resolve()
    elif (REPO / "config.yaml").exists():
        config_path = REPO / "config.yaml"
    config = None
    if config_path is not None and config_path.exists():
        config = load_yaml(config_path)
    brokers = getattr(args, "brokers", None)
    if brokers:
        env = {**env, "QRYPTIFY_KAFKA_BROKERS": str(brokers)}
    return resolve_settings(
        profile=args.profile, repo=REPO, config=config, config_path=config_path, env=env
    )
