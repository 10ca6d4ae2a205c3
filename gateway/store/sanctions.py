"""What the store knows about the joint-sanction loop: cases, feedback, and their deliveries with receipts.

Read-only queries for :mod:`gateway.domain.sanctions`. Sanction cases number in the thousands, not millions, so
the rows are read whole and grouped in Python; payloads are parsed here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CASES = "sanction_case"
FEEDBACK = "sanction_feedback"


@dataclass(frozen=True, slots=True)
class LedgerCase:
    key: str
    operation: str
    payload: dict[str, Any]
    first_seen_at: float


@dataclass(frozen=True, slots=True)
class LedgerFeedback:
    key: str
    case_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row of a case or feedback record, with the receipt of its batch when there is one."""

    dataset: str
    key: str
    target: str
    version: int
    state: str  # pending | leased | delivered | rejected | dead | superseded | replayed | withheld
    receipt_id: str | None
    received_at: float | None


@dataclass(frozen=True)
class SanctionRows:
    cases: list[LedgerCase]
    feedback: list[LedgerFeedback]
    deliveries: list[Delivery]
