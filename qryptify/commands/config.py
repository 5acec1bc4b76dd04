"""``qryptify config check``: validate the whole configuration before anything starts.

Every problem is listed at once, each naming the key, the value, what is allowed and where the
value came from (file, environment or default). Exit 0 when usable, 2 otherwise.
"""

from __future__ import annotations

import argparse
import sys

from qryptify.config import build_config, check_config, read_config
from qryptify.errors import ConfigError, ConfigErrors
from qryptify.service import EXIT_CONFIG


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("config", help="configuration tools: `config check`")
    actions = parser.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="validate the configuration: every error at once, exit 2 if any",
        description="Validate the file (--config / $QRYPTIFY_CONFIG) with the QRYPTIFY_* "
        "environment overrides applied. Exit 0 when usable, 2 otherwise.",
    )
    check.set_defaults(run_without_config=run_check)


def run_check(args: argparse.Namespace) -> int:
    where = args.config or "built-in defaults (no --config, no $QRYPTIFY_CONFIG)"
    try:
        data, sources = read_config(args.config)
        cfg = build_config(data, sources)
    except ConfigErrors as exc:
        return _report(where, list(exc.errors))
    except ConfigError as exc:
        return _report(where, [exc])
    problems = check_config(cfg, sources)
    if problems:
        return _report(where, problems)
    for warning in cfg.warnings:
        print(f"warning: {warning}")
    print(
        f"config OK: {where}: {len(cfg.pairs)} pairs "
        f"({', '.join(str(p) for p in cfg.pairs)}), backfill from "
        f"{cfg.backfill.start_date.isoformat().replace('+00:00', 'Z')}"
    )
    return 0


def _report(where: str, errors: list[ConfigError]) -> int:
    print(f"config check: {where}: {len(errors)} error(s)", file=sys.stderr)
    for error in errors:
        print(f"  {error}", file=sys.stderr)
    return EXIT_CONFIG
