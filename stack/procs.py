"""supervisord control (XML-RPC over its unix socket) and process bookkeeping via /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stack.config import StackSettings

# Every program the stack starts carries this variable (value: the stack dir), and so do all of
# their children: that is how `down` finds what a killed supervisord left behind.
MARKER = "QRYPTIFY_STACK"

RUNNING_STATES = {"RUNNING", "STARTING", "BACKOFF"}


class StackError(RuntimeError):
    """A failure `up`/`down` reports as one line and a non-zero exit."""


def rpc(settings: StackSettings) -> Any:
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{settings.supervisor_socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def pid_alive(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return False
    # state is the field after the ")" that closes the command name; Z = zombie (already dead)
    state = stat.rsplit(b")", 1)[-1].split()[0:1]
    return state != [b"Z"]


def cmdline(pid: int) -> list[str]:
    return [
        part.decode(errors="replace") for part in _read(f"/proc/{pid}/cmdline").split(b"\0") if part
    ]


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


def shutdown_supervisord(settings: StackSettings, pid: int, timeout: float = 120.0) -> None:
    with contextlib.suppress(OSError, xmlrpc.client.Error):
        rpc(settings).supervisor.shutdown()
    if not wait_gone([pid], timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone([pid], 10)


def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    pending = set(pids)
    deadline = time.monotonic() + timeout
    while pending:
        pending = {p for p in pending if pid_alive(p)}
        if not pending:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _ancestors() -> set[int]:
    pids = set()
    pid = os.getpid()
    while pid > 1:
        pids.add(pid)
        stat = _read(f"/proc/{pid}/stat")
        if not stat:
            break
        pid = int(stat.rsplit(b")", 1)[-1].split()[1])
    return pids


def stack_processes(settings: StackSettings, extra_dirs: Iterable[Path] = ()) -> list[int]:
    """Live processes that belong to this stack: supervisord and everything it started.

    Found by the marker variable in the environment (inherited by every descendant), by
    supervisord's command line, and by a working directory inside the PostgreSQL data dir.
    """
    marker = f"{MARKER}={settings.stack_dir}".encode()
    conf = str(settings.supervisord_conf)
    cwd_roots = [str(d) for d in extra_dirs]
    mine = _ancestors()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in mine or not pid_alive(pid):
            continue
        environ = _read(f"/proc/{pid}/environ").split(b"\0")
        hit = marker in environ or conf in cmdline(pid)
        if not hit and cwd_roots:
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                cwd = ""
            hit = any(cwd == root or cwd.startswith(root + "/") for root in cwd_roots)
        if hit:
            found.append(pid)
    return sorted(found)


def kill_processes(pids: list[int], grace: float = 15.0) -> list[int]:
    """TERM, wait, KILL. Returns the pids that were still alive after the TERM grace period."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if wait_gone(pids, grace):
        return []
    stubborn = [p for p in pids if pid_alive(p)]
    for pid in stubborn:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_gone(stubborn, 10)
    return stubborn


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
