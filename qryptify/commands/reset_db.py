"""``qryptify reset-db``: drop the project's tables and re-create them by the migrations.

Only the objects the migrations created are dropped (``db.PROJECT_TABLES``), without
``CASCADE``: a view or foreign key of other code on them makes it stop and name them, with
nothing changed. The list is printed before the question.

The database is a projection of the Kafka topic, so this loses nothing the topic does not
hold: rebuild it with ``qryptify replay``. Asks the operator to type the database name unless
``-f/--force``; refuses when stdin is not a terminal and ``--force`` was not given.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import unquote, urlsplit

import psycopg

from qryptify import db
from qryptify.config import Config
from qryptify.redaction import redact_dsn

PROJECT_TABLES = db.PROJECT_TABLES
_COUNT_CAP = 1_000_000

EXIT_REFUSED = 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "reset-db",
        help="drop and re-create the schema (asks to type the database name; -f skips)",
        description="Drop the tables "
        + ", ".join(PROJECT_TABLES)
        + " and apply the migrations again. Rebuild the data with `qryptify replay`.",
    )
    parser.add_argument("--dsn", default=None, help="target database (default: db.dsn)")
    parser.add_argument(
        "-f", "--force", action="store_true", help="do not ask for confirmation (scripts, CI)"
    )
    parser.set_defaults(run=run)


def database_name(dsn: str) -> str:
    return unquote(urlsplit(dsn).path.strip("/"))


def confirmed(name: str, answer: str) -> bool:
    return answer.strip() == name


def run(args: argparse.Namespace, cfg: Config) -> int:
    dsn: str = args.dsn or cfg.db.dsn.get_secret_value()
    target = redact_dsn(dsn)
    name = database_name(dsn)
    if not args.force and not sys.stdin.isatty():
        print(
            f"qryptify reset-db: refusing to reset {target} without confirmation: stdin is not "
            "a terminal. Run it interactively, or pass -f/--force.",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    with db.connect(dsn, autocommit=True) as conn:
        present = [
            str(r[0])
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename = ANY(%s) ORDER BY tablename",
                (list(PROJECT_TABLES),),
            ).fetchall()
        ]
        print(
            f"reset-db drops only the project's tables in {target}: "
            f"{', '.join(present) or 'none present'}"
            " (their indexes, and the hypertable chunks of candlesticks, go with them);"
            " nothing else, and never with CASCADE."
        )
        if not args.force:
            if "candlesticks" in present:
                row = conn.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM candlesticks LIMIT %s) AS capped",
                    (_COUNT_CAP + 1,),
                ).fetchone()
                rows = 0 if row is None else int(row[0])
                shown = f"more than {_COUNT_CAP}" if rows > _COUNT_CAP else str(rows)
                print(f"candlesticks holds {shown} rows (the Kafka topic keeps them all).")
            try:
                answer = input(f"Type the database name ({name}) to confirm: ")
            except EOFError:
                answer = ""
            if not confirmed(name, answer):
                print("qryptify reset-db: not confirmed; nothing changed.", file=sys.stderr)
                return EXIT_REFUSED
        try:
            with conn.transaction():
                db.drop_project_tables(conn)
        except psycopg.errors.DependentObjectsStillExist as exc:
            detail = " ".join((exc.diag.message_detail or str(exc)).split())
            print(
                f"qryptify reset-db: other objects depend on the project's tables ({detail}); "
                "drop or change them first. Nothing changed.",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        applied = db.migrate(conn)
        version = db.timescale_version(conn)
    print(f"reset {target}: dropped {', '.join(present) or 'no tables'}")
    print(f"re-created the schema: applied {', '.join(applied)}")
    print(f"timescaledb {version}" if version else "plain PostgreSQL (timescaledb not installed)")
    print()
    print("The tables are empty. Rebuild them from the topic (the system of record):")
    print(f"  qryptify replay --dsn '{target}'   (with the real password), or: make replay")
    print(
        f"The sink group '{cfg.sink.group_id}' keeps its committed offsets: a running sink "
        "writes only new records; replay fills in the history."
    )
    return 0
