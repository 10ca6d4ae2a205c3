"""Periodic jobs on the event loop (APScheduler lives behind this module and nowhere else).

Jobs never overlap themselves (``max_instances=1``), missed runs coalesce into one, and the first run
is immediate. :meth:`Scheduler.aclose` stops scheduling and waits for running jobs to finish, so a
poll that is committing its batch is never cut off by a graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger("gateway.scheduler")
# A poll still running when its next turn comes is skipped on purpose (max_instances=1): not a warning.
logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)


class Scheduler:
    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=dt.UTC)
        self._running: set[asyncio.Task[None]] = set()

    def every(self, name: str, interval_s: float, job: Callable[[], Awaitable[None]], first_in_s: float = 0.0) -> None:
        """Run ``job`` in ``first_in_s`` seconds (default: now) and then every ``interval_s``, never two at once."""
        first = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=first_in_s)
        self._scheduler.add_job(self._tracked(name, job), "interval", seconds=interval_s, id=name, name=name,
                                max_instances=1, coalesce=True, next_run_time=first, misfire_grace_time=None)

    def run_now(self, name: str) -> None:
        """Bring the next run of a job forward to now."""
        self._scheduler.modify_job(name, next_run_time=dt.datetime.now(dt.UTC))

    def start(self) -> None:
        self._scheduler.start()

    async def aclose(self, grace_s: float) -> None:
        self._scheduler.shutdown(wait=False)
        if self._running:
            _done, pending = await asyncio.wait(set(self._running), timeout=grace_s)
            for task in pending:
                task.cancel()

    def _tracked(self, name: str, job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """The job runs in a task of its own: APScheduler cancels its futures at shutdown, we let ours finish."""

        async def run() -> None:
            task = asyncio.create_task(_call(job), name=f"job {name}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

        return run


async def _call(job: Callable[[], Awaitable[None]]) -> None:
    await job()
