"""Two gateway instances on one PostgreSQL store."""

from __future__ import annotations

import asyncio
import itertools
import os

from gateway.store import open_store
from tests.pg_server import create_database

_databases = itertools.count()


async def _open_together(url: str) -> list[BaseException]:
    """Open (and so create) the store from two instances at once; the failures."""
    opened = await asyncio.gather(open_store(url), open_store(url), return_exceptions=True)
    for store in opened:
        if not isinstance(store, BaseException):
            await store.aclose()
    return [exc for exc in opened if isinstance(exc, BaseException)]


def test_instances_starting_together_on_a_new_store_both_start(pg_admin_url: str) -> None:
    """Two instances create the schema of a new PostgreSQL store at the same moment: both start (without the
    migration lock one fails on a duplicate catalogue entry of a table the other is creating)."""
    for _ in range(3):
        url = create_database(pg_admin_url, f"cg_two_{os.getpid()}_{next(_databases)}")
        failures = asyncio.run(_open_together(url))
        assert not failures, f"an instance could not open the new store: {failures[0]}"
