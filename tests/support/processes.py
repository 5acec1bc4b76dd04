"""Processes for the integration, end-to-end and chaos tiers: start a module as a real child
process with its output in a log file, wait for a condition, stop it by SIGTERM or kill it by
SIGKILL; the exchange simulator as such a process.

The test waits (``wait_until``, ``Service``, ``SimProcess``, ``run_module``) are scaled by
``QRYPTIFY_TEST_TIMEOUT_FACTOR`` (a slow machine raises it); ``poll_until`` takes its timeout as
given. Nothing here measures time for an assertion.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TIMEOUT_FACTOR = float(os.environ.get("QRYPTIFY_TEST_TIMEOUT_FACTOR", "1"))


def poll_until(predicate: Callable[[], bool], timeout_s: float, every_s: float = 0.2) -> bool:
    """Poll ``predicate`` every ``every_s`` until it holds or ``timeout_s`` has passed; its
    last answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return predicate()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until it holds; AssertionError naming ``what`` after the timeout."""
    if not poll_until(predicate, timeout_s * TIMEOUT_FACTOR):
        raise AssertionError(
            f"timed out after {timeout_s * TIMEOUT_FACTOR:.0f}s waiting for {what}"
        )


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any QRYPTIFY_* override (a developer's shell may
    point the services elsewhere), unbuffered, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRYPTIFY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def free_port() -> int:
    """A port nothing listens on right now (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(
    module: str,
    args: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    append: bool = False,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """``python -m module args…`` from the repository root, stdout and stderr into ``log``.
    ``env`` replaces the environment (default: this one, unbuffered); ``new_session`` keeps a
    terminal's Ctrl-C (sent to the whole foreground group) away from the child."""
    environ = dict(env) if env is not None else {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab" if append else "wb") as handle:  # the child keeps its own descriptor
        return subprocess.Popen(
            [PYTHON, "-m", module, *args],
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=environ,
            start_new_session=new_session,
        )


def terminate(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> list[int | None]:
    """SIGTERM every process still running, wait for all within ``timeout_s``, SIGKILL what is
    left. Their exit codes, None for each that had to be killed."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    codes: list[int | None] = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            codes.append(None)
    return codes


def run_module(
    module: str, *args: str, timeout_s: float = 120, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m module args…`` to completion from the repository root; output captured as
    text, the exit code left to the caller. ``env`` replaces the environment."""
    return subprocess.run(
        [PYTHON, "-m", module, *args],
        cwd=ROOT,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s * TIMEOUT_FACTOR,
        check=False,
    )


@dataclass
class Service:
    """A started child process and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s * TIMEOUT_FACTOR)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not finish:\n{self.text()[-3000:]}") from None

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, then its exit code (killed and failed if it does not stop in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


class SimProcess:
    """``python -m sim`` in its own process (its own core, not the test's GIL), on a free port,
    driven over its HTTP endpoints. ``args`` are the simulator's options besides ``--port``."""

    def __init__(
        self,
        log: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        append: bool = False,
        new_session: bool = False,
        timeout_s: float = 30,
    ) -> None:
        self.log = log
        self.proc = spawn(
            "sim", ["--port", "0", *args], log, env=env, append=append, new_session=new_session
        )
        self._url = ""

        def listening() -> bool:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("sim listening on "):
                    self._url = line.removeprefix("sim listening on ").strip()
                    return True
            return self.proc.poll() is not None

        try:
            wait_until(listening, timeout_s, "the simulator to listen")
        except AssertionError:
            self.proc.kill()
            self.proc.wait()
            raise
        if not self._url:
            raise AssertionError(f"simulator did not start:\n{log.read_text()[-2000:]}")
        self.http = httpx.Client(base_url=self._url, timeout=30)

    @property
    def url(self) -> str:
        return self._url

    @property
    def ws_url(self) -> str:
        return "ws://" + self._url.split("://", 1)[1]

    def now_ms(self) -> int:
        """The exchange's time as a client asks it (``/fapi/v1/time``: weighed, faultable)."""
        return int(self.http.get("/fapi/v1/time").json()["serverTime"])

    def clock_ms(self) -> int:
        """The simulator's clock from its control endpoint (never weighed or faulted)."""
        return int(self.http.get("/sim/clock").json()["now"])

    def stats(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get("/sim/stats").json()
        return body

    def faults(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get("/sim/faults").json()
        return body

    def set_faults(self, **patch: Any) -> None:
        self.http.post("/sim/faults", json=patch).raise_for_status()

    def stop(self, timeout_s: float = 30) -> None:
        self.http.close()
        terminate([self.proc], timeout_s)
