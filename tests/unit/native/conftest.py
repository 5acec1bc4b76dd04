"""The compiled core's tests run wherever it is built; where it is not, they say why.

``make install`` builds it whenever cargo is on PATH, and ``make test`` then sets
``QRYPTIFY_EXPECT_NATIVE=1``: a missing module is a failure there, never a skip. Without cargo
the Python path is the only one, and these tests report as skipped with the reason.
"""

from __future__ import annotations

import os

import pytest

from qryptify import native


@pytest.fixture(autouse=True)
def _native_core() -> None:
    if native.MODULE is not None:
        return
    if os.environ.get("QRYPTIFY_EXPECT_NATIVE") == "1":
        pytest.fail(f"the native core was expected (cargo exists) but is not active: {native.CORE}")
    pytest.skip(f"the native core is not active here: {native.CORE}")
