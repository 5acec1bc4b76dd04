"""supervisord in the stack: the programs (Kafka nodes, PostgreSQL, the services and the
simulator) as ``ProgramSpec``s, the generated supervisord.conf, control over its XML-RPC unix
socket, and the wait until freshly started services stay up.

``infra_programs``, ``APP_PROGRAMS`` and ``supervisord_conf`` are pure
(tests/unit/test_stack_config.py); the rest talks to supervisord.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stack.install import say
from stack.kafka import kafka_java_command
from stack.postgres import PgLayout
from stack.procs import MARKER, NotReady, StackError, cmdline, pid_alive, wait_gone
from stack.settings import REPO, StackConfigError, StackSettings
from stack.startup import StartWatch, last_lines


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


RUNNING_STATES = {"RUNNING", "STARTING", "BACKOFF"}


def rpc(settings: StackSettings) -> Any:
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{settings.supervisor_socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def supervisord_pid(settings: StackSettings) -> int | None:
    """The pid of this stack's supervisord if it is alive (checked against its command line)."""
    try:
        pid = int(settings.supervisord_pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid_alive(pid) and str(settings.supervisord_conf) in cmdline(pid):
        return pid
    return None


def supervisor_answers(settings: StackSettings) -> bool:
    try:
        state = rpc(settings).supervisor.getState()
    except (OSError, xmlrpc.client.Error):
        return False
    return bool(state.get("statename") == "RUNNING")


def start_supervisord(settings: StackSettings, timeout: float = 30.0) -> int:
    sock = settings.supervisor_socket
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()  # a stale socket from a supervisord that was killed
    env = {**os.environ, MARKER: str(settings.stack_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(settings.supervisord_conf)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=settings.stack_dir,
    )
    if proc.returncode != 0:
        raise StackError(
            f"supervisord did not start (exit {proc.returncode}): "
            f"{(proc.stdout + proc.stderr).strip()[-500:]} - see {settings.log_file('supervisord')}"
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = supervisord_pid(settings)
        if pid is not None and supervisor_answers(settings):
            return pid
        time.sleep(0.1)
    raise StackError(
        f"supervisord did not answer on {sock} within {timeout:.0f}s - "
        f"see {settings.log_file('supervisord')}"
    )


def update_programs(settings: StackSettings) -> None:
    """`supervisorctl update`: apply a regenerated config to a running supervisord."""
    server = rpc(settings)
    added, changed, removed = server.supervisor.reloadConfig()[0]
    for name in removed:
        server.supervisor.stopProcessGroup(name)
        server.supervisor.removeProcessGroup(name)
    for name in changed:
        server.supervisor.stopProcessGroup(name)
        server.supervisor.removeProcessGroup(name)
        server.supervisor.addProcessGroup(name)
    for name in added:
        server.supervisor.addProcessGroup(name)


def program_states(settings: StackSettings) -> dict[str, dict[str, Any]]:
    infos = rpc(settings).supervisor.getAllProcessInfo()
    return {str(info["name"]): info for info in infos}


def program_state(settings: StackSettings, name: str) -> str:
    try:
        info = rpc(settings).supervisor.getProcessInfo(name)
    except (OSError, xmlrpc.client.Error):
        return "UNKNOWN"
    return str(info["statename"])


def start_program(settings: StackSettings, name: str) -> None:
    try:
        rpc(settings).supervisor.startProcess(name, False)
    except xmlrpc.client.Fault as fault:
        if "ALREADY_STARTED" not in fault.faultString:
            raise


def stop_program(settings: StackSettings, name: str) -> None:
    with contextlib.suppress(xmlrpc.client.Fault, OSError):
        rpc(settings).supervisor.stopProcess(name, True)


def restart_program(settings: StackSettings, name: str) -> None:
    server = rpc(settings)
    with contextlib.suppress(xmlrpc.client.Fault):
        server.supervisor.stopProcess(name, True)
    start_program(settings, name)


def apply_changes(settings: StackSettings, changed: Mapping[str, bool]) -> None:
    """On a running supervisord: load the regenerated config, restart the infrastructure
    programs whose configuration ``changed`` ("kafka", "postgres"), start those not running."""
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


def shutdown_supervisord(settings: StackSettings, pid: int, timeout: float = 120.0) -> None:
    with contextlib.suppress(OSError, xmlrpc.client.Error):
        rpc(settings).supervisor.shutdown()
    if not wait_gone([pid], timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone([pid], 10)


def services_file(settings: StackSettings) -> Path:
    return settings.stack_dir / "services.json"


def wanted_services(settings: StackSettings, requested: list[str], running: bool) -> list[str]:
    """Requested services plus those a still-running stack already has (up never removes)."""
    previous: list[str] = []
    if running:
        with contextlib.suppress(OSError, ValueError):
            previous = [
                s for s in json.loads(services_file(settings).read_text()) if s in APP_PROGRAMS
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


def alive_check(settings: StackSettings, name: str) -> Any:
    def check() -> None:
        state = program_state(settings, name)
        if state == "FATAL":
            raise NotReady(f"{name} is {state} (it kept exiting at start)")

    return check


def all_alive(settings: StackSettings, names: Sequence[str]) -> Any:
    checks = [alive_check(settings, name) for name in names]

    def check() -> None:
        for one in checks:
            one()

    return check


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
