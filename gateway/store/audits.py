"""The source audit's part of the store: the mark (update value) of every source row taken, and the audits run.

The intake ledger writes a page's marks in its own transaction (:func:`save_marks`); the audit
(gateway.pipeline.audit) compares a source's marks with them and records what it found (:meth:`SourceAudits.record`),
which ``status`` shows (:meth:`SourceAudits.latest`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store import schema as s
from gateway.store.database import Database, Repository, chunks, dumps


@dataclass(frozen=True, slots=True)
class AuditResult:
    """One audit of one source: rows in the source, key ranges compared and differing, rows re-read and recovered."""

    source: str
    rows: int
    ranges: int
    differing: int
    reread: int
    recovered: int
    duration_s: float
    at: float = 0.0
    recovered_total: int = 0  # by every audit of the source, even one cut off by a crash (``latest``)


async def load_marks(conn: AsyncConnection, source: str, keys: Sequence[str]) -> dict[str, str]:
    m = s.source_marks.c
    found: dict[str, str] = {}
    for chunk in chunks(sorted(set(keys))):
        rows = await conn.execute(select(m.source_key, m.mark).where(and_(m.source == source,
                                                                            m.source_key.in_(chunk))))
        found.update({key: mark for key, mark in rows})
    return found


async def save_marks(db: Database, conn: AsyncConnection, source: str, marks: Mapping[str, str]) -> None:
    """Upsert a page's marks through the driver's executemany (the intake's hot path: SQLAlchemy's statement
    processing per row, as Database.bulk_insert); a mark that did not change is not written again."""
    if not marks:
        return
    params = "?, ?, ?" if db.engine.dialect.paramstyle == "qmark" else "$1, $2, $3"
    table = s.source_marks.name
    sql = (f"INSERT INTO {table} (source, source_key, mark) VALUES ({params}) "  # noqa: S608 - our own names
           f"ON CONFLICT (source, source_key) DO UPDATE SET mark = excluded.mark WHERE {table}.mark <> excluded.mark")
    await conn.exec_driver_sql(sql, [(source, key, mark) for key, mark in marks.items()])


class SourceAudits(Repository):
    """The marks of the rows taken from each source, and the record of its audits."""

    async def marks(self, source: str, keys: Sequence[str]) -> dict[str, str]:
        """The stored mark of each of ``keys`` that has one."""
        async with self.engine.connect() as conn:
            return await load_marks(conn, source, keys)

    async def record(self, result: AuditResult) -> None:
        """Keep an audit's result, and an event (kind ``source.audit``) when it re-read or recovered rows."""
        now = time.time()
        row = {k: v for k, v in asdict(result).items() if k not in ("at", "recovered_total")}
        async with self.tx() as conn:
            await conn.execute(s.source_audits.insert().values(**row, at=now))
            if result.reread or result.recovered:
                await conn.execute(s.events.insert().values(
                    at=now, kind="source.audit", target="", dataset="", record_key=result.source,
                    detail=dumps(row)))

    async def latest(self) -> dict[str, AuditResult]:
        """The last audit of each source, with the rows all its audits recovered (``recovered_total``)."""
        a = s.source_audits.c
        async with self.engine.connect() as conn:
            last = select(a.source, func.max(a.id).label("id")).group_by(a.source).subquery()
            rows = (await conn.execute(select(s.source_audits).join(last, a.id == last.c.id))).mappings().all()
        found = await self.found()
        return {r["source"]: _result(dict(r), found.get(r["source"], {}).get("recovered", 0)) for r in rows}

    async def found(self) -> dict[str, dict[str, int]]:
        """Per source, the late commits the look-back window found (``late``) and the rows the audits recovered
        (``recovered``): each is an event written with the row (IntakeLedger.commit_intake)."""
        e = s.events.c
        kinds = {"source.late": "late", "source.recovered": "recovered"}
        counted = select(e.target, e.kind, func.count()).where(e.kind.in_(list(kinds))).group_by(e.target, e.kind)
        out: dict[str, dict[str, int]] = {}
        async with self.engine.connect() as conn:
            for source, kind, count in await conn.execute(counted):
                out.setdefault(source, {"late": 0, "recovered": 0})[kinds[kind]] = int(count)
        return out


def _result(row: Mapping[str, Any], recovered_total: int) -> AuditResult:
    return AuditResult(row["source"], row["rows"], row["ranges"], row["differing"], row["reread"], row["recovered"],
                       row["duration_s"], row["at"], recovered_total)
