"""The store's side of list snapshots and deltas pushed to an inbound channel, and the reads behind
``credit-gateway inbound``.

Pushed pages are separate requests: they may arrive out of order, twice, or not at all, and a newer snapshot
may start while an older one is unfinished. So, inside the batch's intake transaction (before its records are
taken in), :func:`snapshot_problem` keeps ``cg_inbound_snapshot_pages`` and refuses

* a page of a snapshot that a newer snapshot of the same scope has superseded, or that is already complete;
* a page number already received (under another batch id: a retry of the same batch never gets here);
* a last page while an earlier page is missing -- the withdrawal of what the snapshot did not name must see
  every page, so it waits until they are all in (the sender pushes the missing ones, then the last page again).

:func:`list_cursor` keeps the channel's cursor in the form a list source keeps it (``versions``: applied version
per list, ``announced``: what the sender said the list is), so ``lists status`` shows the sender's end next to
the ledger's. A snapshot's version is applied with its last page; a delta that names the version it starts
from must start from the applied one (else a delta went missing and is refused).
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.lists import ListState, SnapshotMark
from gateway.store import schema as s


def _pages(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)


async def snapshot_problem(conn: AsyncConnection, channel: str, batch_id: str, mark: SnapshotMark,
                           now: float) -> str | None:
    """Why this snapshot page cannot be taken now, or None after noting it (in the caller's transaction)."""
    p = s.inbound_snapshot_pages.c
    rows = (await conn.execute(select(p.snapshot_id, p.page, p.last, p.batch_id).where(and_(
        p.channel == channel, p.scope == mark.scope)).order_by(p.id))).all()
    ours = [r for r in rows if r.snapshot_id == mark.snapshot_id]
    name = f"snapshot {mark.snapshot_id} of {mark.scope}"
    if ours and rows[-1].snapshot_id != mark.snapshot_id:
        return f"{name} was superseded by snapshot {rows[-1].snapshot_id}: push a new snapshot"
    done = [r for r in ours if r.last]
    if done:
        return f"{name} is complete (its last page was batch {done[0].batch_id}): push a new snapshot"
    same = [r for r in ours if r.page == mark.page]
    if same:
        return f"page {mark.page} of {name} was received before as batch {same[0].batch_id}"
    if mark.last:
        later = sorted(r.page for r in ours if r.page > mark.page)
        if later:
            return f"page(s) {_pages(later)} of {name} were received, so page {mark.page} cannot be its last"
        missing = sorted(set(range(1, mark.page)) - {r.page for r in ours})
        if missing:
            return (f"{name} is missing page(s) {_pages(missing)}: push them, then the last page again "
                    "(nothing was withdrawn)")
    await conn.execute(s.inbound_snapshot_pages.insert().values(
        channel=channel, scope=mark.scope, snapshot_id=mark.snapshot_id, page=mark.page, last=int(mark.last),
        batch_id=batch_id, received_at=now))
    return None


async def list_cursor(conn: AsyncConnection, source: str, cursor: dict[str, Any], state: ListState | None,
                      snapshot: SnapshotMark | None) -> tuple[dict[str, Any], str | None]:
    """The channel's new cursor (``cursor`` plus the list versions kept so far), or a reason to refuse a delta."""
    w = s.watermarks.c
    row = (await conn.execute(select(w.cursor).where(w.source == source))).first()
    before = orjson.loads(row[0]) if row is not None else None
    before = before if isinstance(before, dict) else {}
    versions: dict[str, Any] = dict(before.get("versions") or {})
    announced: dict[str, Any] = dict(before.get("announced") or {})
    if state is not None:
        applied = versions.get(state.code)
        if snapshot is None and state.from_version is not None and applied != state.from_version:
            have = f"version {applied} is applied here" if applied is not None else "no snapshot was taken here yet"
            return cursor, (f"list {state.code}: the delta starts at version {state.from_version}, but {have}: "
                            "push the deltas in between, or a snapshot")
        announced[state.code] = {"listType": state.list_type, "version": state.version, "digest": state.digest,
                                 "count": state.count}
        if snapshot is None or snapshot.last:
            versions[state.code] = state.version
    if not versions and not announced:
        return cursor, None
    return {**cursor, "versions": versions, "announced": announced}, None


# ---------------------------------------------------------------- reads for `credit-gateway inbound`

def receipt_of(answer: str) -> dict[str, Any]:
    parsed = orjson.loads(answer)
    receipt = parsed.get("receipt") if isinstance(parsed, dict) else None
    return {"receipt_id": receipt.get("receiptId") if isinstance(receipt, dict) else None,
            "signed": bool(isinstance(parsed, dict) and parsed.get("receiptSignature"))}


def snapshot_of(scope: str | None, snapshot_id: str | None, page: int | None, last: int | None
                 ) -> dict[str, Any] | None:
    if snapshot_id is None:
        return None
    return {"scope": scope, "id": snapshot_id, "page": page, "last": bool(last)}
