"""Pure parts of the native stack: settings, generated files, program specs.

Nothing in this module touches the file system, the network or other processes, so the unit
tests can check every generated file byte for byte (tests/unit/test_stack_config.py).
"""

from __future__ import annotations

import base64
import hashlib
import shlex
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

#: default: the real pipeline; demo: ``make demo`` beside it (own stack dir, ports from
#: config.demo.yaml, own database and topics); test: the test stack.
PROFILES = ("default", "demo", "test")
KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
READY_TOPIC = "__qryptify_ready"
KAFKA_HEAP = "-Xmx512m"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_DSN = "postgresql://postgres:postgres@localhost:5432/qryptify"
TEST_KAFKA_PORT = 19092
TEST_PG_PORT = 15432
TEST_DB_USER = "postgres"
TEST_DB_PASSWORD = "postgres"  # noqa: S105 - the throwaway test cluster's documented password
TEST_DB_NAME = "postgres"
# Unix socket paths are limited to ~108 bytes (sun_path); keep a margin.
MAX_SOCKET_PATH = 100
APP_SERVICES = ("backfiller", "producer", "sink")


class StackConfigError(ValueError):
    """A configuration value the stack cannot use; the message names the key and the value."""


# --------------------------------------------------------------------------------------------
# DSN handling
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


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


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A Kafka cluster id: URL-safe base64 of 16 random bytes, like ``Uuid.randomUuid()``.

    Kafka never hands out ids whose string form starts with ``-`` (they read as options) nor the
    all-zero / metadata-topic ids; retry on those.
    """
    while True:
        raw = random_bytes()
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if not text.startswith("-") and raw not in (bytes(16), bytes(15) + b"\x01"):
            return text


# --------------------------------------------------------------------------------------------
# Generated files
# --------------------------------------------------------------------------------------------


def kafka_pom(kafka_version: str, log4j_version: str) -> str:
    """A packaging-pom project whose runtime dependencies are exactly the broker's classpath.

    log4j-api/-core and the SLF4J 1.x binding are 'releaseOnly' in Kafka's build, so they are
    missing from kafka_2.13's published POM and must be named here.
    """
    deps = [("org.apache.kafka", "kafka_2.13", "${kafka.version}")] + [
        ("org.apache.logging.log4j", art, "${log4j.version}")
        for art in ("log4j-api", "log4j-core", "log4j-slf4j-impl")
    ]
    body = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by `python -m stack install`: the Kafka broker's runtime classpath -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.qryptify</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <properties>
    <kafka.version>{kafka_version}</kafka.version>
    <log4j.version>{log4j_version}</log4j.version>
  </properties>
  <dependencies>
{body}
  </dependencies>
</project>
"""


LOG4J2_PROPERTIES = """\
# generated by `python -m stack install`: Kafka broker and tools log to stdout; supervisord
# writes stdout to <stack dir>/logs/kafka.log
status = warn
name = qryptify-kafka
appender.console.type = Console
appender.console.name = STDOUT
appender.console.target = SYSTEM_OUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = WARN
"""


def kafka_server_properties(settings: StackSettings, node: KafkaNode | None = None) -> str:
    """One KRaft node, broker and controller in one process. A single node has a dynamic
    quorum (formatted --standalone); three nodes are a static quorum of three voters, and
    internal topics get replication factor 3 with min.insync.replicas=2."""
    host = "127.0.0.1"
    node = node or settings.kafka_nodes[0]
    nodes = settings.kafka_nodes
    rf, min_isr = (1, 1) if len(nodes) == 1 else (3, 2)
    if len(nodes) == 1:
        quorum = f"controller.quorum.bootstrap.servers={host}:{node.controller_port}"
    else:
        voters = ",".join(f"{n.node_id}@{host}:{n.controller_port}" for n in nodes)
        quorum = f"controller.quorum.voters={voters}"
    lines = [
        "# generated by `python -m stack up` - do not edit; regenerated at every start",
        "process.roles=broker,controller",
        f"node.id={node.node_id}",
        quorum,
        f"listeners=PLAINTEXT://{host}:{node.port},CONTROLLER://{host}:{node.controller_port}",
        f"advertised.listeners=PLAINTEXT://{host}:{node.port},"
        f"CONTROLLER://{host}:{node.controller_port}",
        "inter.broker.listener.name=PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={node.data}",
        "num.partitions=1",
        f"default.replication.factor={rf}",
        f"min.insync.replicas={min_isr}",
        f"offsets.topic.replication.factor={rf}",
        f"transaction.state.log.replication.factor={rf}",
        f"transaction.state.log.min.isr={min_isr}",
        f"share.coordinator.state.topic.replication.factor={rf}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
        # A lone broker has nobody to wait for: consumer groups form at once.
        "group.initial.rebalance.delay.ms=0",
        # After a kill -9 the broker's old registration blocks the new one until the session
        # times out (default 9 s); a lone combined node can time out faster.
        "broker.heartbeat.interval.ms=1000",
        "broker.session.timeout.ms=4000",
        # The exchange simulator runs an accelerated clock, so record timestamps can be far
        # ahead of the broker's wall clock; Kafka 4 rejects those after 1 h by default.
        "log.message.timestamp.after.max.ms=9223372036854775807",
        # Broker default retention stays; the app creates its topics with retention.ms=-1.
    ]
    if settings.profile == "test":
        # Fewer group-coordinator partitions: a fresh test cluster is ready ~4 s sooner.
        lines.append("offsets.topic.num.partitions=10")
    return "\n".join(lines) + "\n"


