"""The source audit: finds the rows a poll missed (committed later than the look-back window) and takes them in.

Polling reads the rows after a watermark; a row that commits with an update time further behind it than the
look-back window is never read (docs/sources.md). The audit compares the source with the ledger's marks (the
update value of every row taken, gateway.store.audits): the source lists its rows' keys and update values only
(``Auditing.audit_marks``), in key order; each range of ``range_rows`` keys is hashed on both sides, and only the
rows of a range whose digests differ are read again in full and go through the normal intake (mapping, ledger
versions, outbox), so what it recovers is sent like any change; each row it recovers is an event
(``source.recovered``) written with it. It runs between polls (the intake's lock).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.adapter import Auditing
from gateway.errors import ConfigError, Problem
from gateway.pipeline.calls import bounded
from gateway.pipeline.intake import Intake
from gateway.store.audits import AuditResult

log = logging.getLogger("gateway.audit")
RANGE_ROWS = 500


async def audit_source(intake: Intake, range_rows: int = RANGE_ROWS) -> AuditResult:
    """Audit one source now; the result is recorded in the store (``status``) and logged."""
    name, adapter = intake.cfg.name, intake.cfg.adapter
    if not isinstance(adapter, Auditing):
        raise ConfigError([Problem(f"sources.{name}.type", f"a {intake.cfg.type} source cannot be audited")],
                          f"source {name}")
    started = time.monotonic()
    async with intake.lock:
        cursor = await intake.store.intake.load_cursor(name)
        listed = await bounded(adapter.audit_marks(cursor), intake.sem, intake.timeout_s, f"source {name}")
        ranges, differing, stale = await _differing(intake, listed, range_rows)
        reread, recovered = await _take(intake, adapter, stale)
    result = AuditResult(name, len(listed), ranges, differing, reread, recovered,
                         round(time.monotonic() - started, 3))
    await intake.store.audits.record(result)
    log.log(logging.WARNING if recovered else logging.INFO, "source audited", extra={
        "source": name, "rows": result.rows, "ranges": ranges, "differing": result.differing, "reread": reread,
        "recovered": recovered, "s": result.duration_s})
    if recovered:
        intake.on_commit()
    return result


async def _differing(intake: Intake, listed: Sequence[tuple[str, tuple[Any, ...], str]],
                     range_rows: int) -> tuple[int, int, list[tuple[str, tuple[Any, ...], str]]]:
    """How many ranges there are and differ, and the rows whose mark differs in those that differ."""
    stale: list[tuple[str, tuple[Any, ...], str]] = []
    ranges = differing = 0
    for start in range(0, len(listed), range_rows):
        part = listed[start:start + range_rows]
        ranges += 1
        stored = await intake.store.audits.marks(intake.cfg.name, [key for key, _v, _m in part])
        theirs = _digest((key, stored.get(key, "")) for key, _v, _m in part)
        if _digest((key, mark) for key, _v, mark in part) != theirs:
            differing += 1
            stale += [row for row in part if stored.get(row[0]) != row[2]]
    return ranges, differing, stale


async def _take(intake: Intake, adapter: Auditing, stale: Sequence[tuple[str, tuple[Any, ...], str]]
                ) -> tuple[int, int]:
    """Read the stale rows in full and take them in like a page (no cursor): (rows read, rows recovered)."""
    reread = recovered = 0
    size = intake.cfg.batch_size
    for start in range(0, len(stale), size):
        keys = [values for _k, values, _m in stale[start:start + size]]
        batch = await bounded(adapter.fetch_keys(keys), intake.sem, intake.timeout_s, f"source {intake.cfg.name}")
        accepted, rejects = await intake.map_rows(batch)
        for screen in intake.screens:
            accepted, rejects = await screen(accepted, rejects, batch, intake.today())
        result = await intake.store.intake.commit_intake(intake.cfg.name, accepted, rejects, None, intake.routes,
                                                         len(batch.rows), marks=batch.marks, recovered=True)
        reread += len(batch.rows)
        recovered += result.accepted + result.quarantined
    return reread, recovered


def _digest(pairs: Iterable[tuple[str, str]]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for key, mark in pairs:
        h.update(key.encode())
        h.update(b"\x1f")
        h.update(mark.encode())
        h.update(b"\x1e")
    return h.digest()
