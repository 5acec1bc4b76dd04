"""Binance USDⓈ-M Futures exchange simulator.

One aiohttp server (HTTP + WebSocket + archive + control on one port) that speaks the
exchange's public formats, runs on an accelerated clock, injects faults and publishes its
ground truth. See ``sim/README.md``.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