def kafka_java_command(settings: StackSettings, java: str, main: Sequence[str]) -> list[str]:
    return [
        java,
        KAFKA_HEAP,
        "-Xms256m",
        "-server",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-XX:MaxInlineLevel=15",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={settings.log4j_config}",
        f"-Dkafka.logs.dir={settings.logs_dir}",
        "-cp",
        f"{settings.kafka_libs}/*",
        *main,
    ]


@dataclass(frozen=True)
class PgLayout:
    """Where PostgreSQL lives; outside the stack dir when the postgres user cannot reach it."""

    bin_dir: Path
    data_dir: Path
    socket_dir: Path
    run_script: Path
    timescaledb: bool = False

    @property
    def postgres(self) -> Path:
        return self.bin_dir / "postgres"

    @property
    def initdb(self) -> Path:
        return self.bin_dir / "initdb"


def postgres_args(settings: StackSettings, pg: PgLayout) -> list[str]:
    args = [
        str(pg.postgres),
        "-D",
        str(pg.data_dir),
        "-p",
        str(settings.pg_port),
        "-k",
        str(pg.socket_dir),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_permissions=0700",
        "-c",
        "max_connections=200",
    ]
    if pg.timescaledb:
        args += [
            "-c",
            "shared_preload_libraries=timescaledb",
            "-c",
            "timescaledb.telemetry_level=off",
        ]
    if settings.profile == "test":
        # Throwaway cluster: skip fsync. A killed postgres loses nothing (the OS keeps the
        # pages); only a machine crash could. synchronous_commit stays on on purpose.
        args += ["-c", "fsync=off", "-c", "full_page_writes=off"]
    return args


def postgres_run_script(settings: StackSettings, pg: PgLayout) -> str:
    """Runs as the postgres user under supervisord: clear a stale pid file, exec postgres."""
    exec_line = " ".join(shlex.quote(a) for a in postgres_args(settings, pg))
    data = shlex.quote(str(pg.data_dir))
    return f"""#!/bin/sh
# generated by `python -m stack up` - do not edit; regenerated at every start
set -eu
pidfile={data}/postmaster.pid
if [ -f "$pidfile" ]; then
  pid=$(head -n 1 "$pidfile" 2>/dev/null || true)
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] \\
     && ! tr '\\000' ' ' < "/proc/$pid/cmdline" | grep -qF -- {data}; then
    # The pid was reused by an unrelated process (typical after a kill -9 or a reboot in a
    # container); postgres itself would refuse to start.
    echo "stack: removing stale $pidfile (pid $pid is not this cluster's postmaster)" >&2
    rm -f "$pidfile"
  fi
fi
exec {exec_line}
"""


# --------------------------------------------------------------------------------------------
# Supervisord programs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgramSpec:
    name: str
    command: tuple[str, ...]
    directory: Path
    log_file: Path
    user: str | None = None
    environment: tuple[tuple[str, str], ...] = ()
    autostart: bool = True
    priority: int = 100
    startsecs: int = 5
    startretries: int = 10
    stopsignal: str = "TERM"
    stopwaitsecs: int = 30
    stopasgroup: bool = True
    killasgroup: bool = True
    infra: bool = False
    # For app programs: the module file that must exist before the program is configured.
    module_file: Path | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())


def infra_programs(settings: StackSettings, java: str, pg: PgLayout) -> dict[str, ProgramSpec]:
    kafka = {
        node.name: ProgramSpec(
            name=node.name,
            command=tuple(
                kafka_java_command(settings, java, ["kafka.Kafka", str(node.properties)])
            ),
            directory=settings.stack_dir,
            log_file=settings.log_file(node.name),
            priority=10,
            startsecs=10,
            startretries=10,
            stopsignal="TERM",
            stopwaitsecs=60,
            infra=True,
            extra=(("exitcodes", "0,143"),),  # 143 = the JVM's exit status after SIGTERM
        )
        for node in settings.kafka_nodes
    }
    postgres = ProgramSpec(
        name="postgres",
        command=("/bin/sh", str(pg.run_script)),
        directory=pg.data_dir.parent,
        log_file=settings.log_file("postgres"),
        user="postgres",
        priority=10,
        startsecs=3,
        startretries=10,
        # SIGINT = PostgreSQL's "fast" shutdown (SIGTERM would wait for clients to leave).
        # Only the postmaster gets it; it stops its children itself.
        stopsignal="INT",
        stopwaitsecs=60,
        stopasgroup=False,
        killasgroup=True,
        infra=True,
    )
    return {**kafka, "postgres": postgres}


