"""Which ledger record a source row became: the link from a department's row back to the record key.

The ledger keeps, with every record, the source and the source's own key of the row it came from (for a
SQL source the row's key columns, e.g. ``id``). The demo uses it to change a delivered record the way the
department would: by updating its row, found from the record it became.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, select

from gateway.store import schema as s
from gateway.store.composed import Store
from gateway.store.database import _translated


@dataclass(frozen=True, slots=True)
class SourceRecord:
    record_key: str
    source_key: str
    version: int
    operation: str


@_translated
async def source_records(store: Store, dataset: str, source: str, *, operation: str | None = None,
                         version: int | None = None, limit: int = 100) -> list[SourceRecord]:
    """The first ``limit`` ledger records of a dataset from one source (oldest first), optionally only those at
    one operation and version."""
    r = s.records.c
    conds = [r.dataset == dataset, r.source == source]
    if operation is not None:
        conds.append(r.operation == operation)
    if version is not None:
        conds.append(r.version == version)
    stmt = select(r.record_key, r.source_key, r.version, r.operation).where(and_(*conds)).order_by(r.id).limit(limit)
    async with store.engine.connect() as conn:
        return [SourceRecord(*row) for row in await conn.execute(stmt)]
