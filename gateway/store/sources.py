"""Which ledger record a source row became: the link from a department's row back to the record key.

The ledger keeps, with every record, the source and the source's own key of the row it came from (for a
SQL source the row's key columns, e.g. ``id``). The demo uses it to change a delivered record the way the
department would: by updating its row, found from the record it became.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceRecord:
    record_key: str
    source_key: str
    version: int
    operation: str
