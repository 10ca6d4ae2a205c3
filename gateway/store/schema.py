"""The store's tables (SQLAlchemy Core), portable across SQLite and PostgreSQL.

Timestamps are UTC epoch seconds (``Float``): portable, cheap to compare and to index. JSON lives in
``Text`` columns written with orjson. Nothing here is dialect-specific; the few dialect differences
(upserts, row locking) are handled in :mod:`gateway.store.database`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import (
    Column,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    select,
    text,
)

SCHEMA_VERSION = 2  # 2: the outbox is indexed by ledger row (record_id), not by key (gateway.store.database.migrate)

metadata = MetaData()

meta = Table(
    "cg_meta", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

watermarks = Table(
    "cg_watermarks", metadata,
    Column("source", String(128), primary_key=True),
    Column("cursor", Text, nullable=False),  # JSON, adapter-defined
    Column("updated_at", Float, nullable=False),
)

# One row per intake transaction: what a source delivered and what became of it.
intake = Table(
    "cg_intake", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(128), nullable=False),
    Column("at", Float, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("accepted", Integer, nullable=False),
    Column("unchanged", Integer, nullable=False),
    Column("quarantined", Integer, nullable=False),
    Column("cursor", Text, nullable=False),
)

# The update value ("mark") of every source row last taken into the store, by the source's own key: a look-back
# re-read recognises a row it has taken already, and the source audit compares the source with it
# (gateway.pipeline.audit).
source_marks = Table(
    "cg_source_marks", metadata,
    Column("source", String(128), primary_key=True),
    Column("source_key", String(256), primary_key=True),
    Column("mark", Text, nullable=False),
)

# One row per source audit: what it compared, re-read and recovered.
source_audits = Table(
    "cg_source_audits", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(128), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("rows", Integer, nullable=False),  # rows in the source
    Column("ranges", Integer, nullable=False),
    Column("differing", Integer, nullable=False),  # key ranges whose digest differed from the ledger's
    Column("reread", Integer, nullable=False),  # rows read again in full
    Column("recovered", Integer, nullable=False),  # rows that made a new version or a new quarantine entry
)

# The ledger: the current version of every natural key.
records = Table(
    "cg_records", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset", String(32), nullable=False),
    Column("record_key", String(400), nullable=False),
    Column("version", Integer, nullable=False),
    Column("operation", String(16), nullable=False),
    Column("content_hash", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("source", String(128), nullable=False),
    Column("source_key", String(256), nullable=False),
    Column("decision_date", String(10), nullable=True),
    Column("first_seen_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("dataset", "record_key", name="uq_records_key"),
)

quarantine = Table(
    "cg_quarantine", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("qkey", String(700), nullable=False, unique=True),
    Column("stage", String(16), nullable=False),  # mapping | target
    Column("source", String(128), nullable=False),
    Column("source_key", String(256), nullable=False),
    Column("target", String(128), nullable=False),
    Column("dataset", String(32), nullable=False),
    Column("record_key", String(400), nullable=False),
    Column("reasons", Text, nullable=False),  # JSON list of {field, message[, code]}
    Column("raw", Text, nullable=False),  # JSON: the source row, or the canonical payload for target rejects
    Column("state", String(16), nullable=False),  # open | resolved
    Column("hits", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_quarantine_state", "state", "stage"),
)

batches = Table(
    "cg_batches", metadata,
    Column("id", String(64), primary_key=True),  # the idempotency key
    Column("target", String(128), nullable=False),
    Column("dataset", String(32), nullable=False),
    Column("state", String(16), nullable=False),  # open | done | dead | replayed
    Column("record_count", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),  # the request body (gateway.stored.pack_body), resent unchanged
    Column("body_sha256", String(64), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),  # while a sender holds it: when its claim expires
    Column("claimed_by", String(160), nullable=True),  # "instance:pid" of the sender that last took it
    Column("last_error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("completed_at", Float, nullable=True),
    Index("ix_batches_target_state", "target", "state", "next_attempt_at"),
)

outbox = Table(
    "cg_outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("target", String(128), nullable=False),
    Column("dataset", String(32), nullable=False),
    Column("record_key", String(400), nullable=False),
    Column("record_id", Integer, nullable=True),  # the key's ledger row (cg_records.id): set on every new row
    Column("version", Integer, nullable=False),
    # pending | leased | delivered | rejected | dead | superseded | replayed | withheld
    Column("state", String(16), nullable=False),
    Column("batch_id", String(64), ForeignKey("cg_batches.id"), nullable=True),
    Column("enqueued_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # Only pending rows are in the queue index, so leasing and acknowledging do not rewrite it; the record
    # index leaves state out for the same reason (a key has a handful of rows per target at most). Rows are
    # found by ledger row id, not by key (outbox_of_keys below): ids of new records only grow, so queueing a
    # page of new records appends to that index, where an index on the keys took a write all over it per
    # record (measured: a fifth of the store's disk writes at 300,000 rows).
    Index("ix_outbox_queue", "target", "dataset", "id", sqlite_where=text("state = 'pending'"),
          postgresql_where=text("state = 'pending'")),
    Index("ix_outbox_record", "record_id", "target"),
    Index("ix_outbox_batch", "batch_id"),
)


def outbox_of_keys(dataset: str, keys: Sequence[str]) -> ColumnElement[bool]:
    """The outbox rows of some keys of a dataset (through the ledger's key index, then ix_outbox_record)."""
    r = records.c
    return outbox.c.record_id.in_(select(r.id).where(and_(r.dataset == dataset, r.record_key.in_(list(keys)))))


def outbox_of_key(dataset: str, key: str) -> ColumnElement[bool]:
    """The outbox rows of one key of a dataset."""
    r = records.c
    return outbox.c.record_id == select(r.id).where(and_(r.dataset == dataset, r.record_key == key)).scalar_subquery()

attempts = Table(
    "cg_attempts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", String(64), nullable=False, index=True),
    Column("at", Float, nullable=False),
    Column("outcome", String(16), nullable=False),  # ok | retry | dead
    Column("detail", Text, nullable=False),
    Column("duration_ms", Float, nullable=False),
)

