"""`python -m stack install`: Java, Maven, the Kafka broker jars and PostgreSQL, idempotently."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stack.config import (
    DEPENDENCY_PLUGIN,
    LOG4J2_PROPERTIES,
    StackSettings,
    kafka_pom,
)


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


# --------------------------------------------------------------------------------------------
# apt
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Java + Maven
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Kafka jars
# --------------------------------------------------------------------------------------------


def _stamp(settings: StackSettings) -> Path:
    return settings.kafka_home / ".installed.json"


def kafka_installed(settings: StackSettings) -> bool:
    stamp = _stamp(settings)
    if not stamp.exists():
        return False
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    jar = settings.kafka_libs / f"kafka_2.13-{settings.kafka_version}.jar"
    return bool(
        data.get("kafka") == settings.kafka_version
        and data.get("log4j") == settings.log4j_version
        and jar.exists()
        and settings.log4j_config.exists()
    )


def ensure_kafka(settings: StackSettings) -> None:
    """Resolve the broker's runtime classpath from Maven Central into the shared cache."""
    home = settings.kafka_home
    with file_lock(settings.cache_dir / ".install.lock"):
        write_if_changed(settings.log4j_config, LOG4J2_PROPERTIES)
        if kafka_installed(settings):
            return
        mvn = ensure_mvn()
        started = time.monotonic()
        say(
            f"downloading Kafka {settings.kafka_version} (log4j {settings.log4j_version}) jars "
            f"from Maven Central into {settings.kafka_libs}"
        )
        work = home / f".download-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        pom = work / "pom.xml"
        pom.write_text(kafka_pom(settings.kafka_version, settings.log4j_version))
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            f"-Dmaven.repo.local={settings.cache_dir / 'm2'}",
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={work / 'libs'}",
        ]
        last = ""
        for attempt in (1, 2, 3):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=work)
            if proc.returncode == 0:
                break
            last = (proc.stdout + proc.stderr).strip()[-3000:]
            say(f"mvn failed (attempt {attempt}/3), exit {proc.returncode}")
            time.sleep(2 * attempt)
        else:
            shutil.rmtree(work, ignore_errors=True)
            raise InstallError(f"could not download the Kafka jars with Maven:\n{last}")
        libs = work / "libs"
        names = sorted(p.name for p in libs.glob("*.jar"))
        required = [
            f"kafka_2.13-{settings.kafka_version}.jar",
            f"log4j-core-{settings.log4j_version}.jar",
            f"log4j-api-{settings.log4j_version}.jar",
            f"log4j-slf4j-impl-{settings.log4j_version}.jar",
        ]
        missing = [r for r in required if r not in names]
        if missing:
            raise InstallError(f"Maven resolved no {', '.join(missing)} (got {len(names)} jars)")
        shutil.rmtree(settings.kafka_libs, ignore_errors=True)
        libs.rename(settings.kafka_libs)
        shutil.rmtree(work, ignore_errors=True)
        write_if_changed(
            _stamp(settings),
            json.dumps(
                {
                    "kafka": settings.kafka_version,
                    "log4j": settings.log4j_version,
                    "jars": names,
                },
                indent=1,
            )
            + "\n",
        )
        say(f"kafka jars: {len(names)} jars in {time.monotonic() - started:.1f}s")


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

PG_ROOT = Path("/usr/lib/postgresql")


def find_pg_bin(version: str | None = None) -> Path | None:
    """The bin dir of the wanted major version, else of the newest installed one."""
    if version and (PG_ROOT / version / "bin" / "postgres").exists():
        return PG_ROOT / version / "bin"
    found = [p.parent for p in PG_ROOT.glob("*/bin/postgres") if p.parent.parent.name.isdigit()]
    if not found:
        return None
    return max(found, key=lambda p: int(p.parent.name))


def has_timescaledb(bin_dir: Path) -> bool:
    version = bin_dir.parent.name
    return Path(f"/usr/share/postgresql/{version}/extension/timescaledb.control").exists()


def ensure_postgres() -> Path:
    found = find_pg_bin()
    if found is not None:
        return found
    # We run our own data directory; keep Debian from creating (and maybe starting) its
    # default cluster on 5432.
    conf_d = Path("/etc/postgresql-common/createcluster.d")
    try:
        write_if_changed(
            conf_d / "qryptify.conf",
            "# written by qryptify `python -m stack install`: it runs its own clusters\n"
            "create_main_cluster = false\n",
        )
    except OSError as exc:
        say(f"note: could not write {conf_d}/qryptify.conf: {exc}")
    apt_install(["postgresql"])
    found = find_pg_bin()
    if found is None:
        raise InstallError("apt-get installed postgresql but no /usr/lib/postgresql/*/bin/postgres")
    return found


def install_all(settings: StackSettings) -> tuple[str, Path]:
    """Everything the stack needs on this machine; fast when it is all there."""
    java = ensure_java()
    ensure_kafka(settings)
    pg_bin = ensure_postgres()
    return java, pg_bin
