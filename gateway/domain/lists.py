"""Credit-list digests, the same at every end (platform, ledger, targets, the sandbox).

* the **membership digest** of a list: SHA-256 over the sorted subject identifiers (USCC or ID number, one per
  line) of its listed entries; the platform announces it with each version, the ledger must match it;
* a target's **content digest**: SHA-256 over its sorted ``identity<TAB>digest`` lines.

Status, drift repair and conflicts, which need the store and the targets, are in gateway.jobs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping


def membership_digest(subjects: Iterable[str]) -> str:
    """SHA-256 (hex) over the sorted, distinct subject identifiers of a list, joined by newlines."""
    return hashlib.sha256("\n".join(sorted(set(subjects))).encode()).hexdigest()


def content_digest(rows: Mapping[str, str]) -> str:
    """SHA-256 (hex) over a target's rows as sorted ``identity<TAB>digest`` lines."""
    return hashlib.sha256("\n".join(f"{k}\t{v}" for k, v in sorted(rows.items())).encode()).hexdigest()
