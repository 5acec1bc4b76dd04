"""Native stack: Apache Kafka (KRaft, from Maven Central jars) + PostgreSQL (Debian packages)
+ the project's services, under a real process supervisor (supervisord).

Run ``.venv/bin/python -m stack --help``. Components: :mod:`stack.settings`, :mod:`stack.kafka`,
:mod:`stack.postgres`, :mod:`stack.supervisor`; the commands in :mod:`stack.cli`.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    from stack.cli import main as cli_main

    return cli_main(argv)
