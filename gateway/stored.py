"""What the store keeps and the mapping workers make or read: request bodies as stored, outbox rows read for
encoding, leased records, and rejected source rows.

It imports no database code: a worker process (gateway.cpu) needs these and nothing of SQLAlchemy, which
would add a quarter of a second to every worker's start.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import Problem

RAW_BODY = b"\x00"  # a zlib stream never starts with this byte: what follows it is stored as it is
_SAMPLE = 4096


def pack_body(body: bytes) -> bytes:
    """A request body as the store keeps it: zlib-compressed when that pays (JSON, XML), else as it is, marked
    (a sealed envelope is ciphertext: compressing megabytes of it cost a sixth of the daemon's time for nothing).
    A sample of the start decides."""
    if len(body) > _SAMPLE and len(zlib.compress(body[:_SAMPLE], 1)) > _SAMPLE * 0.9:
        return RAW_BODY + body
    return zlib.compress(body, 1)


def unpack_body(stored: bytes) -> bytes:
    """The body as sent or received (also reads bodies stored compressed by earlier versions)."""
    return stored[1:] if stored[:1] == RAW_BODY else zlib.decompress(stored)


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


Candidate = tuple[int, str, int, str, bytes]  # outbox id, record key, version, operation, canonical JSON


@dataclass(frozen=True, slots=True)
class LeasedRecord:
    outbox_id: int
    record_key: str
    version: int
    operation: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reject:
    """A source row that failed mapping or validation."""

    source: str
    source_key: str
    dataset: str
    record_key: str
    problems: Sequence[Problem]
    raw: Mapping[str, Any]
