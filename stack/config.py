"""The old name of ``stack.settings``, kept only for ``bench/__main__.py``, which reads
``KAFKA_VERSION`` from here (bench/ belongs to another issue: move that import, then delete
this module)."""

from __future__ import annotations

from stack.settings import KAFKA_VERSION

__all__ = ["KAFKA_VERSION"]
