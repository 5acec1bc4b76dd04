"""The pure parts of stack/: settings, DSN parsing, generated Kafka/supervisord/PostgreSQL files."""

from __future__ import annotations

import configparser
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from stack.kafka import (
    READY_TOPIC,
    kafka_java_command,
    kafka_pom,
    kafka_server_properties,
    new_cluster_id,
)
from stack.postgres import PgLayout, postgres_args, postgres_run_script
from stack.settings import (
    Dsn,
    StackConfigError,
    StackSettings,
    env_exports,
    parse_bootstrap,
    parse_dsn,
    resolve_settings,
    socket_path,
)
from stack.supervisor import APP_PROGRAMS, infra_programs, parse_services, supervisord_conf

REPO = Path("/srv/qryptify")
HOME_ENV = {"HOME": "/home/dev"}


def settings_for(
    profile: str = "default",
    config: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> StackSettings:
    return resolve_settings(
        profile=profile,
        repo=REPO,
        config=config,
        config_path=REPO / "config.yaml",
        env={**HOME_ENV, **(env or {})},
    )


def pg_layout(settings: StackSettings) -> PgLayout:
    return PgLayout(
        bin_dir=Path("/usr/lib/postgresql/15/bin"),
        data_dir=settings.stack_dir / "pg-data",
        socket_dir=settings.stack_dir / "pg-run",
        run_script=settings.stack_dir / "pg-run" / "postgres.sh",
    )


def parsed_conf(settings: StackSettings, services: list[str] | None = None) -> Any:
    programs = list(infra_programs(settings, "/usr/bin/java", pg_layout(settings)).values())
    for name in services or []:
        programs.append(
            APP_PROGRAMS[name](settings, "/srv/qryptify/.venv/bin/python", REPO / "c.yaml", {})
        )
    parser = configparser.RawConfigParser()
    parser.read_string(supervisord_conf(settings, programs))
    return parser


# -- DSN ---------------------------------------------------------------------------------------


def test_parse_dsn_url_with_escaped_password() -> None:
    dsn = parse_dsn("postgresql://app:p%40ss%3Aw@db.example:6543/klines")
    assert dsn == Dsn("app", "p@ss:w", "db.example", 6543, "klines")
    assert dsn.redacted() == "postgresql://app:***@db.example:6543/klines"
    assert "p@ss" not in dsn.redacted()
    assert parse_dsn(dsn.url()) == dsn


def test_parse_dsn_defaults_and_conninfo() -> None:
    assert parse_dsn("postgresql://postgres:postgres@localhost/qryptify").port == 5432
    kv = parse_dsn("host=127.0.0.1 port=15432 user=u password='a b' dbname=d")
    assert kv == Dsn("u", "a b", "127.0.0.1", 15432, "d")


def test_parse_dsn_rejects_garbage() -> None:
    with pytest.raises(StackConfigError, match=r"db\.dsn"):
        parse_dsn("not a dsn")
    with pytest.raises(StackConfigError, match="bad port") as err:
        parse_dsn("postgresql://u:secret@h:notaport/d")
    assert "secret" not in str(err.value)


def test_parse_bootstrap() -> None:
    assert parse_bootstrap("127.0.0.1:9092,other:9093") == ("127.0.0.1", 9092)
    assert parse_bootstrap("[::1]:19092") == ("::1", 19092)
    with pytest.raises(StackConfigError, match=r"kafka\.bootstrap_servers"):
        parse_bootstrap("localhost")


# -- settings ----------------------------------------------------------------------------------


def test_default_profile_reads_the_config() -> None:
    s = settings_for(
        config={
            "db": {"dsn": "postgresql://app:pw@localhost:6000/prod"},
            "kafka": {"bootstrap_servers": "127.0.0.1:9500"},
        }
    )
    assert (s.kafka_port, s.controller_port, s.pg_port) == (9500, 9501, 6000)
    assert s.stack_dir == REPO / ".stack"
    assert s.effective_dsn == Dsn("app", "pw", "localhost", 6000, "prod")
    assert s.kafka_libs == Path("/home/dev/.cache/qryptify/kafka-4.1.1/libs")


def test_default_profile_defaults() -> None:
    s = settings_for(config={"pairs": ["BTCUSDT/4h"]})
    assert (s.kafka_port, s.controller_port, s.pg_port) == (9092, 9093, 5432)
    assert s.dsn == Dsn("postgres", "postgres", "localhost", 5432, "qryptify")


def test_env_overrides_win() -> None:
    s = settings_for(
        config={"kafka": {"bootstrap_servers": "127.0.0.1:9092"}},
        env={
            "QRYPTIFY_KAFKA_PORT": "29092",
            "QRYPTIFY_KAFKA_CONTROLLER_PORT": "29999",
            "QRYPTIFY_PG_PORT": "25432",
            "QRYPTIFY_STACK_DIR": "/tmp/elsewhere",
            "XDG_CACHE_HOME": "/var/cache/x",
        },
    )
    assert (s.kafka_port, s.controller_port, s.pg_port) == (29092, 29999, 25432)
    assert s.stack_dir == Path("/tmp/elsewhere")
    assert s.cache_dir == Path("/var/cache/x/qryptify")
    assert s.effective_dsn.port == 25432
    project_env = settings_for(env={"QRYPTIFY_DB__DSN": "postgresql://a:b@localhost:7777/z"})
    assert project_env.pg_port == 7777


def test_test_profile_is_fixed() -> None:
    s = settings_for("test", config={"db": {"dsn": "postgresql://x:y@localhost:1/z"}})
    assert (s.kafka_port, s.controller_port, s.pg_port) == (19092, 19093, 15432)
    assert s.stack_dir == REPO / ".stack-test"
    assert env_exports(s) == [
        ("QRYPTIFY_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
        ("QRYPTIFY_TEST_PG_DSN", "postgresql://postgres:postgres@127.0.0.1:15432/postgres"),
    ]


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        (None, {"QRYPTIFY_PG_PORT": "abc"}, "QRYPTIFY_PG_PORT"),
        (None, {"QRYPTIFY_KAFKA_PORT": "70000"}, "out of range"),
        (None, {"QRYPTIFY_KAFKA_PORT": "5432"}, "ports must differ"),
        ({"db": "nope"}, {}, "db: expected a mapping"),
        ({"db": {"dsn": 5}}, {}, r"db\.dsn"),
    ],
)
def test_bad_settings_name_the_key(
    config: Mapping[str, Any] | None, env: dict[str, str], message: str
) -> None:
    with pytest.raises(StackConfigError, match=message):
        settings_for(config=config, env=env)


