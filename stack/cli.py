"""`python -m stack`: the native Kafka + PostgreSQL (+ services) stack under supervisord."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from stack import install
from stack.config import (
    APP_PROGRAMS,
    PROFILES,
    PgLayout,
    ProgramSpec,
    StackConfigError,
    StackSettings,
    env_exports,
    infra_programs,
    kafka_java_command,
    kafka_server_properties,
    new_cluster_id,
    parse_services,
    postgres_run_script,
    resolve_settings,
    stack_hash,
    supervisord_conf,
)
from stack.install import InstallError, file_lock, say, write_if_changed
from stack.procs import (
    RUNNING_STATES,
    StackError,
    kill_processes,
    port_in_use,
    program_state,
    program_states,
    restart_program,
    shutdown_supervisord,
    stack_processes,
    start_program,
    start_supervisord,
    stop_program,
    supervisord_pid,
    update_programs,
)
from stack.ready import NotReady, check_dsn, setup_postgres, wait_kafka
from stack.startup import StartWatch, last_lines

REPO = Path(__file__).resolve().parents[1]
ALT_PG_ROOT = Path("/var/lib/qryptify")


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# PostgreSQL layout + initdb
# --------------------------------------------------------------------------------------------


def postgres_can_reach(path: Path) -> bool:
    proc = subprocess.run(
        ["test", "-x", str(path)], user="postgres", group="postgres", extra_groups=[], check=False
    )
    return proc.returncode == 0


def pg_layout(settings: StackSettings, bin_dir: Path) -> PgLayout:
    base = settings.stack_dir
    data = base / "pg-data"
    alt = ALT_PG_ROOT / stack_hash(settings.stack_dir)
    if data.is_symlink() or not postgres_can_reach(base):
        # e.g. a clone under /root (mode 0700): the postgres user cannot traverse it. Keep the
        # cluster in a place it can reach; the stack dir gets a symlink for humans.
        base = alt
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)
        if not data.is_symlink():
            if data.exists():
                raise StackError(f"{data} exists but the postgres user cannot reach it")
            data.symlink_to(alt / "pg-data")
        data = alt / "pg-data"
    run = base / "pg-run"
    socket_dir = run
    if len(str(run / f".s.PGSQL.{settings.pg_port}.lock")) > 100:
        socket_dir = Path("/tmp") / f"qryptify-pg-{stack_hash(settings.stack_dir)}"  # noqa: S108
    version_file = data / "PG_VERSION"
    if version_file.exists():
        version = version_file.read_text().strip()
        wanted = install.find_pg_bin(version)
        if wanted is None or wanted.parent.name != version:
            raise StackError(
                f"{data} was created by PostgreSQL {version}, which is not installed "
                f"(found {bin_dir.parent.name}); install postgresql-{version} or wipe the stack"
            )
        bin_dir = wanted
    return PgLayout(
        bin_dir=bin_dir,
        data_dir=data,
        socket_dir=socket_dir,
        run_script=run / "postgres.sh",
        timescaledb=install.has_timescaledb(bin_dir),
    )


def _chown_postgres(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    shutil.chown(path, "postgres", "postgres")
    path.chmod(mode)


def prepare_postgres(settings: StackSettings, pg: PgLayout) -> bool:
    """initdb once; (re)write the run script. True when the script changed."""
    _chown_postgres(pg.run_script.parent, 0o700)
    _chown_postgres(pg.socket_dir, 0o700)
    changed = write_if_changed(pg.run_script, postgres_run_script(settings, pg), 0o755)
    if (pg.data_dir / "PG_VERSION").exists():
        return changed
    if pg.data_dir.exists() and any(pg.data_dir.iterdir()):
        say(f"{pg.data_dir} holds a half-initialised cluster; starting it over")
        shutil.rmtree(pg.data_dir)
    _chown_postgres(pg.data_dir, 0o700)
    started = time.monotonic()
    pwfile = pg.run_script.parent / ".initdb-pw"
    pwfile.write_text(settings.dsn.password + "\n" if settings.dsn.user == "postgres" else "x\n")
    shutil.chown(pwfile, "postgres", "postgres")
    pwfile.chmod(0o600)
    try:
        proc = subprocess.run(
            [
                str(pg.initdb),
                "-D",
                str(pg.data_dir),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            user="postgres",
            group="postgres",
            extra_groups=[],
            cwd=pg.data_dir.parent,
            env={"PATH": "/usr/bin:/bin", "LANG": "C"},
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise StackError(f"initdb failed: {(proc.stdout + proc.stderr).strip()[-800:]}")
    say(f"postgres: initdb {pg.data_dir} in {time.monotonic() - started:.1f}s")
    return changed


# --------------------------------------------------------------------------------------------
# Kafka format
# --------------------------------------------------------------------------------------------


def prepare_kafka(settings: StackSettings, java: str) -> bool:
    """Format each node's storage once (one cluster id for all); (re)write its
    server.properties. True when a node's properties changed."""
    changed = False
    nodes = settings.kafka_nodes
    cluster_file = settings.stack_dir / "kafka" / "cluster.id"
    for node in nodes:
        node.properties.parent.mkdir(parents=True, exist_ok=True)
        changed |= write_if_changed(node.properties, kafka_server_properties(settings, node))
    for node in nodes:
        if (node.data / "meta.properties").exists():
            continue
        node.data.mkdir(parents=True, exist_ok=True)
        cluster_file.parent.mkdir(parents=True, exist_ok=True)
        if cluster_file.exists():
            cluster_id = cluster_file.read_text().strip()
        else:
            cluster_id = new_cluster_id()
            cluster_file.write_text(cluster_id + "\n")
        started = time.monotonic()
        # One node: a dynamic quorum of itself; three: the static voters in its properties.
        standalone = ["--standalone"] if len(nodes) == 1 else []
        cmd = kafka_java_command(
            settings,
            java,
            ["kafka.tools.StorageTool", "format", *standalone, "-t", cluster_id, "-c",
             str(node.properties)],
        )  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise StackError(f"kafka storage format failed: {(proc.stdout + proc.stderr)[-800:]}")
        say(
            f"{node.name}: formatted {node.data} (cluster {cluster_id}) in "
            f"{time.monotonic() - started:.1f}s"
        )
    return changed


