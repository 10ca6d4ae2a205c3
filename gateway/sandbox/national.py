"""The national 互联网+监管 side of the 前置库, simulated: drains the front-end tables and writes back an answer.

:class:`NationalFrontDb` reads the rows the gateway's ``national_frontdb`` sink left waiting (``deal_status`` NULL
or ``0``), checks each like the national system would (the envelope: ``cd_operation`` i/u/d, ``cd_batch`` 13 digits,
a ``u``/``d`` only after the key's processed ``i``; the fields: the supervision dataset's rules from
:mod:`gateway.domain.datasets`) and writes ``deal_status`` ``1`` (processed) or ``2`` (rejected, with
``deal_message``). :class:`FrontDbFaults` plays what the national side does on a bad day: rows left unprocessed,
rows rejected whatever they hold.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import column, select, table, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.clock import china_today
from gateway.domain.datasets import get_dataset, validate
from gateway.domain.fields import Dataset
from gateway.domain.supervision import NATIONAL_TABLES, national_column

_BATCH = re.compile(r"^\d{13}$")
DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


@dataclass
class FrontDbFaults:
    """Faults on demand: ``unprocessed`` rows (by record key) are left waiting; ``rejected`` ones refused."""

    unprocessed: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)  # record key → the national reason


@dataclass
class DrainResult:
    processed: int = 0
    rejected: int = 0
    left: int = 0


def _async_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{DRIVERS.get(scheme, scheme)}://{rest}"


class NationalFrontDb:
    """Drains the front-end tables of one database (a URL as the sink's, sqlite:// or postgresql://)."""

    def __init__(self, url: str, faults: FrontDbFaults | None = None, today: dt.date | None = None) -> None:
        # a SQLite front-end database is shared with the gateway's writes: wait for its lock as the national side's
        # own poller would, instead of failing a drain when a write transaction is open (SQLite's default: 5 s)
        options: dict[str, Any] = {"connect_args": {"timeout": 60.0}} if url.startswith("sqlite") else {}
        self.engine: AsyncEngine = create_async_engine(_async_url(url), **options)
        self.faults = faults or FrontDbFaults()
        self.today = today
        self._sqlite = url.startswith("sqlite")

    async def aclose(self) -> None:
        await self.engine.dispose()

    async def drain(self) -> DrainResult:
        """One pass over every front-end table: each waiting row answered (or left, as the faults say)."""
        result = DrainResult()
        for dataset, name in NATIONAL_TABLES.items():
            await self._drain_table(get_dataset(dataset), name, result)
        return result

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Drain on a schedule until ``stop`` is set."""
        while not stop.is_set():
            await self.drain()
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                continue

    async def _drain_table(self, dataset: Dataset, name: str, result: DrainResult) -> None:
        async with self.engine.begin() as conn:
            exists = await conn.run_sync(lambda c: c.dialect.has_table(c, name))
            if not exists:
                return
            cols = [national_column(f) for f in dataset.fields]
            tbl = table(name, *(column(c) for c in (*cols, "cd_id", "cd_batch", "cd_operation", "cd_time",
                                                     "record_unique_identity", "deal_status", "deal_message",
                                                     "deal_time")))
            waiting = (tbl.c.deal_status.is_(None)) | (tbl.c.deal_status == "0")
            rows = (await conn.execute(select(tbl).where(waiting).order_by(tbl.c.cd_batch, tbl.c.cd_time))).mappings()
            for row in list(rows):
                key = str(row["record_unique_identity"])
                if key in self.faults.unprocessed:
                    result.left += 1
                    continue
                reason = self.faults.rejected.get(key) or await self._problem(conn, tbl, dataset, dict(row))
                await conn.execute(update(tbl).where(tbl.c.cd_id == row["cd_id"]).values(
                    deal_status="2" if reason else "1", deal_message=reason or None,
                    deal_time=self._stamp()))
                if reason:
                    result.rejected += 1
                else:
                    result.processed += 1

    def _stamp(self) -> Any:
        """Now, as the driver takes a TIMESTAMP (SQLite: ISO text)."""
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        return now.isoformat(sep=" ") if self._sqlite else now

    async def _problem(self, conn: Any, tbl: Any, dataset: Dataset, row: Mapping[str, Any]) -> str:
        """Why the national side refuses a row ('' when it takes it)."""
        operation = row["cd_operation"]
        if operation not in ("i", "u", "d"):
            return f"cd_operation {operation!r} is not i/u/d"
        if not _BATCH.match(str(row["cd_batch"] or "")):
            return f"cd_batch {row['cd_batch']!r} is not YYYYMMDD + 5 digits"
        if operation != "i":
            first = await conn.execute(select(tbl.c.cd_id).where(
                (tbl.c.record_unique_identity == row["record_unique_identity"]) & (tbl.c.cd_operation == "i")
                & (tbl.c.deal_status == "1")).limit(1))
            if first.first() is None:
                return f"cd_operation {operation} before the key's processed insert"
        fields = {spec.name: _canonical(spec.kind, row[national_column(spec)]) for spec in dataset.fields}
        problems = validate(dataset, fields, self.today or china_today())
        return "; ".join(f"{national_column(dataset.field(p.path))}: {p.message}" for p in problems)


def _canonical(kind: str, value: Any) -> Any:
    """A column's value as the dataset's rules take it."""
    if value is None or value == "":
        return None
    if kind == "date" and not isinstance(value, dt.date):
        try:
            return dt.date.fromisoformat(str(value)[:10])
        except ValueError:
            return str(value)
    if kind == "decimal" and not isinstance(value, Decimal):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return str(value)
    if kind == "list":
        return [v for v in str(value).split(",") if v]
    return value.isoformat() if isinstance(value, dt.datetime) else value
