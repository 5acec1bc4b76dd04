"""``db.copy_pieces``: COPY text cut into whole lines of about a given size."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qryptify.db import copy_pieces


def test_pieces_end_on_line_ends_and_hold_every_byte() -> None:
    text = b"".join(b"%d\tline\n" % i for i in range(1000))
    pieces = copy_pieces(text, 100)
    assert b"".join(pieces) == text
    assert len(pieces) > 50
    assert all(p.endswith(b"\n") and len(p) >= 100 for p in pieces[:-1])
    assert all(len(p) < 100 + 12 for p in pieces)  # at most one line past the size


def test_small_and_empty_text() -> None:
    assert copy_pieces(b"", 10) == []
    assert copy_pieces(b"a\tb\n", 10) == [b"a\tb\n"]


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"") + b"\n")),
       st.integers(1, 64))  # fmt: skip
def test_any_lines_any_size(lines: list[bytes], size: int) -> None:
    text = b"".join(lines)
    pieces = copy_pieces(text, size)
    assert b"".join(pieces) == text
    assert all(p.endswith(b"\n") for p in pieces)
    assert all(len(p) >= size for p in pieces[:-1])