def test_unknown_profile() -> None:
    with pytest.raises(StackConfigError, match="--profile"):
        settings_for("prod")


# -- generated files ---------------------------------------------------------------------------


def properties(text: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return {k: v for k, v in pairs}


def test_kafka_server_properties_single_node_kraft() -> None:
    props = properties(kafka_server_properties(settings_for()))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"].startswith("PLAINTEXT://127.0.0.1:9092")
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(REPO / ".stack" / "kafka-data")
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["num.partitions"] == "1"
    for key in ("offsets.topic", "transaction.state.log", "share.coordinator.state.topic"):
        assert props[f"{key}.replication.factor"] == "1"
    assert "auto.create.topics.enable" not in props
    assert "controller.quorum.voters" not in props  # dynamic quorum: formatted --standalone
    assert "offsets.topic.num.partitions" not in props


def test_kafka_test_profile_ports() -> None:
    props = properties(kafka_server_properties(settings_for("test")))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["offsets.topic.num.partitions"] == "10"


def test_kafka_java_command() -> None:
    s = settings_for()
    cmd = kafka_java_command(s, "/usr/bin/java", ["kafka.Kafka", "server.properties"])
    assert cmd[0] == "/usr/bin/java"
    assert "-Xmx512m" in cmd
    assert cmd[cmd.index("-cp") + 1] == f"{s.kafka_libs}/*"
    assert f"-Dlog4j2.configurationFile={s.log4j_config}" in cmd
    assert s.log4j_config.name == "log4j2.properties"
    assert cmd[-2:] == ["kafka.Kafka", "server.properties"]


def test_kafka_pom_names_the_release_only_jars() -> None:
    pom = kafka_pom("4.1.1", "2.24.3")
    for artifact in ("kafka_2.13", "log4j-api", "log4j-core", "log4j-slf4j-impl"):
        assert f"<artifactId>{artifact}</artifactId>" in pom
    assert "<kafka.version>4.1.1</kafka.version>" in pom
    assert "<log4j.version>2.24.3</log4j.version>" in pom
    assert "<packaging>pom</packaging>" in pom


def test_supervisord_conf_infra() -> None:
    s = settings_for()
    conf = parsed_conf(s)
    assert conf.get("unix_http_server", "file") == str(REPO / ".stack" / "supervisor.sock")
    assert conf.get("supervisorctl", "serverurl") == f"unix://{REPO}/.stack/supervisor.sock"
    assert conf.get("supervisord", "pidfile") == str(s.supervisord_pidfile)
    kafka = dict(conf.items("program:kafka"))
    assert "kafka.Kafka" in kafka["command"] and "-Xmx512m" in kafka["command"]
    assert kafka["stdout_logfile"] == str(REPO / ".stack" / "logs" / "kafka.log")
    assert kafka["autorestart"] == "true"
    assert kafka["stopsignal"] == "TERM"
    assert "user" not in kafka
    pg = dict(conf.items("program:postgres"))
    assert pg["user"] == "postgres"
    assert pg["stopsignal"] == "INT"  # fast shutdown
    assert shlex.split(pg["command"]) == ["/bin/sh", str(REPO / ".stack/pg-run/postgres.sh")]
    assert pg["autostart"] == "true"


def test_supervisord_conf_services() -> None:
    conf = parsed_conf(settings_for(), ["backfiller", "producer", "sink"])
    for name in ("backfiller", "producer", "sink"):
        section = dict(conf.items(f"program:{name}"))
        assert shlex.split(section["command"]) == [
            "/srv/qryptify/.venv/bin/python",
            "-m",
            f"services.{name}",
            "--config",
            "/srv/qryptify/c.yaml",
        ]
        assert section["autorestart"] == "true"
        assert section["autostart"] == "false"  # `up` starts it once Kafka/PG answer
        assert int(section["startretries"]) > 1
        assert section["stopsignal"] == "TERM"
        assert section["stopwaitsecs"] == "30"
        assert section["stdout_logfile"] == f"/srv/qryptify/.stack/logs/{name}.log"
        assert 'QRYPTIFY_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9092"' in section["environment"]


def test_sim_args_from_env_and_percent_escaping() -> None:
    s = settings_for()
    spec = APP_PROGRAMS["sim"](
        s, "/py", REPO / "c.yaml", {"QRYPTIFY_SIM_ARGS": "--port 8765 --speed 100%"}
    )
    assert spec.command == ("/py", "-m", "sim", "--port", "8765", "--speed", "100%")
    text = supervisord_conf(s, [spec])
    assert "100%%" in text  # supervisord expands %(x)s; a literal % is doubled


def test_program_set_is_extensible() -> None:
    assert set(APP_PROGRAMS) >= {"backfiller", "producer", "sink", "sim"}
    assert parse_services("sink, producer,sink") == ["sink", "producer"]
    assert parse_services(None) == []
    with pytest.raises(StackConfigError, match="unknown nope"):
        parse_services("sink,nope")


def test_socket_path_falls_back_to_tmp_when_too_long() -> None:
    short = Path("/work/main/.stack")
    assert socket_path(short, "supervisor.sock", "sv") == short / "supervisor.sock"
    long_dir = Path("/work/" + "x" * 120)
    fallback = socket_path(long_dir, "supervisor.sock", "sv")
    assert str(fallback).startswith("/tmp/qryptify-sv-")
    assert len(str(fallback)) < 100
    assert fallback == socket_path(long_dir, "supervisor.sock", "sv")  # stable


def test_postgres_run_script_and_args() -> None:
    s = settings_for("test")
    pg = pg_layout(s)
    args = postgres_args(s, pg)
    assert args[:7] == [
        "/usr/lib/postgresql/15/bin/postgres",
        "-D",
        str(pg.data_dir),
        "-p",
        "15432",
        "-k",
        str(pg.socket_dir),
    ]
    assert "listen_addresses=127.0.0.1" in args
    assert "synchronous_commit=off" not in args  # a commit must survive a kill -9
    script = postgres_run_script(s, pg)
    assert script.startswith("#!/bin/sh\n")
    assert "postmaster.pid" in script
    assert f"exec {shlex.join(args)}" in script
    assert "fsync=off" not in postgres_args(settings_for(), pg_layout(settings_for()))


def test_new_cluster_id() -> None:
    values = iter([b"\xfb" + bytes(15), bytes(16), b"\x01" * 16])
    cid = new_cluster_id(lambda: next(values))
    assert cid == "AQEBAQEBAQEBAQEBAQEBAQ"  # skipped the one starting with '-' and the zero id
    fresh = new_cluster_id()
    assert len(fresh) == 22 and not fresh.startswith("-")


def test_ready_topic_name() -> None:
    assert READY_TOPIC == "__qryptify_ready"


def test_three_brokers_are_one_static_quorum_on_consecutive_ports() -> None:
    s = settings_for(env={"QRYPTIFY_KAFKA_BROKERS": "3"})
    assert s.bootstrap == "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
    nodes = s.kafka_nodes
    assert [(n.name, n.port, n.controller_port) for n in nodes] == [
        ("kafka-1", 9092, 9192),
        ("kafka-2", 9093, 9193),
        ("kafka-3", 9094, 9194),
    ]
    assert len({n.data for n in nodes}) == 3 and len({n.properties for n in nodes}) == 3
    voters = "1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194"
    for node in nodes:
        props = properties(kafka_server_properties(s, node))
        assert props["node.id"] == str(node.node_id)
        assert props["controller.quorum.voters"] == voters
        assert "controller.quorum.bootstrap.servers" not in props
        assert props["listeners"] == (
            f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}"
        )
        assert props["log.dirs"] == str(node.data)
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        for key in ("offsets.topic", "transaction.state.log", "share.coordinator.state.topic"):
            assert props[f"{key}.replication.factor"] == "3"
    programs = infra_programs(s, "/usr/bin/java", pg_layout(s))
    assert set(programs) == {"kafka-1", "kafka-2", "kafka-3", "postgres"}
    assert str(nodes[1].properties) in programs["kafka-2"].command


