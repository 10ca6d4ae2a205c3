"""The batch a partner pushes to an inbound channel: what is signed, in JSON or XML.

JSON (inside a ``cms`` or ``sm`` envelope, or plain on an internal ``none`` channel)::

    {"batchId": "b-2026-0001", "channel": "platform", "dataset": "penalty",
     "sentAt": "2026-11-21T08:00:00Z", "nonce": "<at least 16 random characters>",
     "records": [{"<partner field>": "<value>", ...}, ...]}

XML (the ``xmldsig`` profile signs the whole document; a ``cms``/``sm`` envelope may carry it too)::

    <batch batchId="b-2026-0001" channel="platform" dataset="penalty" sentAt="2026-11-21T08:00:00Z" nonce="…">
      <record><field name="cfjdswh">苏市监罚〔2026〕1号</field>…</record>
    </batch>

``channel`` and ``dataset`` are inside the signature so a batch signed for one channel cannot be replayed on
another; ``sentAt`` and ``nonce`` let the receiver refuse stale and replayed batches; ``batchId`` makes a
retry idempotent. Record values are text, numbers or booleans (XML: text); nested values are refused per record.

Two optional heads, both inside the signature and part of ``contentSha256`` (a batch without them is read,
and digested, exactly as before)::

    "snapshot": {"scope": "BLACK-2026", "id": "s-…", "page": 1, "last": false}
    "list": {"code": "BLACK-2026", "type": "严重失信主体名单", "version": 7, "digest": "<sha256 hex>",
             "count": 120, "fromVersion": 6}

``snapshot`` marks the batch as page ``page`` of full snapshot ``id`` of ``scope`` (the first natural-key
part, e.g. a list code): on the ``last`` page the receiver withdraws the scope's keys no page named
(:class:`gateway.adapter.SnapshotPage`); a snapshot page may have no records (an empty list). ``list`` says what a
credit list is once the batch is applied -- its version, type, membership digest and count, and for a delta
the version it starts from -- so ``lists status`` can compare the sender's end with ours. In XML they are
empty elements before the records: ``<snapshot scope="…" id="…" page="1" last="false"/>``,
``<list code="…" version="7" …/>``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.domain.lists import ListState, SnapshotMark
from gateway.errors import GatewayError
from gateway.sealing.xmlsafe import parse_xml, write_records
from gateway.text import control_reason

MAX_RECORDS = 10_000
MAX_INT32 = 2**31 - 1  # cg_inbound_snapshot_pages.page is an INTEGER column (32 bits on PostgreSQL)
MAX_INT64 = 2**63 - 1
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_NONCE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,128}$")
HEADER = ("batchId", "channel", "dataset", "sentAt", "nonce")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BatchError(GatewayError):
    """The signed content is not a valid batch; the message names the field."""


@dataclass(frozen=True)
class InboundBatch:
    batch_id: str
    channel: str
    dataset: str
    sent_at: dt.datetime
    nonce: str
    records: Sequence[Mapping[str, Any]]
    snapshot: SnapshotMark | None = None
    list_state: ListState | None = None

    def content_sha256(self) -> str:
        """SHA-256 of channel, dataset, records and the heads present (canonical JSON): equal for a retry."""
        return content_digest(self.channel, self.dataset, self.records, self.heads())

    def heads(self) -> dict[str, dict[str, Any]]:
        """The optional heads present, as they appear in the JSON batch."""
        heads: dict[str, dict[str, Any]] = {}
        if self.snapshot is not None:
            heads["snapshot"] = self.snapshot.as_json()
        if self.list_state is not None:
            heads["list"] = self.list_state.as_json()
        return heads


def content_digest(channel: str, dataset: str, records: Sequence[Mapping[str, Any]],
                   heads: Mapping[str, Any] | None = None) -> str:
    doc = {"channel": channel, "dataset": dataset, "records": list(records), **(heads or {})}
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- reading

def parse_batch(body: bytes) -> InboundBatch:
    """A batch from its signed content, JSON or XML (by its first character)."""
    start = body.lstrip()[:1]
    if start == b"<":
        return _from_xml(body)
    if start == b"{":
        return _from_json(body)
    raise BatchError("the signed content is neither a JSON object nor an XML document")


def _from_json(body: bytes) -> InboundBatch:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BatchError(f"the batch is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BatchError("the batch must be a JSON object")
    records = doc.get("records")
    if not isinstance(records, list):
        raise BatchError("records: expected a list of objects")
    snapshot = _snapshot_head(doc["snapshot"], text=False) if doc.get("snapshot") is not None else None
    listed = _list_head(doc["list"], text=False) if doc.get("list") is not None else None
    return _checked({k: doc.get(k) for k in HEADER}, records, snapshot, listed)


def _from_xml(body: bytes) -> InboundBatch:
    root = parse_xml(body, "batch")
    if root.tag != "batch":
        raise BatchError(f"the XML root must be <batch> (no namespace), not <{root.tag}>")
    records = []
    for i, node in enumerate(root.iterchildren("record"), start=1):
        fields: dict[str, Any] = {}
        for item in node.iterchildren("field"):
            name = item.get("name")
            if not name:
                raise BatchError(f"records[{i}]: a <field> without a name attribute")
            fields[name] = item.text or ""
        records.append(fields)
    snap, listed = root.find("snapshot"), root.find("list")
    snapshot = _snapshot_head(dict(snap.attrib), text=True) if snap is not None else None
    list_state = _list_head(dict(listed.attrib), text=True) if listed is not None else None
    return _checked({k: root.get(k) for k in HEADER}, records, snapshot, list_state)


def _checked(head: Mapping[str, Any], records: list[Any], snapshot: SnapshotMark | None = None,
             list_state: ListState | None = None) -> InboundBatch:
    for name in HEADER:
        if not isinstance(head[name], str) or not head[name]:
            raise BatchError(f"{name}: required (a non-empty string)")
    if not _ID.match(head["batchId"]):
        raise BatchError("batchId: 1-128 characters of A-Z a-z 0-9 . _ : - (starting with a letter or digit)")
    if not _NONCE.match(head["nonce"]):
        raise BatchError("nonce: 16-128 characters of A-Z a-z 0-9 . _ ~ + / = - (a fresh random value per request)")
    if not records and snapshot is None:
        raise BatchError("records: the batch has no records (only a snapshot page may be empty)")
    if len(records) > MAX_RECORDS:
        raise BatchError(f"records: {len(records)} records; at most {MAX_RECORDS} per batch")
    for i, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise BatchError(f"records[{i}]: expected an object of partner field names and values")
    if snapshot is not None and list_state is not None and list_state.code != snapshot.scope:
        raise BatchError(f"list.code: {list_state.code!r} is not the snapshot's scope {snapshot.scope!r}")
    return InboundBatch(head["batchId"], head["channel"], head["dataset"], _sent_at(head["sentAt"]), head["nonce"],
                        records, snapshot, list_state)


def _object(raw: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise BatchError(f"{name}: expected an object")
    return raw


def _text_field(raw: Mapping[str, Any], name: str, where: str, *, required: bool = True) -> str:
    value = raw.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > 128:
        raise BatchError(f"{where}.{name}: {'required: ' if required else ''}a string of at most 128 characters")
    if reason := control_reason(value):  # a scope or list code is a key part: stored, shown, compared
        raise BatchError(f"{where}.{name}: {reason}")
    return value


def _int_field(raw: Mapping[str, Any], name: str, where: str, *, text: bool, minimum: int,
               required: bool = True, maximum: int = MAX_INT64) -> int | None:
    """An integer in ``minimum..maximum`` (the store's column must hold it); in XML (``text``) the attribute's
    digits, at most 19 of them (Python refuses to convert thousands, and nothing here needs more)."""
    value = raw.get(name)
    if value is None and not required:
        return None
    if text and isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        raise BatchError(f"{where}.{name}: expected an integer ≥ {minimum} and ≤ {maximum}, got {shown}")
    return value


def _snapshot_head(raw: Any, *, text: bool) -> SnapshotMark:
    head = _object(raw, "snapshot")
    unknown = sorted(set(head) - {"scope", "id", "page", "last"})
    if unknown:
        raise BatchError(f"snapshot.{unknown[0]}: unknown; known: scope, id, page, last")
    snapshot_id = _text_field(head, "id", "snapshot")
    if not _ID.match(snapshot_id):
        raise BatchError("snapshot.id: 1-128 characters of A-Z a-z 0-9 . _ : - (starting with a letter or digit)")
    last = head.get("last")
    if text and last in ("true", "false"):
        last = last == "true"
    if not isinstance(last, bool):
        raise BatchError(f"snapshot.last: expected true or false, got {last!r}")
    page = _int_field(head, "page", "snapshot", text=text, minimum=1, maximum=MAX_INT32)
    assert page is not None
    return SnapshotMark(_text_field(head, "scope", "snapshot"), snapshot_id, page, last)


def _list_head(raw: Any, *, text: bool) -> ListState:
    head = _object(raw, "list")
    known = {"code", "type", "version", "digest", "count", "fromVersion"}
    unknown = sorted(set(head) - known)
    if unknown:
        raise BatchError(f"list.{unknown[0]}: unknown; known: {', '.join(sorted(known))}")
    digest = _text_field(head, "digest", "list", required=False)
    if digest and not _SHA256.match(digest):
        raise BatchError("list.digest: the membership digest as 64 lower-case hex characters (SHA-256)")
    version = _int_field(head, "version", "list", text=text, minimum=0)
    assert version is not None
    return ListState(_text_field(head, "code", "list"), version, _text_field(head, "type", "list", required=False),
                     digest, _int_field(head, "count", "list", text=text, minimum=0, required=False),
                     _int_field(head, "fromVersion", "list", text=text, minimum=0, required=False))


def _sent_at(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BatchError(f"sentAt: not an ISO 8601 timestamp: {text[:40]!r}") from None
    if moment.tzinfo is None:
        raise BatchError("sentAt: needs a time zone (e.g. 2026-11-21T08:00:00Z or +08:00)")
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00: in UTC it is past the last representable day
        raise BatchError(f"sentAt: {text[:40]!r} is out of range") from None


# ---------------------------------------------------------------- writing (the client side)

def batch_json(batch: InboundBatch) -> bytes:
    return orjson.dumps({"batchId": batch.batch_id, "channel": batch.channel, "dataset": batch.dataset,
                         "sentAt": utc_text(batch.sent_at), "nonce": batch.nonce, **batch.heads(),
                         "records": list(batch.records)})


def as_xml_text(batch: InboundBatch) -> InboundBatch:
    """The batch as the receiver reads it back from XML: every value is text (None is empty)."""
    records = [{str(k): "" if v is None else str(v) for k, v in record.items()} for record in batch.records]
    return dataclasses.replace(batch, records=records)


def batch_xml(batch: InboundBatch) -> bytes:
    attributes = {"batchId": batch.batch_id, "channel": batch.channel, "dataset": batch.dataset,
                  "sentAt": utc_text(batch.sent_at), "nonce": batch.nonce}
    heads = [(name, {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in values.items()})
             for name, values in batch.heads().items()]
    return write_records("batch", attributes, batch.records, heads)