receipts = Table(
    "cg_receipts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", String(64), nullable=False, unique=True),
    Column("target", String(128), nullable=False),
    Column("receipt_id", String(128), nullable=False),
    Column("received_at", Float, nullable=False),
    Column("accepted", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("body", Text, nullable=False),  # the peer's answer as received (JSON)
    Index("ix_receipts_target", "target", "received_at"),
)

events = Table(
    "cg_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False, index=True),
    Column("kind", String(32), nullable=False),
    Column("target", String(128), nullable=False),
    Column("dataset", String(32), nullable=False),
    Column("record_key", String(400), nullable=False),
    Column("detail", Text, nullable=False),
)

heartbeats = Table(
    "cg_heartbeats", metadata,
    Column("instance", String(128), primary_key=True),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("beat_at", Float, nullable=False),
    Column("state", Text, nullable=False),  # JSON: circuits, in-flight counts
)

# Full snapshots in progress (gateway.adapter.SnapshotPage): the keys each page named, so the final page can
# withdraw the scope's keys no page named. Rows of a scope are deleted when its snapshot completes.
snapshot_seen = Table(
    "cg_snapshot_seen", metadata,
    Column("source", String(128), primary_key=True),
    Column("scope", String(128), primary_key=True),
    Column("record_key", String(400), primary_key=True),
    Column("snapshot_id", String(64), nullable=False),
)

# Credit-list entries by subject (gateway.domain.lists): which list and type each ledger key is on, whether it is
# still listed, and whether a red-list entry is held back because its subject is on a black list.
list_entries = Table(
    "cg_list_entries", metadata,
    Column("record_key", String(400), primary_key=True),  # a credit_list ledger key
    Column("list_code", String(64), nullable=False),
    Column("list_type", String(32), nullable=False),
    Column("subject", String(64), nullable=False),  # USCC, or the ID number of a natural person
    Column("active", Integer, nullable=False),  # 1 while listed (the ledger's operation is not withdraw)
    Column("held", Integer, nullable=False),  # 1: a red entry held back from targets (black-list conflict)
    Column("held_by", String(400), nullable=True),  # the black-list key that holds it back
    Column("updated_at", Float, nullable=False),
    Index("ix_list_entries_subject", "subject"),
    Index("ix_list_entries_list", "list_code"),
)

