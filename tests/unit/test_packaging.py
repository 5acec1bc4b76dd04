"""What a built wheel carries: the schemas and migrations as package data, found next to the
code (never through the working directory), and the extras split (checked statically)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import qryptify
from qryptify import db
from qryptify.avro import schemas_dir

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(qryptify.__file__).resolve().parent


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_schemas_and_migrations_live_inside_the_package() -> None:
    assert schemas_dir() == PACKAGE / "schemas"
    assert db.sql_dir() == PACKAGE / "sql"
    assert (schemas_dir() / "kline.avsc").is_file()
    assert [p.name for p in db.migration_files()][0] == "001_candlesticks.sql"


def test_package_data_globs_cover_every_schema_and_migration() -> None:
    data = pyproject()["tool"]["setuptools"]["package-data"]["qryptify"]  # type: ignore[index]
    shipped = {p for pattern in data for p in PACKAGE.glob(pattern)}
    wanted = set(PACKAGE.glob("schemas/**/*.avsc")) | set(PACKAGE.glob("sql/*.sql"))
    assert wanted and wanted <= shipped


def test_simulator_and_stack_dependencies_are_extras() -> None:
    project = pyproject()["project"]
    runtime = " ".join(project["dependencies"])  # type: ignore[index]
    for name in ("aiohttp", "numpy", "supervisor"):
        assert name not in runtime
    extras = project["optional-dependencies"]  # type: ignore[index]
    assert any(d.startswith("aiohttp") for d in extras["sim"])
    assert any(d.startswith("numpy") for d in extras["sim"])
    assert any(d.startswith("supervisor") for d in extras["stack"])


def test_license_file_matches_pyproject() -> None:
    project = pyproject()["project"]
    assert project["license"] == "MIT"  # type: ignore[index]
    assert project["license-files"] == ["LICENSE"]  # type: ignore[index]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
