"""Processes for the integration and end-to-end tiers: start a module as a real child process
with its output in a log file, wait for a condition, stop it by SIGTERM or kill it by SIGKILL.

Every wait is scaled by ``QRYPTIFY_TEST_TIMEOUT_FACTOR`` (a slow machine raises it); nothing
here measures time for an assertion.
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


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until it holds; AssertionError naming ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s * TIMEOUT_FACTOR
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s * TIMEOUT_FACTOR:.0f}s waiting for {what}")


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
) -> subprocess.Popen[bytes]:
    """``python -m module args…`` from the repository root, stdout and stderr into ``log``.
    ``env`` replaces the environment (default: this one, unbuffered)."""
    environ = dict(env) if env is not None else {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab" if append else "wb") as handle:  # the child keeps its own descriptor
        return subprocess.Popen(
            [PYTHON, "-m", module, *args],
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=environ,
        )


def run_module(module: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m module args…`` to completion from the repository root; output captured as
    text, the exit code left to the caller."""
    return subprocess.run(
        [PYTHON, "-m", module, *args],
        cwd=ROOT,
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
    """``python -m sim`` in its own process (its own core, not the test's GIL)."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        self.proc = spawn("sim", ["--port", "0", *args], log)
        self._url = ""

        def listening() -> bool:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("sim listening on "):
                    self._url = line.removeprefix("sim listening on ").strip()
                    return True
            return self.proc.poll() is not None

        wait_until(listening, 30, "the simulator to listen")
        if not self._url:
            raise AssertionError(f"simulator did not start:\n{log.read_text()[-2000:]}")
        self.http = httpx.Client(base_url=self._url, timeout=30)

    @property
    def url(self) -> str:
        return self._url

    def now_ms(self) -> int:
        return int(self.http.get("/fapi/v1/time").json()["serverTime"])

    def stats(self) -> dict[str, int]:
        body: dict[str, int] = self.http.get("/sim/stats").json()
        return body

    def faults(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get("/sim/faults").json()
        return body

    def set_faults(self, **patch: Any) -> None:
        self.http.post("/sim/faults", json=patch).raise_for_status()

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
