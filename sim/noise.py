"""The market's randomness: a counter-based hash (vectorised splitmix64) of (symbol seed,
stream salt, index), and the value-noise octaves and salts the price and volume streams use.
No state: the same inputs give the same numbers in every process."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

_MASK64 = (1 << 64) - 1

# Value-noise octaves: (period in minutes, amplitude in log-price). Chosen so that a minute moves
# a few bp, a day a few %, a year by tens of % — plausible for a crypto perpetual.
_OCTAVES: tuple[tuple[int, float], ...] = (
    (1, 0.0003),
    (7, 0.0008),
    (60, 0.003),
    (720, 0.010),
    (4320, 0.030),
    (30240, 0.080),
    (259200, 0.250),
)

# Salts that separate the independent hash streams of one symbol.
_SALT_PRICE = 0x51
_SALT_WICK_HI = 0x52
_SALT_WICK_LO = 0x53
_SALT_TRADES = 0x54
_SALT_SIZE = 0x55
_SALT_VWAP = 0x56
_SALT_TAKER = 0x57
_SALT_PATH = 0x58


# ---------------------------------------------------------------------------------------------
# Hashing (vectorised splitmix64)
# ---------------------------------------------------------------------------------------------


def _mix_scalar(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _mix(x: U64) -> U64:
    # Array arithmetic on uint64 wraps modulo 2^64 silently, which is what splitmix64 needs.
    # In place on one fresh array: the same values with fewer temporaries.
    x = x + _GAMMA
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def _salt(seed: int, tag: int) -> int:
    return _mix_scalar(seed ^ _mix_scalar(tag))


def _hash(salt: int, idx: I64) -> U64:
    return _mix(idx.astype(np.uint64) ^ np.uint64(salt))


def _uniform(salt: int, idx: I64) -> F64:
    """Uniform floats in [0, 1) from the top 53 bits."""
    return (_hash(salt, idx) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def stable_fraction(*parts: int) -> float:
    """A deterministic uniform [0, 1) from integers (fault selection, close delays)."""
    acc = 0x243F6A8885A308D3
    for part in parts:
        acc = _mix_scalar(acc ^ (part & _MASK64))
    return (acc >> 11) / float(1 << 53)


def stable_string_key(text: str) -> int:
    acc = 1469598103934665603
    for byte in text.encode():
        acc = ((acc ^ byte) * 1099511628211) & _MASK64
    return acc
