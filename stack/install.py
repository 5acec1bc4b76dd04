"""What the stack's components share when they install and write their files: apt-get, Java
17 and Maven, a file lock, write-if-changed, and the stack's console line. The components
install themselves with these (``stack.kafka.ensure_kafka``, ``stack.postgres.ensure_postgres``).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class InstallError(RuntimeError):
    pass


def say(msg: str) -> None:
    print(f"stack: {msg}", flush=True)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        path.chmod(mode)
        return False
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


_apt_updated = False


def apt_install(packages: list[str]) -> None:
    global _apt_updated
    if shutil.which("apt-get") is None:
        raise InstallError(f"need {' '.join(packages)} but apt-get is not available: install them")
    if os.geteuid() != 0:
        raise InstallError(f"need {' '.join(packages)}: run as root or install them yourself")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock_wait = ["-o", "DPkg::Lock::Timeout=300"]
    started = time.monotonic()
    if not _apt_updated:
        say("apt-get update")
        subprocess.run(["apt-get", *lock_wait, "update", "-q"], env=env, check=True)
        _apt_updated = True
    say(f"apt-get install -y {' '.join(packages)}")
    subprocess.run(
        ["apt-get", *lock_wait, "install", "-y", "-q", "--no-install-recommends", *packages],
        env=env,
        check=True,
    )
    say(f"installed {' '.join(packages)} in {time.monotonic() - started:.1f}s")


def java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def ensure_java() -> str:
    java = shutil.which("java") or ("/usr/bin/java" if Path("/usr/bin/java").exists() else None)
    if java is None or java_major(java) < 17:
        apt_install(["openjdk-17-jre-headless"])
        java = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
        if not Path(java).exists():
            java = shutil.which("java") or "/usr/bin/java"
    if java_major(java) < 17:
        raise InstallError(f"Kafka 4 needs Java 17+, {java} is older")
    return java


def ensure_mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        apt_install(["maven"])
        mvn = shutil.which("mvn") or "/usr/bin/mvn"
    return mvn
