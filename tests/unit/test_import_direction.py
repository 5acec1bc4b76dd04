"""Imports point one way (docs/architecture.md): the product never imports its tooling, services
never import each other, and the simulator (the tests' oracle) imports nothing of the product.

Reads every module's source with ``ast`` (imports inside functions count too), so a forbidden
import fails here whether or not the code path that runs it is ever exercised.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("qryptify", "services")
TOOLING = ("sim", "bench", "chaos", "stack", "tests")
PACKAGES = (*PRODUCT, *TOOLING)


@dataclass(frozen=True, slots=True)
class Import:
    importer: str  # dotted module name of the file
    imported: str  # dotted module name it imports
    where: str  # path:line


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[Import]:
    rel = path.relative_to(ROOT)
    for imported, line in imports_in(
        path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py"
    ):
        yield Import(module_name(path), imported, f"{rel}:{line}")


def imports_in(source: str, importer: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import statement in ``source``, relative ones
    resolved against ``importer``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # ``from .. import x`` climbs from the module's package (a package is its own).
                package = importer.split(".")[: None if is_package else -1]
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``, or None when it may."""
    src = importer.split(".")
    dst = imported.split(".")
    if dst[0] not in PACKAGES:
        return None  # the standard library or a third-party distribution
    if src[0] in PRODUCT and dst[0] in TOOLING:
        return "product imports tooling"
    if src[0] == "services" and dst[0] == "services" and len(dst) > 1 and dst[1] != src[1]:
        return "a service imports another service"
    if src[0] == "services" and len(dst) == 1 and dst[0] == "services" and len(src) > 1:
        return "a service imports the services package"
    if src[0] == "qryptify" and dst[0] == "services":
        return "the shared core imports a service"
    if src[0] == "sim" and dst[0] != "sim":
        return "the simulator imports outside itself"
    return None


def all_imports() -> Iterator[Import]:
    for package in PACKAGES:
        folder = ROOT / package
        if folder.is_dir():
            for path in sorted(folder.rglob("*.py")):
                yield from imports_of(path)


def test_no_import_crosses_a_forbidden_direction() -> None:
    found = [
        f"{imp.where}: {imp.importer} -> {imp.imported} ({reason})"
        for imp in all_imports()
        if (reason := violation(imp.importer, imp.imported))
    ]
    assert not found, "forbidden imports:\n" + "\n".join(found)


def test_the_scan_sees_the_code() -> None:
    # A walk that found nothing would pass the test above vacuously.
    importers = {imp.importer.split(".")[0] for imp in all_imports()}
    assert {"qryptify", "services", "sim", "stack", "tests"} <= importers


@pytest.mark.parametrize(
    ("importer", "imported", "reason"),
    [
        ("qryptify.sink.loop", "sim.grid", "product imports tooling"),
        ("qryptify.cli", "bench.harness", "product imports tooling"),
        ("services.sink.run", "tests.conftest", "product imports tooling"),
        ("qryptify.kafka", "stack.config", "product imports tooling"),
        ("services.sink.run", "chaos", "product imports tooling"),
        ("services.sink.run", "services.producer.run", "a service imports another service"),
        ("services.sink.run", "services", "a service imports the services package"),
        ("qryptify.db", "services.backfiller.run", "the shared core imports a service"),
        ("sim.market", "qryptify.pairs", "the simulator imports outside itself"),
        ("sim.check", "services.sink", "the simulator imports outside itself"),
        ("sim.server", "tests.conftest", "the simulator imports outside itself"),
    ],
)
def test_forbidden_directions_are_named(importer: str, imported: str, reason: str) -> None:
    assert violation(importer, imported) == reason


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("services.sink.run", "qryptify.sink.loop"),
        ("services.sink.run", "services.sink.faults"),
        ("bench.harness", "sim.server"),
        ("tests.e2e.conftest", "services.sink.run"),
        ("stack.cli", "qryptify.config"),
        ("sim.market", "numpy"),
        ("qryptify.kafka", "confluent_kafka"),
    ],
)
def test_allowed_directions_pass(importer: str, imported: str) -> None:
    assert violation(importer, imported) is None


def test_relative_imports_resolve() -> None:
    source = "from . import rows\nfrom ..kline import Kline\nfrom .batch import x\n"
    assert [m for m, _ in imports_in(source, "qryptify.sink.loop", False)] == [
        "qryptify.sink",
        "qryptify.kline",
        "qryptify.sink.batch",
    ]
    assert [m for m, _ in imports_in("from .loop import y\n", "qryptify.sink", True)] == [
        "qryptify.sink.loop"
    ]
    assert violation("services.sink.run", "services.producer") == (
        "a service imports another service"
    )