# --------------------------------------------------------------------------------------------
# programs
# --------------------------------------------------------------------------------------------


def _services_file(settings: StackSettings) -> Path:
    return settings.stack_dir / "services.json"


def wanted_services(settings: StackSettings, requested: list[str], running: bool) -> list[str]:
    """Requested services plus those a still-running stack already has (up never removes)."""
    previous: list[str] = []
    if running:
        with contextlib.suppress(OSError, ValueError):
            previous = [
                s for s in json.loads(_services_file(settings).read_text()) if s in APP_PROGRAMS
            ]
    return list(dict.fromkeys(previous + requested))


def app_program_specs(
    settings: StackSettings, names: Sequence[str]
) -> tuple[list[ProgramSpec], list[str]]:
    python = str(REPO / ".venv" / "bin" / "python")
    if not Path(python).exists():
        python = sys.executable
    config = settings.config_path or (REPO / "config.yaml")
    specs, missing = [], []
    for name in names:
        spec = APP_PROGRAMS[name](settings, python, config, os.environ)
        if spec.module_file is not None and not spec.module_file.exists():
            missing.append(name)
            continue
        specs.append(spec)
    return specs, missing


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------


class Timer:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def __str__(self) -> str:
        return f"{time.monotonic() - self.start:.1f}s"


def _alive_check(settings: StackSettings, name: str) -> Any:
    def check() -> None:
        state = program_state(settings, name)
        if state == "FATAL":
            raise NotReady(f"{name} is {state} (it kept exiting at start)")

    return check


def _all_alive(settings: StackSettings, names: Sequence[str]) -> Any:
    checks = [_alive_check(settings, name) for name in names]

    def check() -> None:
        for one in checks:
            one()

    return check


