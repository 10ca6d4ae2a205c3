"""Canonical records: what moves through the gateway, independent of any source or target format.

A :class:`Record` is one state of one natural key of a dataset. Its ``fields`` hold canonical values
(str, ``datetime.date``, ``decimal.Decimal``, ``list[str]``); the dataset definitions in
:mod:`gateway.domain.datasets` say which fields exist and how they are validated. The ledger gives each
change of a key a new ``version``; a record coming from a source has version 0 until the ledger numbers it.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

FieldValue = str | dt.date | Decimal | list[str] | None


class Operation(enum.StrEnum):
    """What a record state means for its publication."""

    UPSERT = "upsert"  # created or changed: publish this state
    REVOKE = "revoke"  # 撤销: the decision was revoked; targets mark it revoked
    OBJECT = "object"  # 异议: under objection; targets flag it
    WITHDRAW = "withdraw"  # publication ends: 信用修复 or end of the publicity period


@dataclass(frozen=True, slots=True)
class Record:
    """One state of one natural key of a dataset."""

    dataset: str
    key: str
    operation: Operation
    fields: Mapping[str, FieldValue]
    source: str = ""
    source_key: str = ""
    version: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The JSON-ready canonical content (dates as ISO strings, decimals as strings)."""
        return {name: to_json_value(value) for name, value in self.fields.items() if value is not None}

    def encoded(self) -> tuple[bytes, str]:
        """The canonical JSON (sorted keys) and a digest of operation + content, computed together."""
        return encode_fields(self.operation.value, {k: v for k, v in self.fields.items() if v is not None})

    def content_hash(self) -> str:
        """Equal hashes mean nothing changed."""
        return self.encoded()[1]

    def entry(self) -> LedgerEntry:
        """What the ledger stores for this state (small and picklable: built in worker processes too)."""
        return ledger_entry(self.dataset, self.key, self.operation.value,
                            {k: v for k, v in self.fields.items() if v is not None}, self.source, self.source_key)


class LedgerEntry(NamedTuple):
    """A record state ready for the ledger: canonical JSON and its digest, computed once.

    A named tuple, not a dataclass: worker processes send thousands of these back per page, and tuples
    unpickle several times faster.
    """

    dataset: str
    key: str
    operation: str
    body: bytes
    digest: str
    source: str
    source_key: str
    decision_date: str | None


def encode_fields(operation: str, fields: dict[str, FieldValue]) -> tuple[bytes, str]:
    """The canonical JSON (sorted keys) of fields that hold no None, and the digest of operation + JSON."""
    body = orjson.dumps(fields, default=_json_default, option=orjson.OPT_SORT_KEYS)  # dates: ISO strings
    return body, hashlib.blake2b(operation.encode() + b"|" + body, digest_size=16).hexdigest()


def ledger_entry(dataset: str, key: str, operation: str, fields: dict[str, FieldValue], source: str,
                 source_key: str) -> LedgerEntry:
    """A ledger entry from fields that hold no None: :meth:`Record.entry` without building the Record first
    (the mapping's generated code makes its fields without None, see :meth:`InboundMapping.map_entry`)."""
    body, digest = encode_fields(operation, fields)
    decision = fields.get("decision_date")
    return LedgerEntry(dataset, key, operation, body, digest, source, source_key,
                       decision.isoformat() if isinstance(decision, dt.date) else None)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json_value(value: FieldValue) -> Any:
    """Render one canonical value for JSON."""
    if isinstance(value, dt.date | Decimal):
        return value.isoformat() if isinstance(value, dt.date) else format(value, "f")
    return value


def make_key(*parts: str) -> str:
    """Join natural-key parts; '|' cannot occur in decision numbers or codes after normalisation."""
    return "|".join(part.replace("|", "/") for part in parts)


def from_payload(kinds: Mapping[str, str], payload: Mapping[str, Any]) -> dict[str, FieldValue]:
    """Canonical values back from their JSON form (``kinds``: field name → text|date|decimal|list|code)."""
    out: dict[str, FieldValue] = {}
    for name, value in payload.items():
        kind = kinds.get(name, "text")
        if kind == "date" and isinstance(value, str):
            out[name] = dt.date.fromisoformat(value)
        elif kind == "decimal" and value is not None:
            out[name] = Decimal(str(value))
        else:
            out[name] = value
    return out
