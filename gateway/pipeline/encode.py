"""A target's view of ledger records: the route's field policy, ID masking, outbound mapping, and the batch body.

:func:`route_record` turns one leased record into what a target receives. :func:`encode_rows` does it for a
batch and builds the body with the adapter's encoder; it runs in the daemon, or for a large batch in a
mapping worker process (gateway.pipeline.workers), from an :class:`EncodePlan` that crosses the process boundary: the
records go over as the ledger stored them (canonical JSON) and the body comes back sealed, compressed and
digested, so neither the parsing nor the mapping, serialising or sealing takes the daemon's time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from gateway.adapter import BodyEncoder, TargetRecord
from gateway.domain.identifiers import mask_id
from gateway.domain.publicity import PUBLISHED, PublicitySettings
from gateway.mapping import MappingError, OutboundMapping
from gateway.sealing.target import Sealing
from gateway.stored import Candidate, LeasedRecord, body_digest, pack_body

# Canonical payload → the payload a target gets (e.g. the computed 公示截止期), before masking and mapping.
Derive = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]


class RoutePolicy(Protocol):
    """What a route lets a target see (gateway.config.TargetConfig has these)."""

    @property
    def omit_fields(self) -> frozenset[str]: ...

    @property
    def personal_ids(self) -> str: ...


@dataclass(frozen=True)
class Route:
    """A route's field policy on its own (picklable: a worker process applies it)."""

    omit_fields: frozenset[str]
    personal_ids: str  # mask | full | omit


def route_record(cfg: RoutePolicy, mapping: OutboundMapping, personal_fields: frozenset[str],
                 rec: LeasedRecord, derive: Derive | None = None) -> TargetRecord:
    """A ledger record as this target receives it: derived fields (e.g. the computed 公示截止期), the route's
    field policy, ID masking, outbound mapping."""
    payload: Mapping[str, Any] = rec.payload if derive is None else derive(mapping.dataset.name, rec.payload)
    omit = cfg.omit_fields  # the route's field policy (loops over the few names: this runs for every record)
    if omit and any(name in payload for name in omit):
        payload = {k: v for k, v in payload.items() if k not in omit}
    personal = [name for name in personal_fields if name in payload] if cfg.personal_ids != "full" else ()
    if personal:
        payload = dict(payload)
        for name in personal:
            if cfg.personal_ids == "omit":
                del payload[name]
            else:
                payload[name] = mask_id(str(payload[name]))
    fields = mapping.map_payload(payload, rec.operation, rec.record_key, rec.version)
    return TargetRecord(rec.record_key, rec.version, rec.operation, fields)


@dataclass(frozen=True)
class Encoded:
    """A batch's body and what went into it: outbox ids included, and (outbox id, reason) of those that could
    not be encoded."""

    body: bytes
    included: list[int]
    failed: list[tuple[int, str]]
    stored: tuple[bytes, str] | None = None  # the body as the store keeps it, and its SHA-256
    withheld: list[int] = field(default_factory=list)  # not sent: publicity had ended (EncodePlan.publicity)


@dataclass(frozen=True)
class EncodePlan:
    """Everything needed to encode one target's batches of one dataset, picklable. ``key`` names the plan in a
    worker's cache (it changes with the mapping file's version): what the worker builds from it, such as the
    compiled mapping and the publicity rules' remembered end dates, is kept between batches."""

    key: str
    target: str
    dataset: str
    route: Route
    mapping_path: str
    mapping_version: int
    personal_fields: frozenset[str]
    derive: Derive | None
    body: BodyEncoder
    sealing: Sealing  # the target's envelope (its PEMs cross with the plan: the worker seals too)
    picklable: bool = True  # False: ``body`` is a bound method of an adapter, the daemon encodes itself
    # A public-facing target's publicity rules: a published state (upsert, object) of a record whose maximum
    # publicity end is today or earlier is not sent there (a historical backfill would publish it again).
    publicity: PublicitySettings | None = None


def ended(rules: PublicitySettings, dataset: str, rec: LeasedRecord, today: dt.date) -> bool:
    """True when ``rec`` is a published state (upsert, object) of a record whose maximum publicity end under
    ``rules`` is ``today`` or earlier: a public target must not get it (the publicity job withdraws a record on
    that day; one first read later, e.g. in a backfill of old records, would otherwise be published again)."""
    if rec.operation not in PUBLISHED or dataset not in rules.datasets:
        return False
    end = rules.max_end(dataset, rec.payload)
    return end is not None and end <= today


def encode_rows(plan: EncodePlan, mapping: OutboundMapping, batch_id: str, rows: Sequence[Candidate],
                today: dt.date) -> Encoded:
    """The body of a batch from candidate rows as stored; a record its mapping refuses is left out with the
    reason (it is quarantined for this target), and one whose publicity ended by ``today`` (:func:`ended`) is
    left out (withheld)."""
    records: list[TargetRecord] = []
    included: list[int] = []
    failed: list[tuple[int, str]] = []
    withheld: list[int] = []
    route, personal, derive, publicity = plan.route, plan.personal_fields, plan.derive, plan.publicity
    for outbox_id, key, version, operation, stored in rows:
        try:
            rec = LeasedRecord(outbox_id, key, version, operation, orjson.loads(stored))
            if publicity is not None and ended(publicity, plan.dataset, rec, today):
                withheld.append(outbox_id)
                continue
            records.append(route_record(route, mapping, personal, rec, derive))
            included.append(outbox_id)
        except (MappingError, ValueError, KeyError) as exc:
            failed.append((outbox_id, f"cannot encode for {plan.target}: {exc}"))
    body = plan.body(batch_id, plan.dataset, mapping.table_code, records) if records else b""
    return Encoded(body, included, failed, withheld=withheld)


def encode_stored(plan: EncodePlan, mapping: OutboundMapping, batch_id: str, rows: Sequence[Candidate],
                  today: dt.date) -> Encoded:
    """:func:`encode_rows`, then the body sealed (once: the stored, resent and evidenced bytes), compressed and
    digested as the store keeps it."""
    done = encode_rows(plan, mapping, batch_id, rows, today)
    if not done.body:
        return done
    body = plan.sealing.seal(done.body)
    return Encoded(body, done.included, done.failed, (pack_body(body), body_digest(body)), done.withheld)