def cmd_install(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    timer = Timer()
    java, pg_bin = install.install_all(settings)
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
        java, pg_bin = install.install_all(settings)
        if time.monotonic() - timer.start > 1:
            say(f"install finished in {timer}")
        pg = pg_layout(settings, pg_bin)
        pid = supervisord_pid(settings)
        if pid is None:
            leftovers = stack_processes(settings, [pg.data_dir])
            if leftovers:
                say(f"stopping {len(leftovers)} processes left by a dead supervisord: {leftovers}")
                kill_processes(leftovers)
            ports = [(node.name, node.port) for node in settings.kafka_nodes]
            ports += [(f"{node.name} controller", node.controller_port)
                      for node in settings.kafka_nodes]  # fmt: skip
            for component, port in (*ports, ("postgres", settings.pg_port)):
                if port_in_use(port):
                    raise StackError(
                        f"{component}: port 127.0.0.1:{port} is already in use by another "
                        f"process (another stack or a system service?)"
                    )
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
        write_if_changed(_services_file(settings), json.dumps([s.name for s in app_specs]) + "\n")
        if pid is None:
            pid = start_supervisord(settings)
            say(f"supervisord started (pid {pid}, socket {settings.supervisor_socket})")
        else:
            update_programs(settings)
            kafka_names = [node.name for node in settings.kafka_nodes]
            for name, did_change in changed.items():
                for program in kafka_names if name == "kafka" else [name]:
                    if did_change and program_state(settings, program) in RUNNING_STATES:
                        say(f"{program}: configuration changed; restarting it")
                        restart_program(settings, program)
            for name in (*kafka_names, "postgres"):
                if program_state(settings, name) not in RUNNING_STATES:
                    say(f"{name} was {program_state(settings, name)}; starting it")
                    start_program(settings, name)
        ready_from = Timer()
        errors: dict[str, str] = {}

        def run_kafka() -> None:
            try:
                wait_kafka(
                    settings.bootstrap,
                    settings.kafka_port,
                    _all_alive(settings, [node.name for node in settings.kafka_nodes]),
                    args.timeout,
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
                    _alive_check(settings, "postgres"),
                    args.timeout,
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


def wait_services(
    settings: StackSettings, specs: Sequence[ProgramSpec], hold_s: float, timeout_s: float
) -> bool:
    """Wait until every service has stayed running ``hold_s`` seconds. A service that keeps
    exiting is stopped (no crash loop) and its last log lines are printed: False."""
    watch = StartWatch(tuple(spec.name for spec in specs), hold_s=hold_s)
    deadline = time.monotonic() + max(timeout_s, hold_s + 5)
    up: set[str] = set()
    failed: dict[str, str] = {}
    while time.monotonic() < deadline:
        # Every program is judged (up or failed), so all failing ones are reported at once.
        up, failed = watch.observe(program_states(settings))
        if len(up) + len(failed) == len(specs):
            break
        time.sleep(0.5)
    else:
        for spec in specs:
            if spec.name not in up and spec.name not in failed:
                failed[spec.name] = f"not running steadily after {timeout_s:.0f}s"
    for spec in specs:
        if spec.name in up:
            say(f"{spec.name}: up (stayed running {hold_s:.0f}s; log {spec.log_file})")
    for name, reason in sorted(failed.items()):
        stop_program(settings, name)
        log = settings.log_file(name)
        print(
            f"stack up: {name} FAILED: {reason}; stopped it. Last lines of {log}:", file=sys.stderr
        )
        try:
            with log.open(encoding="utf-8", errors="replace") as lines:
                for line in last_lines(lines, 20):
                    print(f"  | {line}", file=sys.stderr)
        except OSError as exc:
            print(f"  (cannot read it: {exc.strerror})", file=sys.stderr)
    return not failed


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
    _services_file(settings).unlink(missing_ok=True)
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
            wait_kafka(settings.bootstrap, node.port, _alive_check(settings, node.name), 180)
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


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


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