def test_broker_count_is_one_or_three_and_ports_must_not_collide() -> None:
    with pytest.raises(StackConfigError, match="expected 1 or 3"):
        settings_for(env={"QRYPTIFY_KAFKA_BROKERS": "2"})
    with pytest.raises(StackConfigError, match="ports must differ"):
        settings_for(env={"QRYPTIFY_KAFKA_BROKERS": "3", "QRYPTIFY_PG_PORT": "9094"})
    assert settings_for().kafka_nodes[0].name == "kafka"  # one node keeps its names


def test_topics_get_three_replicas_and_min_isr_two_on_three_brokers() -> None:
    from qryptify.config import KafkaConfig
    from qryptify.kafka import replication, topic_specs

    assert replication(1, 1) == (1, None)
    assert replication(1, 3) == (3, 2)
    assert replication(5, 3) == (3, 2)  # never more copies than brokers
    specs = topic_specs(KafkaConfig(), brokers=3)
    assert {t.replication_factor for t in specs} == {3}
    assert all((t.config or {})["min.insync.replicas"] == "2" for t in specs)
    single = topic_specs(KafkaConfig(), brokers=1)
    assert {t.replication_factor for t in single} == {1}
    assert all("min.insync.replicas" not in (t.config or {}) for t in single)


def test_demo_profile_has_its_own_stack_dir(tmp_path: Path) -> None:
    from stack.settings import default_stack_dir

    assert default_stack_dir(tmp_path, "demo", {}) == tmp_path / ".stack-demo"
    assert default_stack_dir(tmp_path, "default", {}) == tmp_path / ".stack"
    over = {"QRYPTIFY_STACK_DIR": str(tmp_path / "st")}
    assert default_stack_dir(tmp_path, "demo", over) == tmp_path / "st-demo"
    assert default_stack_dir(tmp_path, "default", over) == tmp_path / "st"


