"""Mapping, validation and encoding off the event loop, in worker processes.

Mapping is pure and CPU-bound; in one process it would compete with the store and the network for the
interpreter. :class:`MapPool` sends a page of source rows to a worker process, which compiles the
mapping file once (by path) and returns small, picklable results: ledger entries (canonical JSON and
digest already computed) and rejects. A source with a page reader (gateway.adapter.Source) is read there too,
so its rows never cross into the daemon. On the way out it encodes a target's batch the same way: the
leased rows go over as stored, the body comes back (gateway.pipeline.encode). Pages smaller than ``min_rows``
are handled in-process, where the round trip would cost more than it saves.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import multiprocessing
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

from gateway.adapter import SourceBatch
from gateway.domain.subject_keys import KeySecret
from gateway.errors import ConfigError, Problem
from gateway.mapping import InboundMapping, OutboundMapping, load_mapping
from gateway.pipeline.encode import Encoded, EncodePlan, encode_stored
from gateway.records import LedgerEntry
from gateway.stored import Candidate, Reject
from gateway.tuning import tune_process

Rows = Sequence[tuple[str, Mapping[str, Any], tuple[Problem, ...]]]
Mapped = tuple[list[LedgerEntry], list[Reject]]
M = TypeVar("M", InboundMapping, OutboundMapping)

# path -> (version, compiled): an edited file is compiled again; inbound and outbound files are kept side by side
_COMPILED: dict[str, tuple[int, InboundMapping | OutboundMapping]] = {}
_PLANS: dict[str, EncodePlan] = {}  # EncodePlan.key -> the first copy received (its derive remembers end dates)
_KEEP = 64  # compiled files and plans a worker keeps


def map_rows(mapping: InboundMapping, source: str, rows: Rows, today: dt.date,
             secret: KeySecret | None = None) -> Mapped:
    """Map and validate rows: ledger entries for valid ones, rejects with every problem for the rest
    (``secret``: the store's key secret, for datasets whose keys pseudonymise ID numbers)."""
    accepted: list[LedgerEntry] = []
    rejects: list[Reject] = []
    map_entry = mapping.map_entry  # the generated function where there is one (gateway.mapping.fast)
    for key, data, read_problems in rows:
        entry, problems, record_key = map_entry(data, today, source, key, secret=secret)
        if entry is not None and not read_problems:
            accepted.append(entry)
        else:
            rejects.append(Reject(source, key, mapping.dataset.name, record_key, [*read_problems, *problems],
                                  _raw(data)))
    return accepted, rejects


def _raw(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.date | dt.datetime) else v) for k, v in row.items()}


class MappingMoved(Exception):
    """The file on disk is not the version the daemon compiled: edited since (the daemon reloads it shortly)
    or broken (the daemon keeps the version it has)."""


def _held(path: str, version: int) -> InboundMapping | OutboundMapping:
    """The file compiled at the daemon's version, compiled once per worker."""
    held = _COMPILED.get(path)
    if held is None or held[0] != version:
        try:
            loaded = load_mapping(path)
        except (ConfigError, OSError) as exc:  # unreadable now: the daemon still has its version
            raise MappingMoved(f"{path}: {exc}") from None
        if loaded.version != version:
            raise MappingMoved(f"{path} changed since the daemon compiled it")
        if len(_COMPILED) >= _KEEP:
            _COMPILED.clear()
        held = _COMPILED[path] = (version, loaded)
    return held[1]


def _compiled(path: str, version: int, kind: type[M]) -> M:
    mapping = _held(path, version)
    if not isinstance(mapping, kind):
        raise MappingMoved(f"{path} is not an {kind.__name__} now")
    return mapping


def _map_in_worker(path: str, version: int, source: str, rows: Rows, today: dt.date,
                   secret: KeySecret | None) -> Mapped:
    return map_rows(_compiled(path, version, InboundMapping), source, rows, today, secret)


def _read_in_worker(reader: Callable[[Any, int], SourceBatch], cursor: Any, limit: int, source: str,
                    mappings: Sequence[tuple[str, int, KeySecret | None]], today: dt.date
                    ) -> tuple[SourceBatch, int, Mapped | None]:
    """Read a page with the source's page reader and map it with each mapping (path, version, key secret).
    The batch comes back with the rows of accepted entries that are not upserts only (gateway.pipeline.intake.Page), or
    with all its rows and no mapping when a mapping file is not the daemon's version (MappingMoved)."""
    batch = reader(cursor, limit)
    try:
        compiled = [(_compiled(path, version, InboundMapping), secret) for path, version, secret in mappings]
    except MappingMoved:
        return batch, len(batch.rows), None
    rows = [(row.key, row.data, row.problems) for row in batch.rows]
    accepted: list[LedgerEntry] = []
    rejects: list[Reject] = []
    for mapping, secret in compiled:
        ok, bad = map_rows(mapping, source, rows, today, secret)
        accepted += ok
        rejects += bad
    kept = {e.source_key for e in accepted if e.operation != "upsert"}
    return replace(batch, rows=[row for row in batch.rows if row.key in kept]), len(rows), (accepted, rejects)