def _app_program(
    name: str, settings: StackSettings, python: str, command: Sequence[str], module_file: Path
) -> ProgramSpec:
    effective = settings.effective_dsn
    environment = (
        ("PYTHONUNBUFFERED", "1"),
        ("QRYPTIFY_KAFKA__BOOTSTRAP_SERVERS", settings.bootstrap),
        ("QRYPTIFY_DB__DSN", effective.url()),
    )
    return ProgramSpec(
        name=name,
        command=(python, *command),
        directory=settings.repo,
        log_file=settings.log_file(name),
        environment=environment,
        autostart=False,  # `up` starts them once Kafka and PostgreSQL answer
        priority=50 if name == "sim" else 100,
        startsecs=5,
        startretries=20,  # supervisord backs off 1 s, 2 s, ... between quick failures
        stopsignal="TERM",
        stopwaitsecs=30,
        module_file=module_file,
    )


AppProgramFactory = Callable[[StackSettings, str, Path, Mapping[str, str]], ProgramSpec]


def _service_factory(name: str) -> AppProgramFactory:
    def build(
        settings: StackSettings, python: str, config: Path, env: Mapping[str, str]
    ) -> ProgramSpec:
        return _app_program(
            name,
            settings,
            python,
            ["-m", f"services.{name}", "--config", str(config)],
            settings.repo / "services" / name / "__main__.py",
        )

    return build


def _sim_factory(
    settings: StackSettings, python: str, config: Path, env: Mapping[str, str]
) -> ProgramSpec:
    args = shlex.split(env.get("QRYPTIFY_SIM_ARGS", ""))
    return _app_program(
        "sim", settings, python, ["-m", "sim", *args], settings.repo / "sim" / "__main__.py"
    )


# Extensible: a new program is one more entry here.
APP_PROGRAMS: dict[str, AppProgramFactory] = {
    "backfiller": _service_factory("backfiller"),
    "producer": _service_factory("producer"),
    "sink": _service_factory("sink"),
    "sim": _sim_factory,
}


def parse_services(text: str | None) -> list[str]:
    if not text:
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in APP_PROGRAMS]
    if unknown:
        raise StackConfigError(
            f"--services: unknown {', '.join(unknown)} (known: {', '.join(APP_PROGRAMS)})"
        )
    return list(dict.fromkeys(names))


def _conf_value(value: str) -> str:
    # supervisord expands %(name)s in values; a literal % must be doubled.
    return value.replace("%", "%%")


def _conf_env(environment: Sequence[tuple[str, str]]) -> str:
    parts = []
    for key, value in environment:
        escaped = _conf_value(value).replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'{key}="{escaped}"')
    return ",".join(parts)


def supervisord_conf(settings: StackSettings, programs: Sequence[ProgramSpec]) -> str:
    sock = settings.supervisor_socket
    out = [
        "; generated by `python -m stack up` - do not edit; regenerated at every start",
        "[unix_http_server]",
        f"file={_conf_value(str(sock))}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={_conf_value(str(settings.log_file('supervisord')))}",
        "logfile_maxbytes=10MB",
        "logfile_backups=2",
        f"pidfile={_conf_value(str(settings.supervisord_pidfile))}",
        f"childlogdir={_conf_value(str(settings.logs_dir))}",
        f"identifier=qryptify-{settings.profile}",
        "nodaemon=false",
        "user=root",  # the stack runs as root (postgres runs as user postgres under it)
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_conf_value(str(sock))}",
        "",
    ]
    for spec in programs:
        out += [
            f"[program:{spec.name}]",
            f"command={_conf_value(shlex.join(spec.command))}",
            f"directory={_conf_value(str(spec.directory))}",
        ]
        if spec.user:
            out.append(f"user={spec.user}")
        if spec.environment:
            out.append(f"environment={_conf_env(spec.environment)}")
        out += [
            f"autostart={str(spec.autostart).lower()}",
            "autorestart=true",
            f"priority={spec.priority}",
            f"startsecs={spec.startsecs}",
            f"startretries={spec.startretries}",
            f"stopsignal={spec.stopsignal}",
            f"stopwaitsecs={spec.stopwaitsecs}",
            f"stopasgroup={str(spec.stopasgroup).lower()}",
            f"killasgroup={str(spec.killasgroup).lower()}",
            "redirect_stderr=true",
            f"stdout_logfile={_conf_value(str(spec.log_file))}",
            "stdout_logfile_maxbytes=50MB",
            "stdout_logfile_backups=3",
        ]
        out += [f"{k}={_conf_value(v)}" for k, v in spec.extra]
        out.append("")
    return "\n".join(out)