# The inbound endpoint: nonces seen within the retention period (a second use is a replay), and every batch
# accepted with the answer we gave (our signed receipt), so a retry of a batch gets the same answer.
inbound_nonces = Table(
    "cg_inbound_nonces", metadata,
    Column("channel", String(128), primary_key=True),
    Column("nonce", String(128), primary_key=True),
    Column("batch_id", String(128), nullable=False),
    Column("seen_at", Float, nullable=False, index=True),
)

inbound_batches = Table(
    "cg_inbound_batches", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(128), nullable=False),
    Column("batch_id", String(128), nullable=False),
    Column("dataset", String(32), nullable=False),
    Column("signer", String(1000), nullable=False),  # subject of the certificate that signed the batch
    Column("content_sha256", String(64), nullable=False),  # the batch's records (canonical JSON): retries match it
    Column("body_sha256", String(64), nullable=False),  # the request body as received (the sealed envelope)
    Column("body", LargeBinary, nullable=False),  # request body (gateway.stored.pack_body): the partner's signed batch
    Column("received_at", Float, nullable=False),
    Column("records", Integer, nullable=False),
    Column("accepted", Integer, nullable=False),
    Column("unchanged", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("answer", Text, nullable=False),  # our answer (JSON): per-record results, receipt, its signature
    UniqueConstraint("channel", "batch_id", name="uq_inbound_batch"),
    Index("ix_inbound_received", "received_at"),
)

# Pages of full snapshots pushed to an inbound channel (gateway.store.inbound_lists): which pages of which
# snapshot arrived, so the last page is taken only after every other page, and a page of a snapshot that a
# newer one superseded (or that is complete) is refused.
inbound_snapshot_pages = Table(
    "cg_inbound_snapshot_pages", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(128), nullable=False),
    Column("scope", String(128), nullable=False),
    Column("snapshot_id", String(128), nullable=False),
    Column("page", Integer, nullable=False),
    Column("last", Integer, nullable=False),  # 1 on the snapshot's final page
    Column("batch_id", String(128), nullable=False),
    Column("received_at", Float, nullable=False),
    UniqueConstraint("channel", "scope", "snapshot_id", "page", name="uq_inbound_snapshot_page"),
    Index("ix_inbound_snapshot_scope", "channel", "scope"),
)

# Publication rules (gateway.store.changes, gateway.store.publicity): every revocation, objection and withdrawal
# a record went through, and each penalty record's publicity period. Additive: the ledger is unchanged.
changes = Table(
    "cg_changes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset", String(32), nullable=False),
    Column("record_key", String(400), nullable=False),
    Column("version", Integer, nullable=False),
    Column("operation", String(16), nullable=False),  # revoke | object | withdraw
    Column("reason", String(64), nullable=False),  # withdraw_reason (信用修复, 公示期满, …) or ""
    Column("origin", String(16), nullable=False),  # source | publicity (the gateway's own expiry withdrawal)
    Column("at", Float, nullable=False),
    Index("ix_changes_key", "dataset", "record_key", "version"),
    Index("ix_changes_at", "at"),
)

publicity = Table(
    "cg_publicity", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset", String(32), nullable=False),
    Column("record_key", String(400), nullable=False),
    Column("version", Integer, nullable=False),  # the ledger version the dates were computed from
    Column("decision_date", String(10), nullable=True),
    Column("min_end", String(10), nullable=True),  # ISO dates; NULL: no rule matched
    Column("max_end", String(10), nullable=True),
    Column("min_rule", String(200), nullable=False),
    Column("max_rule", String(200), nullable=False),
    Column("computed_at", Float, nullable=False),
    Column("handled_version", Integer, nullable=True),  # ledger version the expiry job last settled
    Column("withdrawn_version", Integer, nullable=True),  # the gateway's withdraw (公示期满), if it made one
    Column("withdrawn_at", Float, nullable=True),
    Column("withdrawn_targets", Text, nullable=False),  # JSON list: public targets sent the withdrawal
    UniqueConstraint("dataset", "record_key", name="uq_publicity_key"),
    Index("ix_publicity_max_end", "max_end"),
)