def _warm_up(mappings: Sequence[tuple[str, int]]) -> None:
    """Compile mapping files ahead of the first page (a file already changed on disk is compiled later)."""
    for path, version in mappings:
        with contextlib.suppress(MappingMoved):
            _held(path, version)


def _ignore(future: Future[Any]) -> None:
    """A warm-up that failed (the pool shut down, a worker died) leaves the work to the first real task."""
    with contextlib.suppress(BaseException):
        future.result()


def _encode_in_worker(plan: EncodePlan, batch_id: str, rows: Sequence[Candidate], today: dt.date) -> Encoded:
    kept = _PLANS.get(plan.key)
    if kept is None:
        if len(_PLANS) >= _KEEP:
            _PLANS.clear()
        kept = _PLANS[plan.key] = plan
    mapping = _compiled(plan.mapping_path, plan.mapping_version, OutboundMapping)
    return encode_stored(kept, mapping, batch_id, rows, today)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: a worker must not outlive a daemon that was killed (SIGKILL gives it no chance)."""
    tune_process()
    with contextlib.suppress(OSError, AttributeError):  # Linux: the kernel signals us when the parent dies
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()


def _watch_parent(parent: int) -> None:
    """Elsewhere (or as a second line of defence): poll for re-parenting."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


_PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def _main_module_left_behind() -> Iterator[None]:
    """Processes spawned inside do not import the daemon's main module.

    A spawned process first imports the parent's ``__main__`` again, so that functions defined there can be
    unpickled. Everything a worker runs lives in importable modules (gateway's, an adapter's), never in the
    main script; and the main module is the console script, which imports the whole command line (the store,
    the web side, every adapter): measured, that was 0.2 s of a worker's 0.6 s start, and the first page waits
    for it. A module without a spec or file in its place tells multiprocessing there is nothing to import."""
    real = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = real


def _start_quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker with its stderr on /dev/null, before the pool needs it.

    The tracker is a process of its own that inherits the daemon's stderr, which is the JSON log. When the
    daemon is killed (SIGKILL), the tracker cleans up the pool's semaphores and warns about each "leaked" one
    in plain text, into the log, after the daemon's last line. Nothing is lost by silencing it: it only ever
    writes when the daemon died without closing the pool, and the clean-up itself still happens."""
    if os.name != "posix":
        return
    from multiprocessing import resource_tracker

    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)  # the tracker's stderr; ours is restored at once
            resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class MapPool:
    """A small process pool for mapping pages of rows (``workers=0`` maps in-process)."""

    def __init__(self, workers: int, min_rows: int = 200) -> None:
        self.min_rows = min_rows
        self._workers = workers
        if workers > 0:
            _start_quiet_resource_tracker()
        self._pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                          initializer=_die_with_parent, initargs=(os.getpid(),))
                      if workers > 0 else None)

    def warm(self, mappings: Sequence[tuple[str, int]]) -> None:
        """Start the worker processes now and have them compile these mapping files (path, version), without
        waiting: a process pool starts its workers on first use, which would hold up the first page."""
        if self._pool is None:
            return
        with _main_module_left_behind():  # the pool starts its processes in submit()
            for _ in range(self._workers):
                self._pool.submit(_warm_up, list(mappings)).add_done_callback(_ignore)

    def offloads(self, rows: int) -> bool:
        """True when a batch of ``rows`` goes to a worker process."""
        return self._pool is not None and rows >= self.min_rows

    async def encode(self, plan: EncodePlan, batch_id: str, rows: Sequence[Candidate],
                     mapping: OutboundMapping, today: dt.date) -> Encoded:
        """Encode and seal a batch in a worker process (gateway.pipeline.encode.encode_stored); here, with ``mapping``
        (the daemon's compiled copy), when the file on disk is no longer that version."""
        if self._pool is None:
            raise RuntimeError("encode() needs worker processes")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, _encode_in_worker, plan, batch_id, list(rows), today)
        except MappingMoved:
            return encode_stored(plan, mapping, batch_id, rows, today)

    async def read(self, reader: Callable[[Any, int], SourceBatch], cursor: Any, limit: int, source: str,
                   mappings: Sequence[tuple[str, int, KeySecret | None]], today: dt.date
                   ) -> tuple[SourceBatch, int, Mapped | None]:
        """Read and map a page in a worker process (:func:`_read_in_worker`)."""
        if self._pool is None:
            raise RuntimeError("read() needs worker processes")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _read_in_worker, reader, cursor, limit, source,
                                          list(mappings), today)

    async def map(self, mapping: InboundMapping, source: str, rows: Rows, today: dt.date,
                  secret: KeySecret | None = None) -> Mapped:
        if self._pool is None or len(rows) < self.min_rows:
            return map_rows(mapping, source, rows, today, secret)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, _map_in_worker, mapping.path, mapping.version, source,
                                              list(rows), today, secret)
        except MappingMoved:  # mapped here with the version the daemon compiled
            return map_rows(mapping, source, rows, today, secret)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
