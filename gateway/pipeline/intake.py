"""Intake: :class:`Intake` drains one source -- fetch, map and validate (in the mapping worker for a backlog), one
store transaction (ledger, outbox, quarantine, cursor), then ack. Every adapter call is bounded by a timeout and
by the daemon-wide semaphore (gateway.pipeline.calls).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.adapter import PageReading, SourceBatch
from gateway.clock import china_today
from gateway.mapping import InboundMapping
from gateway.pipeline.calls import bounded
from gateway.pipeline.config import SourceConfig
from gateway.pipeline.workers import Mapped, MapPool
from gateway.records import LedgerEntry
from gateway.store import Store
from gateway.store.intake import WatermarkMoved
from gateway.stored import Reject

log = logging.getLogger("gateway.engine")  # one logger name for intake and delivery (ops filter on it)
# A check after mapping that needs the store (e.g. gateway.store.publicity.repair_screen): it may move accepted
# entries to the rejects, which are quarantined with their reasons in the same intake transaction.
Screen = Callable[[list[LedgerEntry], list[Reject], SourceBatch, dt.date],
                  Awaitable[tuple[list[LedgerEntry], list[Reject]]]]



# ---------------------------------------------------------------- intake

@dataclass(frozen=True, slots=True)
class Page:
    """A page of a source, mapped. ``rows``: how many rows were read. ``batch.rows`` holds them all when they
    were read here; read in a worker, only those a screen may still quarantine (of accepted entries that are
    not upserts: gateway.store.publicity.repair_screen), as the source rows to keep in the quarantine."""

    batch: SourceBatch
    rows: int
    mapped: Mapped


@dataclass
class IntakeStats:
    rows: int = 0
    accepted: int = 0
    unchanged: int = 0
    quarantined: int = 0


class Intake:
    """Moves one source's changed rows into the store."""

    def __init__(self, cfg: SourceConfig, store: Store, routes: Mapping[str, Sequence[str]],
                 sem: asyncio.Semaphore, timeout_s: float, on_commit: Callable[[], None],
                 today: Callable[[], dt.date] = china_today, pool: MapPool | None = None) -> None:
        self.cfg, self.store, self.routes = cfg, store, routes
        self.pool = pool or MapPool(0)
        self.mappings: dict[str, InboundMapping] = dict(cfg.mappings)  # replaced when a file is reloaded
        self.sem, self.timeout_s, self.on_commit, self.today = sem, timeout_s, on_commit, today
        self.stats = IntakeStats()
        self.screens: list[Screen] = []
        self.lock = asyncio.Lock()  # a poll and the source audit (gateway.pipeline.audit) take turns

    async def poll(self) -> int:
        """Drain the source: pages are fetched and mapped ahead while earlier ones commit, strictly in order."""
        async with self.lock:
            return await self._drain()

    async def _drain(self) -> int:
        cursor = await self.store.intake.load_cursor(self.cfg.name)
        pages: asyncio.Queue[Page | None] = asyncio.Queue(maxsize=2)
        producer = asyncio.create_task(self._produce(cursor, pages), name=f"fetch {self.cfg.name}")
        total = 0
        read_from = cursor
        try:
            while (page := await pages.get()) is not None:
                if not await self._commit(page, read_from):
                    return total  # another instance took the source further: the next poll starts from there
                read_from = page.batch.cursor
                await bounded(self.cfg.adapter.ack(page.batch.cursor), self.sem, self.timeout_s,
                              f"source {self.cfg.name}")
                total += page.rows
            await producer  # re-raises a fetch or mapping error after the pages before it were committed
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
        return total

    async def _produce(self, cursor: Any, pages: asyncio.Queue[Page | None]) -> None:
        try:
            first = True
            while True:
                page = await self._read(cursor, first)
                first = False
                batch = page.batch
                # A snapshot page or a moved cursor is committed even without rows (a snapshot's last page
                # withdraws what it did not name; an empty delta still advances the source's position).
                if page.rows or batch.snapshot is not None or batch.cursor != cursor:
                    await pages.put(page)
                    cursor = batch.cursor
                if not batch.more:
                    return
        finally:
            await pages.put(None)

    async def _read(self, cursor: Any, first: bool) -> Page:
        """The next page, mapped. After the first page of a poll (a backlog is being drained), a source that
        can be read from a worker process (``page_reader``, e.g. a SQLite table) is read and mapped there in one
        step, so its rows never cross into the daemon; the page then keeps only the rows a screen may still need
        (see :class:`Page`). The first page is fetched here: a trickle of changes does not wait for the worker."""
        name, limit = self.cfg.name, self.cfg.batch_size
        adapter, reader = self.cfg.adapter, None
        if not first and isinstance(adapter, PageReading) and self.pool.offloads(limit):
            reader = adapter.page_reader()
        if reader is not None:
            specs = [(m.path, m.version, await self.store.key_secret() if m.dataset.pseudonymised_key else None)
                     for m in self.mappings.values()]
            batch, rows, mapped = await bounded(self.pool.read(reader, cursor, limit, name, specs, self.today()),
                                                self.sem, self.timeout_s, f"source {name}")
            return Page(batch, rows, mapped if mapped is not None else await self.map_rows(batch))
        batch = await bounded(self.cfg.adapter.fetch(cursor, limit), self.sem, self.timeout_s, f"source {name}")
        return Page(batch, len(batch.rows), await self.map_rows(batch))

    async def _commit(self, page: Page, read_from: Any) -> bool:
        """Commit a page read from ``read_from``; False (nothing written) if another instance sharing the store
        committed this source since (store.database WatermarkMoved): its pages are at least as new as this one."""
        batch, rows = page.batch, page.rows
        accepted, rejects = page.mapped
        for screen in self.screens:
            accepted, rejects = await screen(accepted, rejects, batch, self.today())
        fresh = rows - len(batch.behind)  # rows the look-back window read again are not counted again
        try:
            result = await self.store.intake.commit_intake(self.cfg.name, accepted, rejects, batch.cursor, self.routes,
                                                           fresh, snapshot=batch.snapshot, read_from=read_from,
                                                           marks=batch.marks, behind=batch.behind)
        except WatermarkMoved:
            log.info("page left to another instance", extra={"source": self.cfg.name, "rows": rows})
            return False
        s = self.stats
        s.rows += fresh
        s.accepted, s.unchanged, s.quarantined = (s.accepted + result.accepted, s.unchanged + result.unchanged,
                                                  s.quarantined + result.quarantined)
        if fresh or result.accepted or result.quarantined:  # not a look-back re-read that found nothing
            log.info("intake committed", extra={"source": self.cfg.name, "rows": fresh,
                                                "accepted": result.accepted, "unchanged": result.unchanged,
                                                "quarantined": result.quarantined})
        if result.late:
            log.info("late commits found by the look-back window", extra={"source": self.cfg.name,
                                                                          "rows": result.late})
        for rj in rejects:
            if rj.source_key in result.repeated:  # quarantined already at this update value (a look-back re-read)
                continue
            log.warning("row quarantined", extra={"source": self.cfg.name, "row": rj.source_key,
                                                  "key": rj.record_key, "reasons": "; ".join(map(str, rj.problems))})
        if result.accepted:
            self.on_commit()
        return True

    async def map_rows(self, batch: SourceBatch) -> Mapped:
        today = self.today()
        rows = [(row.key, row.data, row.problems) for row in batch.rows]
        accepted: list[LedgerEntry] = []
        rejects: list[Reject] = []
        for mapping in self.mappings.values():
            secret = await self.store.key_secret() if mapping.dataset.pseudonymised_key else None
            ok, bad = await self.pool.map(mapping, self.cfg.name, rows, today, secret)
            accepted += ok
            rejects += bad
        return accepted, rejects
