"""Waiting out an unavailable exchange or database without ignoring a stop request."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from qryptify.errors import is_retryable
from qryptify.metrics import Health

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How often a waiting coroutine looks at the stop flag (SIGTERM answers within this).
STOP_POLL_S = 0.2


def backoff(
    initial_s: float = 1.0,
    maximum_s: float = 30.0,
    factor: float = 2.0,
    *,
    jitter: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """The project's one backoff policy: ceilings ``initial, initial*factor, …`` capped at
    ``maximum``; each delay is drawn uniformly from ``[ceiling * (1 - jitter), ceiling]``
    (``jitter=0``: exactly the ceiling; ``0.5``: "equal jitter", so many clients retrying at
    once spread out). Infinite: start a new one after a success."""
    if initial_s <= 0 or maximum_s < initial_s or factor < 1 or not 0 <= jitter <= 1:
        raise ValueError("need 0 < initial_s <= maximum_s, factor >= 1 and 0 <= jitter <= 1")
    ceiling = initial_s
    while True:
        yield ceiling * (1 - jitter) + (rand() * ceiling * jitter if jitter else 0.0)
        ceiling = min(maximum_s, ceiling * factor)


async def sleep_unless_stopped(seconds: float, stop: threading.Event) -> bool:
    """Sleep up to ``seconds``; return False as soon as a stop is requested."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not stop.is_set():
        left = deadline - loop.time()
        if left <= 0:
            return True
        await asyncio.sleep(min(STOP_POLL_S, left))
    return False


async def run_unless_stopped(work: Awaitable[T], stop: threading.Event) -> tuple[bool, T | None]:
    """Run ``work``; cancel it when a stop is requested. Returns (finished, result)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.wait({task}, timeout=STOP_POLL_S)
        if stop.is_set() and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return False, None
    return True, task.result()


async def until_available(
    call: Callable[[], Awaitable[T]],
    stop: threading.Event,
    *,
    what: str,
    health: Health | None = None,
    delays: Iterator[float] | None = None,
) -> T | None:
    """Call until it succeeds, retrying retryable errors (exchange or database unavailable)
    with backoff for as long as it takes; None when a stop is requested first.

    A service whose exchange is unreachable at start stays up, not ready, and says why,
    instead of exiting and being restarted in a loop by its supervisor.
    """
    waits = delays or backoff()
    while not stop.is_set():
        try:
            finished, result = await run_unless_stopped(call(), stop)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            delay = next(waits)
            if health is not None:
                health.set(False, f"{what}: {exc}")
            logger.warning("%s failed, retrying in %.0fs: %s", what, delay, exc)
            await sleep_unless_stopped(delay, stop)
            continue
        return result if finished else None
    return None
