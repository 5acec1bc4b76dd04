"""Invariant 7 for every DSN form the CLI accepts (``--dsn``): a password in URL userinfo, in
the URL query (``?password=``) and in libpq keyword/value conninfo never reaches the output
of ``migrate``, ``status``, ``replay`` or ``reset-db``, working or failing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import yaml
from psycopg import sql

from qryptify.config import Config
from tests.integration.conftest import unique
from tests.integration.sink_helpers import ROOT, TIMEOUT_FACTOR, write_config

SECRET = "Zq-Secret-6612"


@pytest.fixture
def role_db(pg_admin_dsn: str) -> Iterator[tuple[str, str, int]]:
    role = unique("role").replace("-", "_")
    name = unique("dsnforms").replace("-", "_")
    port = int(pg_admin_dsn.rsplit(":", 1)[1].split("/")[0])
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(SECRET)
            )
        )
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(*map(sql.Identifier, (name, role)))
        )
    yield role, name, port
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def forms(role: str, name: str, port: int) -> dict[str, str]:
    where = f"host=127.0.0.1 port={port} user={role}"
    return {
        "query": f"postgresql://{role}@127.0.0.1:{port}/{name}?password={quote(SECRET)}"
        + "&sslmode=disable",
        "keyword": f"{where} password={SECRET} dbname={name}",
        "keyword-quoted": f"{where} password='{SECRET}' dbname={name}",
    }


def run(config: Path, *args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "qryptify", "--config", str(config), *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120 * TIMEOUT_FACTOR,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_no_cli_print_path_shows_a_dsn_password(
    app_config: Config, role_db: tuple[str, str, int], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", app_config)
    doc = yaml.safe_load(config.read_text()) | {"pairs": ["BTCUSDT/1m"]}  # status needs pairs
    config.write_text(yaml.safe_dump(doc))
    role, name, port = role_db
    for form, dsn in forms(role, name, port).items():
        broken = dsn.replace(f"port={port}", "port=9").replace(f":{port}/", ":9/")
        for args, shows_target in (
            (("migrate", "--dsn", dsn), True),
            (("status", "--dsn", dsn, "--timeout", "5"), True),
            (("replay", "--dsn", dsn, "--no-progress"), True),
            (("reset-db", "-f", "--dsn", dsn), True),
            (("migrate", "--dsn", broken), False),
            (("status", "--dsn", broken, "--timeout", "3"), False),
        ):
            code, out = run(config, *args)
            where = f"{form}: {args[0]} {'working' if shows_target else 'failing'}"
            assert SECRET not in out and quote(SECRET) not in out, f"{where} leaked: {out}"
            assert "Traceback" not in out, f"{where}: {out}"
            if shows_target:
                assert "***" in out, f"{where} showed no redacted DSN: {out}"
