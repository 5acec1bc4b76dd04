"""Bounded HTTP reads: a body is read only up to a limit, so a hostile or broken server cannot
make a client hold gigabytes (a compressed bomb counts by its decoded size)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx


async def get_bounded(
    client: httpx.AsyncClient,
    path: str,
    limit: int,
    too_large: Callable[[str], Exception],
    params: Mapping[str, Any] | None = None,
) -> httpx.Response:
    """GET ``path`` and read its body up to ``limit`` bytes; a larger one raises
    ``too_large(reason)`` without being read further. The returned response holds the body."""
    request = client.build_request("GET", path, params=params)
    resp = await client.send(request, stream=True)
    chunks: list[bytes] = []
    try:
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large(f"body of {declared} bytes exceeds {limit}")
        size = 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise too_large(f"body larger than {limit} bytes")
            chunks.append(chunk)
    finally:
        await resp.aclose()
    headers = [
        (k, v)
        for k, v in resp.headers.multi_items()
        if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(
        resp.status_code,
        headers=headers,
        content=b"".join(chunks),
        request=resp.request,
        extensions=resp.extensions,
    )
