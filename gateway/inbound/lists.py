"""Snapshot and list heads of pushed batches: what a channel accepts, and which records a snapshot may carry.

A batch may say it is a page of a full snapshot of one scope (``snapshot``) and what a credit list is after it
(``list``; :mod:`gateway.inbound.batch`). A snapshot can withdraw a whole list, so a channel takes one only when
it is configured to (``snapshots = true``), and only records of the snapshot's scope count as its content: a
record of another scope is refused (it would be neither swept nor meant), with the reason, and quarantined like
any refused record. List heads make sense on a ``credit_list`` channel only.
"""

from __future__ import annotations

from gateway.domain.datasets import CREDIT_LIST
from gateway.errors import Problem
from gateway.inbound.batch import BatchError, InboundBatch
from gateway.records import LedgerEntry
from gateway.store.lists import scope_prefix
from gateway.stored import Reject
from gateway.web.config import Channel

Mapped = list[tuple[LedgerEntry | None, Reject | None]]  # per record, in the batch's order (gateway.inbound.service)


def check_heads(channel: Channel, batch: InboundBatch) -> None:
    """BatchError when the batch's heads do not fit the channel."""
    if batch.snapshot is not None and not channel.snapshots:
        raise BatchError(f"snapshot: channel {channel.name} does not take full snapshots "
                         "(set snapshots = true in its [inbound.channels] table to allow them)")
    if batch.list_state is not None and channel.dataset != CREDIT_LIST.name:
        raise BatchError(f"list: channel {channel.name} takes {channel.dataset}, not credit lists")


def keep_in_scope(mapped: Mapped, batch: InboundBatch, source: str) -> Mapped:
    """A snapshot page's records outside its scope become rejects naming the scope."""
    if batch.snapshot is None:
        return mapped
    scope = batch.snapshot.scope
    prefix = scope_prefix(scope)
    out: Mapped = []
    for n, (entry, reject) in enumerate(mapped, start=1):
        if entry is None or entry.key.startswith(prefix):
            out.append((entry, reject))
            continue
        problem = Problem("snapshot.scope", f"record {n} (key {entry.key}) is not in the snapshot's scope {scope}")
        raw = dict(batch.records[n - 1])
        out.append((None, Reject(source, entry.source_key, entry.dataset, entry.key, [problem], raw)))
    return out
