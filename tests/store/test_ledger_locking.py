"""Several writers of one ledger key on PostgreSQL: intake locks the rows it reads, so a version another
instance (or the publicity job) writes in between is never overwritten by a version computed from a stale
read. SQLite needs no test of this: its write transactions are serial (BEGIN IMMEDIATE)."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from gateway.store import open_store
from gateway.store import schema as s
from tests.support.helpers import SOURCE, edited, ledger, make_department_db, outbox, read_rows, to_record
from tests.support.pg_server import create_database

ROUTES = {"penalty": ["platform"]}
_COUNTER = itertools.count()


@pytest.fixture
def pg_url(pg_admin_url: str) -> str:
    """A fresh database on the test PostgreSQL server (SQLite serialises write transactions: nothing to test)."""
    return create_database(pg_admin_url, f"cg_locking_{os.getpid()}_{next(_COUNTER)}")


async def test_intake_waits_for_a_concurrent_version_and_builds_on_it(pg_url: str, tmp_path: Path) -> None:
    """A second writer holds version 2 of a key uncommitted; intake of an edit of the same key waits for it
    and then writes version 3 (without the lock it would write a second "version 2" over it)."""
    sample = make_department_db(tmp_path, penalties=3)
    row = read_rows(sample.path, ids=sorted(sample.valid_ids("xzcf"))[:1])[0]
    store = await open_store(pg_url)
    other = await open_store(pg_url)
    try:
        await store.intake.commit_intake(SOURCE, [to_record(row)], [], None, ROUTES, 1)
        key = to_record(row).key
        r = s.records.c
        async with other.db.engine.connect() as conn:
            tx = await conn.begin()
            # Another writer's next version of the key (what the publicity job's withdrawal does), not committed.
            await conn.execute(update(s.records).where(r.record_key == key).values(
                version=2, operation="withdraw", updated_at=0.0))
            intake = asyncio.create_task(store.intake.commit_intake(SOURCE, [to_record(edited(row))], [], None,
                                                                    ROUTES, 1))
            await _wait_until_blocked(other, intake)
            await tx.commit()
        result = await asyncio.wait_for(intake, 30)
        held = (await ledger(store))[key]
        assert (held["version"], held["operation"], result.accepted) == (3, "upsert", 1)
        assert [o["version"] for o in await outbox(store, key)] == [1, 3]
    finally:
        await store.aclose()
        await other.aclose()


async def _wait_until_blocked(store: object, intake: asyncio.Task[object]) -> None:
    """Until a backend of this database waits for a row lock (the intake), failing if intake finished first."""
    engine = store.db.engine  # type: ignore[attr-defined]
    for _ in range(3000):
        if intake.done():
            raise AssertionError(f"intake did not wait for the other writer: {intake.result()!r}")
        async with engine.connect() as conn:
            waiting = (await conn.execute(select(text("count(*)")).select_from(text("pg_stat_activity")).where(
                text("datname = current_database() AND wait_event_type = 'Lock'")))).scalar()
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("intake never waited for the row lock")
