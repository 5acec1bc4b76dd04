"""The compiled core (``native/``, Rust + PyO3, built by maturin), when it is installed.

Every function it offers has a pure-Python twin in ``qryptify`` that stays the fallback (no
Rust toolchain) and the oracle: property tests in ``tests/unit/native/`` hold the two
byte-identical. ``QRYPTIFY_NATIVE=0`` forces the Python path (read once, at import).

``python -m qryptify.native`` prints which core is active.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Protocol


class StagedRows(Protocol):
    """``qryptify_native.StagedRows``: one batch's staged rows (twin of the dict
    ``StagedBatch._rows``, in the same order); ``split`` ends the batch."""

    def get(self, ident: tuple[bytes, int]) -> Any: ...

    def __setitem__(self, ident: tuple[bytes, int], staged: Any) -> None: ...

    def __len__(self) -> int: ...

    @property
    def frozen(self) -> bool: ...

    def copy(self) -> StagedRows: ...

    def drop_covered(self, key: bytes, start: int, end: int, offset: int) -> None: ...

    def drop_partitions(self, gone: set[tuple[str, int]]) -> None: ...

    def split(
        self,
    ) -> tuple[bytes, Sequence[Any], list[Any], dict[Any, Any], list[Any], bytes | None]: ...


class KlineStager(Protocol):
    """``qryptify_native.KlineStager``: the sink's staging loop over whole batches."""

    def learn(self, symbol: str, interval: str, interval_ms: int) -> None: ...

    def clear_pairs(self) -> None: ...

    def add(
        self,
        records: object,
        assigned: object,
        floors: object,
        offsets: object,
        held: object,
        firsts: object,
        rows: StagedRows,
        add_exact: object,
        errors: list[Any] | None,
    ) -> tuple[int, int]: ...

    def fast_rows(self, items: list[tuple[bytes | None, bytes]]) -> list[object]: ...

    def fast_misses(self, key: bytes, values: list[bytes], start: int) -> list[int]: ...


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get("QRYPTIFY_NATIVE", "").strip() == "0":
        return None, "python (QRYPTIFY_NATIVE=0)"
    try:
        module = importlib.import_module("qryptify_native")
    except ImportError:
        return None, "python (native core not built: no cargo at install)"
    return module, "native"


#: The compiled module, or None when the Python path is active.
MODULE, CORE = _load()


def make_kline_stager(prefix: bytes) -> KlineStager | None:
    """A compiled staging loop for records with this single-object header, if available."""
    if MODULE is None:
        return None
    stager: KlineStager = MODULE.KlineStager(prefix)
    return stager


def make_staged_rows() -> StagedRows:
    """An empty compiled row store (only when ``MODULE`` is set)."""
    assert MODULE is not None  # noqa: S101 - callers hold a stager, so the module is there
    rows: StagedRows = MODULE.StagedRows()
    return rows


def describe() -> str:
    """One line for ``make install``, ``qryptify status`` and the bench."""
    return f"core: {CORE}"


if __name__ == "__main__":
    print(describe())
