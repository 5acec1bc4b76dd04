"""Processes and ports: what belongs to a stack (found via /proc), stopping it by pid, whether a
port is taken or answers; and the two failures the commands report as one line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from stack.settings import StackSettings

# Every program the stack starts carries this variable (value: the stack dir), and so do all of
# their children: that is how `down` finds what a killed supervisord left behind.
MARKER = "QRYPTIFY_STACK"


class StackError(RuntimeError):
    """A failure `up`/`down` reports as one line and a non-zero exit."""


class NotReady(RuntimeError):
    pass


AliveCheck = Callable[[], None]


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


def check_ports_free(ports: Iterable[tuple[str, int]]) -> None:
    """StackError naming the first ``(component, port)`` that something else listens on."""
    for component, port in ports:
        if port_in_use(port):
            raise StackError(
                f"{component}: port 127.0.0.1:{port} is already in use by another "
                f"process (another stack or a system service?)"
            )


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
