"""Helpers for the two-instance test: a read-only view of a PostgreSQL store with the crash test's questions.

:class:`PgStoreView` answers what :class:`crash_helpers.StoreView` answers for a SQLite store (so the crash
test's checks run unchanged on it), from one read-only REPEATABLE READ snapshot per question, plus what only
several instances raise: which instance claimed a batch, and whether a source's watermark ever moved back.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]

from tests.support.crash_helpers import SOURCES, TABLE_CODE

T = TypeVar("T")
Reader = Callable[[Any], Awaitable[T]]


@dataclass
class PgStoreView:
    """Read-only questions about the gateway's PostgreSQL store while the daemons write to it."""

    url: str
    regressions: list[str] = field(default_factory=list)  # watermarks seen moving back between two snapshots
    _last_cursors: dict[str, list[Any]] = field(default_factory=dict)

    def _read(self, reader: Reader[T]) -> T:
        async def run() -> T:
            conn = await asyncpg.connect(self.url)
            try:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    return await reader(conn)
            finally:
                await conn.close()

        return asyncio.run(run())

    def snapshot(self) -> dict[str, Any]:
        async def read(conn: Any) -> dict[str, Any]:
            async def grouped(sql: str) -> dict[Any, int]:
                return {row[0]: row[1] for row in await conn.fetch(sql)}

            outbox = await grouped("SELECT state, count(*) FROM cg_outbox GROUP BY state")
            return {
                "outbox": outbox,
                "batches": await grouped("SELECT state, count(*) FROM cg_batches GROUP BY state"),
                "open_retrying": await conn.fetchval(
                    "SELECT count(*) FROM cg_batches WHERE state = 'open' AND attempts > 0"),
                "ledger": await grouped("SELECT dataset, count(*) FROM cg_records GROUP BY dataset"),
                "ledger_versions": await grouped("SELECT version, count(*) FROM cg_records GROUP BY version"),
                "quarantine": await grouped(
                    "SELECT stage, count(*) FROM cg_quarantine WHERE state = 'open' GROUP BY stage"),
                "cursors": {row[0]: json.loads(row[1]) for row in await conn.fetch(
                    "SELECT source, cursor FROM cg_watermarks")},
                "claimed_open": await grouped(
                    "SELECT split_part(claimed_by, ':', 1), count(*) FROM cg_batches WHERE state = 'open' "
                    "GROUP BY 1"),
                "backlog": outbox.get("pending", 0) + outbox.get("leased", 0),
            }

        snap = self._read(read)
        self._note_cursors(snap["cursors"])
        return snap

    def _note_cursors(self, cursors: dict[str, Any]) -> None:
        """A (gxsj, id) watermark must never be seen lower than before: that re-reads, or worse, loses edits."""
        for source, cursor in cursors.items():
            if cursor is None:
                continue
            last = self._last_cursors.get(source)
            if last is not None and list(cursor) < last:
                self.regressions.append(f"{source}: {last} -> {cursor}")
            self._last_cursors[source] = list(cursor)

    def delivered_rows(self) -> dict[str, list[int]]:
        """Department row ids (per table) whose current ledger version is delivered."""
        async def read(conn: Any) -> list[Any]:
            return list(await conn.fetch(
                "SELECT r.source, r.source_key FROM cg_records r JOIN cg_outbox o ON o.dataset = r.dataset "
                "AND o.record_key = r.record_key AND o.version = r.version WHERE o.state = 'delivered' "
                "ORDER BY r.id"))

        out: dict[str, list[int]] = {t: [] for t, *_ in SOURCES.values()}
        for source, key in self._read(read):
            out[SOURCES[source][0]].append(int(key))
        return out

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        async def read(conn: Any) -> dict[str, Any] | None:
            row = await conn.fetchrow("SELECT id, state, attempts, record_count, last_error, claimed_by "
                                      "FROM cg_batches WHERE id = $1", batch_id)
            if row is None:
                return None
            receipt = await conn.fetchval("SELECT receipt_id FROM cg_receipts WHERE batch_id = $1", batch_id)
            return {**dict(row), "receipt_id": receipt}

        return self._read(read)

    def open_batches_claimed_by(self, instance: str, beyond_s: float = 0.0) -> list[str]:
        """Open batches ``instance`` claimed whose next attempt is more than ``beyond_s`` away: with ``beyond_s``
        longer than any retry delay, those it is sending now (a send claims its batch for the adapter timeout)."""
        async def read(conn: Any) -> list[Any]:
            return list(await conn.fetch(
                "SELECT id FROM cg_batches WHERE state = 'open' AND claimed_by LIKE $1 "
                "AND next_attempt_at > extract(epoch FROM clock_timestamp()) + $2", f"{instance}:%", beyond_s))

        return [r[0] for r in self._read(read)]

    def ledger(self) -> dict[tuple[str, str], dict[str, Any]]:
        async def read(conn: Any) -> list[Any]:
            return list(await conn.fetch("SELECT dataset, record_key, version, operation, content_hash, source, "
                                         "source_key FROM cg_records"))

        return {(r["dataset"], r["record_key"]): dict(r) for r in self._read(read)}

    def outbox_by_key(self) -> dict[tuple[str, str], list[tuple[int, str, str | None]]]:
        async def read(conn: Any) -> list[Any]:
            return list(await conn.fetch(
                "SELECT dataset, record_key, version, state, batch_id FROM cg_outbox ORDER BY id"))

        out: dict[tuple[str, str], list[tuple[int, str, str | None]]] = {}
        for ds, key, version, state, batch in self._read(read):
            out.setdefault((ds, key), []).append((version, state, batch))
        return out

    def receipt_accepts(self) -> Counter[tuple[str, str]]:
        """(table code, key) -> how many 'accepted' results the stored receipts of done batches carry."""
        async def read(conn: Any) -> list[Any]:
            return list(await conn.fetch(
                "SELECT b.dataset, r.body FROM cg_receipts r JOIN cg_batches b ON b.id = r.batch_id"))

        accepted: Counter[tuple[str, str]] = Counter()
        for dataset, body in self._read(read):
            for result in json.loads(body).get("results") or []:
                if result.get("status") == "accepted":
                    accepted[(TABLE_CODE[dataset], result["recordKey"])] += 1
        return accepted

    def mapping_quarantine(self) -> set[tuple[str, str]]:
        async def read(conn: Any) -> list[Any]:
            return list(await conn.fetch("SELECT source, source_key FROM cg_quarantine "
                                         "WHERE stage = 'mapping' AND state = 'open'"))

        return {(r[0], r[1]) for r in self._read(read)}

    def mapping_quarantine_hits(self) -> dict[tuple[str, str], int]:
        """(source, source key) -> how many times the row was quarantined (an entry counts its repeats)."""
        async def read(conn: Any) -> list[Any]:
            return list(await conn.fetch(
                "SELECT source, source_key, hits FROM cg_quarantine WHERE stage = 'mapping'"))

        return {(r[0], r[1]): r[2] for r in self._read(read)}

    def target_quarantine(self) -> list[tuple[str, str, str]]:
        async def read(conn: Any) -> list[Any]:
            return list(await conn.fetch("SELECT dataset, record_key, reasons FROM cg_quarantine "
                                         "WHERE stage = 'target' AND state = 'open'"))

        return [(r[0], r[1], r[2]) for r in self._read(read)]

    def batches_by_claimant(self) -> Counter[str]:
        """Done batches per instance that last claimed them (the one whose send got the receipt)."""
        async def read(conn: Any) -> list[Any]:
            return list(await conn.fetch("SELECT split_part(claimed_by, ':', 1), count(*) FROM cg_batches "
                                         "WHERE state = 'done' GROUP BY 1"))

        return Counter({r[0]: r[1] for r in self._read(read)})
