"""Least privilege: the native stack never alters an existing role (no password reset, no
SUPERUSER), creates a missing one without rights beyond its own database, and ``qryptify tap``
refuses a pipeline service's consumer group (a tap committing there would skip records the
sink has not written)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg

from qryptify.config import Config
from stack.postgres import provision
from stack.settings import Dsn
from tests.integration.conftest import PrivatePostgres
from tests.integration.sink_helpers import write_config
from tests.support.processes import run_module


def _attrs(conn: psycopg.Connection[tuple[object, ...]], role: str) -> tuple[object, ...]:
    row = conn.execute(
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolpassword"
        " FROM pg_authid WHERE rolname = %s",
        (role,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_an_existing_restricted_role_is_never_altered(private_pg: PrivatePostgres) -> None:
    with psycopg.connect(private_pg.admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE app WITH LOGIN NOSUPERUSER PASSWORD 'operator-set'")
        before = _attrs(conn, "app")
        provision(conn, Dsn("app", "from-config", "127.0.0.1", private_pg.port, "appdb"))
        after = _attrs(conn, "app")
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'appdb'"
        ).fetchone()
    assert after == before  # not SUPERUSER, password not reset
    assert after[0] is False
    assert owner == ("app",)


def test_a_missing_role_gets_login_and_its_own_database_only(private_pg: PrivatePostgres) -> None:
    with psycopg.connect(private_pg.admin_dsn, autocommit=True) as conn:
        provision(conn, Dsn("fresh", "pw", "127.0.0.1", private_pg.port, "freshdb"))
        superuser, createdb, createrole, login, password = _attrs(conn, "fresh")
        owned = conn.execute(
            "SELECT datname FROM pg_database WHERE pg_get_userbyid(datdba) = 'fresh'"
        ).fetchall()
    assert (superuser, createdb, createrole, login) == (False, False, False, True)
    assert isinstance(password, str) and password.startswith("SCRAM-SHA-256$")
    assert owned == [("freshdb",)]


def tap(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_module("qryptify", "--config", str(config), "tap", *args)


def test_tap_refuses_the_sinks_and_replays_groups(app_config: Config, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", app_config)
    for group in (app_config.sink.group_id, "qryptify-sink", "qryptify-replay-0123456789ab"):
        result = tap(config, "--group", group, "--from-beginning")
        assert result.returncode == 2, (group, result.stdout, result.stderr)
        assert "--group" in result.stderr and "group of its own" in result.stderr
