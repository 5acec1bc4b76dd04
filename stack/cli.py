"""`python -m stack`: the commands. Each one resolves the settings and drives the components
(``stack.kafka``, ``stack.postgres``, ``stack.supervisor``) in order."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from stack.install import InstallError, ensure_java, file_lock, say, write_if_changed
from stack.kafka import ensure_kafka, prepare_kafka, wait_kafka
from stack.postgres import (
    ALT_PG_ROOT,
    PgLayout,
    check_dsn,
    ensure_postgres,
    pg_layout,
    prepare_postgres,
    setup_postgres,
)
from stack.procs import (
    NotReady,
    StackError,
    check_ports_free,
    kill_processes,
    stack_processes,
)
from stack.settings import (
    PROFILES,
    StackConfigError,
    StackSettings,
    env_exports,
    settings_from,
    stack_hash,
)
from stack.supervisor import (
    APP_PROGRAMS,
    RUNNING_STATES,
    alive_check,
    all_alive,
    app_program_specs,
    apply_changes,
    infra_programs,
    parse_services,
    program_state,
    services_file,
    shutdown_supervisord,
    start_program,
    start_supervisord,
    supervisord_conf,
    supervisord_pid,
    wait_services,
    wanted_services,
)


def install_all(settings: StackSettings) -> tuple[str, Path]:
    """Everything the stack needs on this machine; fast when it is all there."""
    java = ensure_java()
    ensure_kafka(settings)
    pg_bin = ensure_postgres()
    return java, pg_bin


class Timer:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def __str__(self) -> str:
        return f"{time.monotonic() - self.start:.1f}s"


def cmd_install(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    timer = Timer()
    java, pg_bin = install_all(settings)
    say(
        f"installed: java {java}, kafka {settings.kafka_version} in {settings.kafka_libs}, "
        f"postgres {pg_bin} ({timer})"
    )
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    requested = parse_services(args.services)
    total = Timer()
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    settings.stack_dir.chmod(0o755)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(settings.stack_dir / ".lock"):
        timer = Timer()
        java, pg_bin = install_all(settings)
        if time.monotonic() - timer.start > 1:
            say(f"install finished in {timer}")
        pg = pg_layout(settings, pg_bin)
        pid = supervisord_pid(settings)
        if pid is None:
            leftovers = stack_processes(settings, [pg.data_dir])
            if leftovers:
                say(f"stopping {len(leftovers)} processes left by a dead supervisord: {leftovers}")
                kill_processes(leftovers)
            check_ports_free(settings.ports)
        changed = {
            "kafka": prepare_kafka(settings, java),
            "postgres": prepare_postgres(settings, pg),
        }
        services = wanted_services(settings, requested, pid is not None)
        app_specs, missing = app_program_specs(settings, services)
        for name in missing:
            say(f"{name}: not yet implemented (no module for it in this checkout); skipped")
        programs = list(infra_programs(settings, java, pg).values()) + app_specs
        conf = supervisord_conf(settings, programs)
        write_if_changed(settings.supervisord_conf, conf, 0o600)
        write_if_changed(services_file(settings), json.dumps([s.name for s in app_specs]) + "\n")
        if pid is None:
            pid = start_supervisord(settings)
            say(f"supervisord started (pid {pid}, socket {settings.supervisor_socket})")
        else:
            apply_changes(settings, changed)
        errors = wait_infra(settings, pg, args.timeout)
        if errors:
            for name, error in sorted(errors.items()):
                print(
                    f"stack up: {name} FAILED: {error} - see {settings.log_file(name)}",
                    file=sys.stderr,
                )
            return 1
        for spec in app_specs:
            if program_state(settings, spec.name) not in RUNNING_STATES:
                start_program(settings, spec.name)
        if app_specs and not wait_services(settings, app_specs, args.settle, args.timeout):
            return 1
    say(f"stack '{settings.profile}' up in {total}; logs in {settings.logs_dir}")
    return 0


def wait_infra(settings: StackSettings, pg: PgLayout, timeout: float) -> dict[str, str]:
    """Kafka and PostgreSQL ready, side by side (PostgreSQL provisioned on the way); what
    failed, by component (empty: both answer)."""
    ready_from = Timer()
    errors: dict[str, str] = {}

    def run_kafka() -> None:
        try:
            wait_kafka(
                settings.bootstrap,
                settings.kafka_port,
                all_alive(settings, [node.name for node in settings.kafka_nodes]),
                timeout,
            )
            say(f"kafka ready in {ready_from} ({settings.bootstrap})")
        except Exception as exc:
            errors["kafka"] = str(exc)

    def run_postgres() -> None:
        try:
            setup_postgres(
                str(pg.socket_dir),
                settings.pg_port,
                settings.dsn,
                alive_check(settings, "postgres"),
                timeout,
            )
            check_dsn(settings.effective_dsn, 30)
            say(f"postgres ready in {ready_from} ({settings.effective_dsn.redacted()})")
        except Exception as exc:
            errors["postgres"] = str(exc)

    threads = [threading.Thread(target=run_kafka), threading.Thread(target=run_postgres)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def stop_stack(settings: StackSettings) -> list[int]:
    """Stop supervisord and everything under it; returns leftovers that had to be killed."""
    pid = supervisord_pid(settings)
    if pid is not None:
        shutdown_supervisord(settings, pid)
    extra = [settings.stack_dir / "pg-data", ALT_PG_ROOT / stack_hash(settings.stack_dir)]
    leftovers = stack_processes(settings, [p for p in extra if p.exists()])
    if leftovers:
        say(f"stopping {len(leftovers)} leftover processes: {leftovers}")
        stubborn = kill_processes(leftovers)
        if stubborn:
            say(f"had to SIGKILL {stubborn}")
    services_file(settings).unlink(missing_ok=True)
    return leftovers


def cmd_down(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if not settings.stack_dir.exists():
        say(f"stack '{settings.profile}' is not set up ({settings.stack_dir})")
        return 0
    timer = Timer()
    with file_lock(settings.stack_dir / ".lock"):
        was_running = supervisord_pid(settings) is not None
        stop_stack(settings)
        remaining = stack_processes(settings)
    if remaining:
        print(f"stack down: processes still alive: {remaining}", file=sys.stderr)
        return 1
    if was_running:
        say(f"stack '{settings.profile}' down in {timer}; data kept in {settings.stack_dir}")
    else:
        say(f"stack '{settings.profile}' was not running")
    return 0


def cmd_wipe(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings.stack_dir.exists():
        with file_lock(settings.stack_dir / ".lock"):
            stop_stack(settings)
            shutil.rmtree(settings.stack_dir)
    alt = ALT_PG_ROOT / stack_hash(settings.stack_dir)
    shutil.rmtree(alt, ignore_errors=True)
    for stale in Path("/tmp").glob(f"qryptify-*-{stack_hash(settings.stack_dir)}*"):  # noqa: S108
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    say(f"stack '{settings.profile}' wiped ({settings.stack_dir})")
    return 0


def _supervisorctl(settings: StackSettings, *ctl_args: str) -> int:
    if supervisord_pid(settings) is None:
        print(f"stack '{settings.profile}' is not running", file=sys.stderr)
        return 3
    cmd = [
        sys.executable,
        "-m",
        "supervisor.supervisorctl",
        "-c",
        str(settings.supervisord_conf),
        *ctl_args,
    ]
    return subprocess.run(cmd, check=False).returncode


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    code = _supervisorctl(settings, "status")
    # supervisorctl status exits 3 when a program is not running: still a useful listing
    return 0 if code in (0, 3) and supervisord_pid(settings) is not None else code


def cmd_restart(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    code = _supervisorctl(settings, "restart", args.name)
    if code != 0:
        return code
    timer = Timer()
    try:
        node = next((n for n in settings.kafka_nodes if n.name == args.name), None)
        if node is not None:
            wait_kafka(settings.bootstrap, node.port, alive_check(settings, node.name), 180)
            say(f"{node.name} ready in {timer}")
        elif args.name == "postgres":
            check_dsn(settings.effective_dsn, 60)
            say(f"postgres ready in {timer}")
    except NotReady as exc:
        print(
            f"stack restart: {args.name} FAILED: {exc} - see {settings.log_file(args.name)}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.name:
        files = [settings.log_file(args.name)]
        if not files[0].exists():
            print(f"no log {files[0]}", file=sys.stderr)
            return 2
    else:
        files = sorted(settings.logs_dir.glob("*.log"))
        if not files:
            print(f"no logs in {settings.logs_dir}", file=sys.stderr)
            return 2
    tail = ["tail", "-n", str(args.lines), *([] if args.no_follow else ["-F"]), *map(str, files)]
    sys.stdout.flush()
    try:
        return subprocess.run(tail, check=False).returncode
    except KeyboardInterrupt:
        return 0


def cmd_env(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    for key, value in env_exports(settings):
        print(f"export {key}={shlex.quote(value)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stack",
        description="Native Kafka (KRaft) + PostgreSQL + services under supervisord.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--profile", choices=PROFILES, default="default")
        p.add_argument("--config", help="config YAML (db.dsn, kafka.bootstrap_servers)")
        p.add_argument(
            "--brokers",
            default=None,
            help="Kafka nodes: 1 (default) or 3 (also QRYPTIFY_KAFKA_BROKERS)",
        )
        return p

    add("install", "install Java, Maven, the Kafka jars and PostgreSQL if missing")
    up = add("up", "install if needed, start everything, wait until Kafka and PostgreSQL answer")
    up.add_argument(
        "--services", help=f"extra programs, comma separated: {', '.join(APP_PROGRAMS)}"
    )
    up.add_argument("--timeout", type=float, default=180.0, help="readiness timeout, seconds")
    up.add_argument(
        "--settle",
        type=float,
        default=8.0,
        help="seconds each service must stay running before `up` succeeds",
    )
    add("down", "stop everything (data is kept)")
    add("status", "supervisorctl status")
    restart = add("restart", "restart one program")
    restart.add_argument("name")
    logs = add("logs", "tail -F the logs")
    logs.add_argument("name", nargs="?")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("--no-follow", action="store_true")
    add("env", "print shell exports for this profile's endpoints")
    add("wipe", "down, then delete the stack dir and all its data")
    return parser


COMMANDS = {
    "install": cmd_install,
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "restart": cmd_restart,
    "logs": cmd_logs,
    "env": cmd_env,
    "wipe": cmd_wipe,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (StackConfigError, StackError, InstallError) as exc:
        print(f"stack {args.command}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, StackConfigError) else 1
    except subprocess.CalledProcessError as exc:
        print(
            f"stack {args.command}: command failed ({exc.returncode}): {exc.cmd}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        return 130
