"""``qryptify migrate``: apply sql/ migrations (idempotent)."""

from __future__ import annotations

import argparse

from qryptify import db
from qryptify.config import Config
from qryptify.redaction import redact_message


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("migrate", help="create or update the database schema (idempotent)")
    parser.add_argument("--dsn", default=None, help="target database (default: db.dsn)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    dsn = args.dsn or cfg.db.dsn.get_secret_value()
    with db.connect(dsn) as conn:
        applied = db.migrate(conn)
        version = db.timescale_version(conn)
    where = redact_message(dsn, dsn)
    print(f"{where}: {'applied ' + ', '.join(applied) if applied else 'schema already current'}")
    print(f"timescaledb {version}" if version else "plain PostgreSQL (timescaledb not installed)")
    return 0
