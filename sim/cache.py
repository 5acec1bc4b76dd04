"""The market's caches: a byte- or count-bounded LRU, and the per-day blocks it keeps (computed
1m arrays, formatted REST rows)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from sim.bars import Bar
from sim.noise import I64

# ---------------------------------------------------------------------------------------------
# Caches
# ---------------------------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A small thread-safe LRU (the market is shared by the server loop and test threads).

    Bounded by entry count and, with ``weigh``, by the summed weight of the entries (bytes):
    the least recently used entries go first.
    """

    def __init__(
        self, size: int, weigh: Callable[[V], int] | None = None, max_weight: int = 0
    ) -> None:
        self._size = size
        self._weigh = weigh
        self._max_weight = max_weight
        self._weight = 0
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def weight(self) -> int:
        return self._weight

    def __len__(self) -> int:
        return len(self._data)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            found = self._data.get(key)
            if found is not None:
                self._data.move_to_end(key)
                return found
        value = make()  # outside the lock: two threads may both compute; results are equal
        weight = self._weigh(value) if self._weigh is not None else 0
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None and self._weigh is not None:
                self._weight -= self._weigh(old)
            self._data[key] = value
            self._weight += weight
            while len(self._data) > 1 and (
                len(self._data) > self._size
                or (self._weigh is not None and self._weight > self._max_weight)
            ):
                _, dropped = self._data.popitem(last=False)
                if self._weigh is not None:
                    self._weight -= self._weigh(dropped)
        return value


@dataclass(frozen=True, slots=True)
class DayBlock:
    """The 1440 final 1m candles of one UTC day, as if every minute existed."""

    open: I64
    high: I64
    low: I64
    close: I64
    volume: I64
    quote: I64
    trades: I64
    taker_base: I64
    taker_quote: I64
    first_id: I64
    path_high_first: npt.NDArray[np.bool_]

    def bar(self, i: int) -> Bar:
        n = int(self.trades[i])
        f = int(self.first_id[i])
        return Bar(
            int(self.open[i]),
            int(self.high[i]),
            int(self.low[i]),
            int(self.close[i]),
            int(self.volume[i]),
            int(self.quote[i]),
            n,
            int(self.taker_base[i]),
            int(self.taker_quote[i]),
            f,
            f + n - 1,
        )


@dataclass(frozen=True, slots=True)
class DayRows:
    """Final candles of one interval that open during one UTC day, as REST JSON rows.

    ``body`` holds the rows back to back, each ``[...],``; row ``i`` opens at ``opens[i]`` and
    ends (exclusive) at ``ends[i]``.
    """

    opens: I64
    body: bytes
    ends: I64

    def weight(self) -> int:
        return len(self.body) + self.opens.nbytes + self.ends.nbytes + 200

    def __len__(self) -> int:
        return len(self.opens)

    def span(self, i: int, j: int) -> memoryview:
        """Rows ``i`` to ``j`` (exclusive), each with its trailing comma."""
        a = int(self.ends[i - 1]) if i else 0
        return memoryview(self.body)[a : int(self.ends[j - 1])]


_NO_ROWS = DayRows(np.zeros(0, dtype=np.int64), b"", np.zeros(0, dtype=np.int64))
_ROW_END = ord("]")  # each row ends with "],"
