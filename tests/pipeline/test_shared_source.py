"""Several gateway instances polling one source into one store: a page read before another instance committed
the same source must not be committed over it.

Every instance polls every source (the watermark is shared in the store). Without a check, an instance whose
page was read from an older watermark commits it after another instance committed newer rows: the ledger
gets the older content of an edited row as its newest version, and the shared watermark goes backwards; once
the other instance commits a later page, the edit is behind the watermark and never read again. The store
therefore commits a page only if the source's watermark is still the one the page was read from.

The interleaving is made exact with an intake screen that holds a mapped page until the test releases it
(no sleeps). It runs on SQLite and PostgreSQL: the check is the same transaction on both.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from adapters.sql.source import SqlSource
from gateway.adapter import AdapterContext, SourceBatch
from gateway.pipeline.config import SourceConfig
from gateway.pipeline.intake import Intake
from gateway.records import LedgerEntry
from gateway.store import Store, open_store
from gateway.stored import Reject
from gateway.testing.department_db import apply_changes, insert_rows
from tests.support.helpers import (
    DEPARTMENT_CODE,
    SOURCE,
    ledger,
    make_department_db,
    penalty_mapping,
    read_rows,
    to_record,
)

ROUTES = {"penalty": ["platform"]}


class HeldPage:
    """An intake screen that, when armed, holds the next mapped page until released (it is not committed yet)."""

    def __init__(self) -> None:
        self.armed = False
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    def arm(self) -> None:
        self.armed, self.reached, self.release = True, asyncio.Event(), asyncio.Event()

    async def __call__(self, accepted: list[LedgerEntry], rejects: list[Reject], batch: SourceBatch,
                      today: dt.date) -> tuple[list[LedgerEntry], list[Reject]]:
        if self.armed:
            self.armed = False
            self.reached.set()
            await self.release.wait()
        return accepted, rejects


class Instance:
    """One gateway instance's intake of the shared source: its own store connection and source adapter."""

    def __init__(self, store: Store, source: SqlSource) -> None:
        cfg = SourceConfig(SOURCE, "sql", {"penalty": penalty_mapping()}, 1.0, 100, source)
        self.intake = Intake(cfg, store, ROUTES, asyncio.Semaphore(4), 30.0, lambda: None)
        self.hold = HeldPage()
        self.intake.screens.append(self.hold)

    async def start_held_poll(self) -> asyncio.Task[int]:
        """A poll whose first page is read and mapped, then held before its commit."""
        self.hold.arm()
        task = asyncio.create_task(self.intake.poll())
        waiter = asyncio.create_task(self.hold.reached.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            raise AssertionError(f"the poll did not reach its commit: {task.result() if task.done() else 'hung'}")
        return task


async def instances(stack: AsyncExitStack, store_url: str, department: Path) -> tuple[Instance, Instance]:
    pair = []
    for name in ("hub-a", "hub-b"):
        store = await open_store(store_url)
        stack.push_async_callback(store.aclose)
        ctx = AdapterContext(SOURCE, f"sources.{SOURCE}", department.parent, DEPARTMENT_CODE, name)
        source, problems = SqlSource.from_settings({"url": f"sqlite:///{department}", "table": "xzcf",
                                                    "key_columns": ["id"], "update_column": "gxsj",
                                                    "lookback_s": 0}, ctx)  # the rows counted are the new ones
        assert source is not None and not problems, problems
        await stack.enter_async_context(source)
        pair.append(Instance(store, source))
    return pair[0], pair[1]


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as st:
        yield st


def current(department: Path, row_id: int) -> Any:
    """The ledger entry the source row maps to now (its key and content hash)."""
    return to_record(read_rows(department, ids=[row_id])[0]).entry()


async def test_a_page_read_before_another_instance_committed_is_not_committed(
        tmp_path: Path, store_url: str, stack: AsyncExitStack) -> None:
    """hub-a reads an edit of row R and is held; R is edited again and hub-b commits that, then reads new rows
    and is held. hub-a's stale page must not become R's newest version nor move the watermark back, and after
    both finish (and poll again) the ledger holds R's latest content."""
    sample = make_department_db(tmp_path, penalties=8)
    department = sample.path
    a, b = await instances(stack, store_url, department)
    assert await b.intake.poll() == 8
    row_id = sorted(sample.valid_ids("xzcf"))[0]
    base = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)

    apply_changes(department, table="xzcf", ids=[row_id], change="edit", now=base)
    held_a = await a.start_held_poll()  # hub-a has read and mapped R's first edit; not committed
    apply_changes(department, table="xzcf", ids=[row_id], change="edit", now=base + dt.timedelta(seconds=1))
    latest = current(department, row_id)
    assert await b.intake.poll() == 1  # hub-b commits R's second edit
    new_ids = insert_rows(department, table="xzcf", count=2, seed=7, gxsj=base + dt.timedelta(seconds=2))
    held_b = await b.start_held_poll()  # hub-b has read the new rows from the watermark after R's second edit
    watermark = await b.intake.store.intake.load_cursor(SOURCE)

    a.hold.release.set()
    await asyncio.wait_for(held_a, 30)
    after_a = await a.intake.store.intake.load_cursor(SOURCE)
    b.hold.release.set()
    assert await asyncio.wait_for(held_b, 30) == 2
    for inst in (a, b):
        await inst.intake.poll()

    held = (await ledger(a.intake.store))[latest.key]
    assert held["content_hash"] == latest.digest, (
        f"the ledger holds v{held['version']} of row {row_id} with older content than the source's latest")
    assert after_a == watermark, f"hub-a's stale page moved the watermark from {watermark} to {after_a}"
    assert held["version"] == 2  # v1, then the second edit; the first edit was never committed over it
    assert await a.intake.store.intake.load_cursor(SOURCE) == [read_rows(department, ids=new_ids)[-1]["gxsj"],
                                                               new_ids[-1]]


async def test_an_instance_whose_page_was_overtaken_logs_no_error(
        tmp_path: Path, store_url: str, stack: AsyncExitStack, caplog: pytest.LogCaptureFixture) -> None:
    """Both instances read the same page; the second to commit leaves it to the first: its poll ends
    normally (no exception, no error line) and the ledger has each row once, at version 1."""
    make_department_db(tmp_path, penalties=6)
    a, b = await instances(stack, store_url, tmp_path / "department.db")
    held_a = await a.start_held_poll()
    assert await b.intake.poll() == 6
    a.hold.release.set()
    await asyncio.wait_for(held_a, 30)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert {row["version"] for row in (await ledger(b.intake.store)).values()} == {1}
    assert a.intake.stats.rows == 0 and b.intake.stats.accepted == 6
