"""Every adapter call the pipeline makes runs under the daemon-wide semaphore and a timeout (arq's model):
a timeout becomes a retryable error like any other transient failure."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.errors import RetryableError


async def bounded(call: Any, sem: asyncio.Semaphore, timeout_s: float, what: str) -> Any:
    """Await an adapter call under the daemon-wide semaphore and a timeout (a timeout is retryable)."""
    async with sem:
        try:
            return await asyncio.wait_for(call, timeout_s)
        except TimeoutError:
            raise RetryableError(f"{what}: no answer within {timeout_s:g}s") from None