def test_demo_config_never_shares_the_real_pipelines_endpoints() -> None:
    from qryptify.config import load_config

    repo = Path(__file__).resolve().parents[2]
    real = load_config(repo / "config.yaml", environ={})
    demo = load_config(repo / "config.demo.yaml", environ={})
    assert demo.kafka.bootstrap_servers != real.kafka.bootstrap_servers
    assert demo.db.dsn.get_secret_value() != real.db.dsn.get_secret_value()
    assert {demo.kafka.topic, demo.kafka.offsets_topic, demo.kafka.dlq_topic}.isdisjoint(
        {real.kafka.topic, real.kafka.offsets_topic, real.kafka.dlq_topic}
    )
    assert demo.sink.group_id != real.sink.group_id
    assert demo.metrics.port != real.metrics.port


def test_ports_name_every_listener_of_the_stack() -> None:
    one = settings_for("test")
    assert one.ports == [("kafka", 19092), ("kafka controller", 19093), ("postgres", 15432)]
    three = settings_for("default", env={"QRYPTIFY_KAFKA_BROKERS": "3"})
    assert three.ports == [
        ("kafka-1", 9092),
        ("kafka-2", 9093),
        ("kafka-3", 9094),
        ("kafka-1 controller", 9192),
        ("kafka-2 controller", 9193),
        ("kafka-3 controller", 9194),
        ("postgres", 5432),
    ]
