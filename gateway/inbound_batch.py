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

from gateway.errors import GatewayError
from gateway.xmlsafe import parse_xml, write_records

MAX_RECORDS = 10_000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_NONCE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,128}$")
HEADER = ("batchId", "channel", "dataset", "sentAt", "nonce")


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

    def content_sha256(self) -> str:
        """SHA-256 of channel, dataset and records (canonical JSON): equal for a retry of the same batch."""
        return content_digest(self.channel, self.dataset, self.records)


def content_digest(channel: str, dataset: str, records: Sequence[Mapping[str, Any]]) -> str:
    doc = {"channel": channel, "dataset": dataset, "records": list(records)}
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
    return _checked({k: doc.get(k) for k in HEADER}, records)


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
    return _checked({k: root.get(k) for k in HEADER}, records)


def _checked(head: Mapping[str, Any], records: list[Any]) -> InboundBatch:
    for name in HEADER:
        if not isinstance(head[name], str) or not head[name]:
            raise BatchError(f"{name}: required (a non-empty string)")
    if not _ID.match(head["batchId"]):
        raise BatchError("batchId: 1-128 characters of A-Z a-z 0-9 . _ : - (starting with a letter or digit)")
    if not _NONCE.match(head["nonce"]):
        raise BatchError("nonce: 16-128 characters of A-Z a-z 0-9 . _ ~ + / = - (a fresh random value per request)")
    if not records:
        raise BatchError("records: the batch has no records")
    if len(records) > MAX_RECORDS:
        raise BatchError(f"records: {len(records)} records; at most {MAX_RECORDS} per batch")
    for i, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise BatchError(f"records[{i}]: expected an object of partner field names and values")
    return InboundBatch(head["batchId"], head["channel"], head["dataset"], _sent_at(head["sentAt"]), head["nonce"],
                        records)


def _sent_at(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BatchError(f"sentAt: not an ISO 8601 timestamp: {text[:40]!r}") from None
    if moment.tzinfo is None:
        raise BatchError("sentAt: needs a time zone (e.g. 2026-11-21T08:00:00Z or +08:00)")
    return moment.astimezone(dt.UTC)


# ---------------------------------------------------------------- writing (the client side)

def batch_json(batch: InboundBatch) -> bytes:
    return orjson.dumps({"batchId": batch.batch_id, "channel": batch.channel, "dataset": batch.dataset,
                         "sentAt": utc_text(batch.sent_at), "nonce": batch.nonce, "records": list(batch.records)})


def as_xml_text(batch: InboundBatch) -> InboundBatch:
    """The batch as the receiver reads it back from XML: every value is text (None is empty)."""
    records = [{str(k): "" if v is None else str(v) for k, v in record.items()} for record in batch.records]
    return dataclasses.replace(batch, records=records)


def batch_xml(batch: InboundBatch) -> bytes:
    attributes = {"batchId": batch.batch_id, "channel": batch.channel, "dataset": batch.dataset,
                  "sentAt": utc_text(batch.sent_at), "nonce": batch.nonce}
    return write_records("batch", attributes, batch.records)