def module_level_imports(path: Path) -> set[str]:
    """The product modules ``path`` imports at module level (a lazy import inside a function
    is how a command defers a heavy edge; it is not a layering edge)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in PRODUCT}


def test_the_shared_core_has_no_import_cycle() -> None:
    graph = {
        module_name(path): module_level_imports(path)
        for path in sorted((ROOT / "qryptify").rglob("*.py"))
    }
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, " -> ".join((*trail, module))
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            if imported != "qryptify":  # the package root: a version string, nothing else
                visit(imported, (*trail, module))
        done.add(module)

    for module in graph:
        visit(module, ())
    assert len(done) == len(graph)


def test_the_wheel_and_the_image_carry_only_the_product() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(pattern.rstrip("*") for pattern in shipped) == sorted(PRODUCT)
    for name, target in pyproject["project"]["scripts"].items():
        assert target.split(".")[0] in PRODUCT, f"script {name} runs tooling: {target}"
    copied = [
        line.split()[1]
        for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if line.startswith("COPY ")
    ]
    assert not [path for path in copied if path.split("/")[0] in TOOLING]


#: The shared core's layers as docs/architecture.md draws them: a module imports (at module
#: level) only from lower layers. A new module needs a line here, which is the point.
LAYERS: dict[str, int] = {
    "qryptify.errors": 0, "qryptify.clock": 0, "qryptify.metrics": 0,
    "qryptify.binance.weights": 0, "qryptify.binance.bounded": 0, "qryptify.redaction": 0,
    "qryptify.native": 0, "qryptify.timing": 0, "qryptify.sink.timing": 1,
    "qryptify.pairs": 1, "qryptify.retry": 1,
    "qryptify.kline": 2, "qryptify.config": 2, "qryptify.handoff": 2,
    "qryptify.avro": 3, "qryptify.logs": 3, "qryptify.gaps": 3, "qryptify.sink.rows": 3,
    "qryptify.binance.rest": 4, "qryptify.binance.ws": 3, "qryptify.binance.frames": 4,
    "qryptify.kafka": 4, "qryptify.db": 4, "qryptify.service": 4, "qryptify.health_report": 4,
    "qryptify.sink.batch": 4, "qryptify.binance.archive": 4,
    "qryptify.publish": 5, "qryptify.cli": 5, "qryptify.dlq": 5, "qryptify.planning": 5,
    "qryptify.offsets": 6, "qryptify.sink.loop": 6,
    "qryptify.archive_ledger": 7,
    "qryptify.audit": 8,
    # the optional futures data (qryptify/futures/)
    "qryptify.futures.config": 0, "qryptify.futures.live": 3,
    "qryptify.futures.funding": 5, "qryptify.futures.price": 5,
    "qryptify.futures.records": 6, "qryptify.futures.sources": 6,
    "qryptify.futures.status": 6, "qryptify.futures.store": 6,
    "qryptify.futures.sink": 7, "qryptify.futures.tap": 7, "qryptify.futures.topic": 7,
    "qryptify.commands": 9, "qryptify.__main__": 9,
}  # fmt: skip
PACKAGE_ROOTS = {
    "qryptify",
    "qryptify.sink",
    "qryptify.binance",
    "qryptify.futures",
}  # __init__: a docstring
#: Same-layer imports that exist, each with why it is tolerated.
SIDEWAYS = {
    # tap refuses a replay's consumer group by its prefix, a constant of the replay command.
    ("qryptify.commands.tap", "qryptify.commands.replay"),
    # error messages are redacted as they are built; redaction imports nothing of the project.
    ("qryptify.errors", "qryptify.redaction"),
}


def layer_of(module: str) -> int:
    if module.startswith("qryptify.commands"):
        return LAYERS["qryptify.commands"]
    assert module in LAYERS, f"{module}: give it a layer (docs/architecture.md and LAYERS)"
    return LAYERS[module]


def test_the_shared_core_imports_only_lower_layers() -> None:
    wrong = []
    for path in sorted((ROOT / "qryptify").rglob("*.py")):
        module = module_name(path)
        if module in PACKAGE_ROOTS:
            continue
        for imported in module_level_imports(path) - PACKAGE_ROOTS:
            if (module, imported) in SIDEWAYS:
                continue
            if layer_of(imported) >= layer_of(module):
                wrong.append(f"{module} ({layer_of(module)}) -> {imported} ({layer_of(imported)})")
    assert wrong == []
