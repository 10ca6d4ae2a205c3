"""Credit-list digests, the same at every end (platform, ledger, targets, the sandbox).

* the **membership digest** of a list: SHA-256 over the sorted subject identifiers (USCC or ID number, one per
  line) of its listed entries; the platform announces it with each version, the ledger must match it;
* a target's **content digest**: SHA-256 over its sorted ``identity<TAB>digest`` lines.

A pushed batch of list entries says which page of a snapshot it is (:class:`SnapshotMark`) and what the
sender says each list is once it is applied (:class:`ListState`). Status, drift repair and conflicts, which
need the store and the targets, are in gateway.jobs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


def membership_digest(subjects: Iterable[str]) -> str:
    """SHA-256 (hex) over the sorted, distinct subject identifiers of a list, joined by newlines."""
    return hashlib.sha256("\n".join(sorted(set(subjects))).encode()).hexdigest()


def content_digest(rows: Mapping[str, str]) -> str:
    """SHA-256 (hex) over a target's rows as sorted ``identity<TAB>digest`` lines."""
    return hashlib.sha256("\n".join(f"{k}\t{v}" for k, v in sorted(rows.items())).encode()).hexdigest()


@dataclass(frozen=True)
class SnapshotMark:
    """The batch is page ``page`` (from 1) of full snapshot ``snapshot_id`` of ``scope``; ``last`` on its final page."""

    scope: str
    snapshot_id: str
    page: int
    last: bool

    def as_json(self) -> dict[str, Any]:
        return {"scope": self.scope, "id": self.snapshot_id, "page": self.page, "last": self.last}


@dataclass(frozen=True)
class ListState:
    """What the sender says a credit list is once the batch is applied (``from_version``: a delta's start)."""

    code: str
    version: int
    list_type: str = ""
    digest: str = ""
    count: int | None = None
    from_version: int | None = None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"code": self.code, "version": self.version}
        optional = {"type": self.list_type, "digest": self.digest, "count": self.count,
                    "fromVersion": self.from_version}
        doc.update({k: v for k, v in optional.items() if v not in (None, "")})
        return doc
