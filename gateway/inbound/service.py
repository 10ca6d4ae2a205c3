"""The inbound side: verify a pushed batch, take it in like any source's rows, answer with our signed receipt.

What :meth:`InboundService.receive` checks, in order, each refusal an :class:`InboundRefused` with the HTTP
status and a clear message, and nothing stored:

1. the channel exists (404), and when the client showed a TLS certificate, its subject may push here (403);
2. XML is parsed with :mod:`gateway.sealing.xmlsafe` first (DTD, entities, size: 400);
3. the envelope opens with our key and its signature verifies, chaining to the channel's CAs, by an allowed
   peer (certificates: 403 naming the problem). A body that does not decrypt or whose signature does not verify
   gets one and the same answer whatever the reason (CBC envelopes: no padding oracle); the log has the detail;
4. the signed content is a batch for this channel and dataset (400), sent within the timestamp window (400),
   whose snapshot and list heads the channel takes (400; :mod:`gateway.inbound.lists`);
5. in one store transaction: the nonce was not seen before (409, a replay), the batch id is new or a retry with
   the same records (the original answer) and not different records (409); a snapshot page or list delta fits
   what was received before (409; :mod:`gateway.store.inbound_lists`); then the records are mapped with
   the channel's inbound mapping and committed like any source's (rejects quarantined with their reasons; a
   snapshot's last page withdraws the keys of its scope that no page named),
   and the batch is stored with our answer: per-record results and a receipt signed like the platform's
   (:mod:`gateway.sealing.target`), so a partner verifies us exactly as we verify the platform.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.domain.subject_keys import KeySecret
from gateway.errors import GatewayError, Problem
from gateway.inbound.batch import BatchError, InboundBatch, parse_batch, utc_text
from gateway.inbound.lists import check_heads, keep_in_scope
from gateway.mapping import InboundMapping
from gateway.records import LedgerEntry
from gateway.sealing import get_profile
from gateway.sealing.base import CertificateError, EnvelopeError, Opened
from gateway.sealing.signatures import sign_detached
from gateway.sealing.target import receipt_bytes, results_digest
from gateway.sealing.xmlsafe import XmlRefused, parse_xml
from gateway.store import Store
from gateway.store.inbound import Accepted, Arrival, InboundConflict
from gateway.stored import Reject
from gateway.web.config import Channel, InboundConfig

log = logging.getLogger("gateway.inbound")
CHINA = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")
UNOPENED = ("the envelope cannot be opened: it is not for our key, it was altered, or its signature does not "
            "verify")


class InboundRefused(GatewayError):
    """A pushed batch is refused: the HTTP status, a short kind and a message for the sender."""

    def __init__(self, status: int, kind: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.detail = detail or message  # for the log only

    def body(self) -> dict[str, str]:
        return {"error": self.kind, "message": self.message}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class InboundService:
    """Receives batches for the configured channels; the HTTP layer is :mod:`gateway.web.inbound`."""

    def __init__(self, config: InboundConfig, store: Store, routes: Mapping[str, Sequence[str]], *,
                 receiver: str, clock: Callable[[], dt.datetime] = _utcnow,
                 on_commit: Callable[[], None] = lambda: None) -> None:
        self.config, self.store, self.routes = config, store, routes
        self.receiver, self.clock, self.on_commit = receiver, clock, on_commit
        self.mappings: dict[str, InboundMapping] = {n: c.mapping for n, c in config.channels.items()}

    def channel(self, name: str) -> Channel:
        channel = self.config.channels.get(name)
        if channel is None:
            raise InboundRefused(404, "channel", f"no inbound channel {name!r}")
        return channel

    async def receive(self, name: str, body: bytes, tls_subject: str | None = None) -> dict[str, Any]:
        """Verify, take in and answer one pushed batch; :class:`InboundRefused` when it is refused."""
        channel = self.channel(name)
        now = self.clock()
        if tls_subject is not None and tls_subject not in channel.peer.allowed_signers:
            raise InboundRefused(403, "peer", f"the TLS client '{tls_subject}' may not push to channel {name}")
        opened = await self._open(channel, body, tls_subject, now)
        batch = self._batch(channel, opened.body, now)
        mapping = self.mappings.get(channel.name, channel.mapping)
        secret = await self.store.key_secret() if mapping.dataset.pseudonymised_key else None
        arrival, mapped = self._arrival(channel, mapping, batch, body, opened, now, secret)
        accepted = await self._store(channel, arrival, mapped, batch, now)
        if accepted.kind == "new" and accepted.intake is not None and accepted.intake.accepted:
            self.on_commit()
        assert accepted.answer is not None  # replays were refused above
        log.info("inbound batch %s", "accepted" if accepted.kind == "new" else "repeated: original answer sent",
                 extra={"channel": name, "batch": batch.batch_id, "signer": opened.signer_subject,
                        "records": len(batch.records), "rejected": accepted.answer.get("failSize")})
        return accepted.answer

    # ------------------------------------------------------------ 2-3: XML, envelope, signer

    async def _open(self, channel: Channel, body: bytes, tls_subject: str | None, now: dt.datetime) -> Opened:
        if channel.profile == "xmldsig" or body.lstrip()[:1] == b"<":
            try:
                parse_xml(body, "request body", max_bytes=self.config.settings.max_body_bytes)
            except XmlRefused as exc:
                raise InboundRefused(400, "xml", str(exc)) from None
        if channel.profile == "none":  # internal link: mutual TLS named the sender
            digest = hashlib.sha256(body).hexdigest()
            return Opened(body, tls_subject or "", "", b"", digest)
        if channel.ours is None:
            raise InboundRefused(500, "config", f"channel {channel.name} has no key to open envelopes")
        profile = get_profile(channel.profile)
        try:
            return await asyncio.to_thread(profile.open, body, channel.ours, channel.peer, now=now)
        except CertificateError as exc:
            if "not a readable" in str(exc):  # read before the signature was checked: answer as unopened
                raise InboundRefused(400, "envelope", UNOPENED, str(exc)) from None
            raise InboundRefused(403, "certificate", str(exc)) from None
        except EnvelopeError as exc:
            raise InboundRefused(400, "envelope", UNOPENED, str(exc)) from None

    # ------------------------------------------------------------ 4: the batch, its channel and time

    def _batch(self, channel: Channel, content: bytes, now: dt.datetime) -> InboundBatch:
        try:
            batch = parse_batch(content)
            check_heads(channel, batch)
        except (BatchError, XmlRefused) as exc:
            raise InboundRefused(400, "batch", str(exc)) from None
        if batch.channel != channel.name:
            raise InboundRefused(400, "batch", f"channel: the batch is for channel {batch.channel!r}, "
                                               f"not {channel.name!r}")
        if batch.dataset != channel.dataset:
            raise InboundRefused(400, "batch", f"dataset: channel {channel.name} takes {channel.dataset}, "
                                               f"not {batch.dataset!r}")
        window = self.config.settings.timestamp_window_s
        skew = (now - batch.sent_at).total_seconds()
        if abs(skew) > window:
            when = "old" if skew > 0 else "in the future"
            raise InboundRefused(400, "stale", f"sentAt {utc_text(batch.sent_at)} is {abs(skew):.0f} s {when} by "
                                               f"our clock; the window is ±{window:g} s")
        return batch

    # ------------------------------------------------------------ 5: mapping, the store, our answer

    def _arrival(self, channel: Channel, mapping: InboundMapping, batch: InboundBatch, body: bytes, opened: Opened,
                 now: dt.datetime, secret: KeySecret | None) -> tuple[Arrival, Mapped]:
        mapped = map_records(mapping, channel.source, batch, now.astimezone(CHINA).date(), secret)
        mapped = keep_in_scope(mapped, batch, channel.source)
        return Arrival(channel.name, channel.source, batch.batch_id, channel.dataset, batch.nonce,
                       opened.signer_subject, batch.content_sha256(), body, hashlib.sha256(body).hexdigest(),
                       [e for e, _ in mapped if e is not None], [r for _, r in mapped if r is not None],
                       len(batch.records), batch.snapshot, batch.list_state), mapped

    async def _store(self, channel: Channel, arrival: Arrival, mapped: Mapped, batch: InboundBatch,
                     now: dt.datetime) -> Accepted:
        async def answer(changed: Sequence[tuple[LedgerEntry, int]]) -> dict[str, Any]:
            return await self._answer(channel, arrival, record_results(mapped, changed), now)

        try:
            accepted = await self.store.inbound.accept_inbound(arrival, self.routes, now.timestamp(),
                                                       self.config.settings.nonce_retention_s, answer)
        except InboundConflict as exc:
            raise InboundRefused(409, "conflict", str(exc)) from None
        if accepted.kind == "replay":
            raise InboundRefused(409, "replay", f"nonce {batch.nonce} was used before: the batch is a replay "
                                                "(a retry needs a fresh nonce and sentAt)")
        return accepted

    async def _answer(self, channel: Channel, arrival: Arrival, results: list[dict[str, Any]],
                      now: dt.datetime) -> dict[str, Any]:
        failed = sum(1 for r in results if r["status"] == "rejected")
        receipt = {"receiptId": f"r-{uuid.uuid4()}", "batchId": arrival.batch_id, "channel": channel.name,
                   "dataset": channel.dataset, "bodySha256": arrival.body_sha256,
                   "contentSha256": arrival.content_sha256, "receivedAt": utc_text(now), "receiver": self.receiver,
                   "successSize": len(results) - failed, "failSize": failed, "resultsSha256": results_digest(results)}
        answer: dict[str, Any] = {"errorCode": "200", "errorMsg": "成功", "batchId": arrival.batch_id,
                                  "totalSize": len(results), "successSize": len(results) - failed,
                                  "failSize": failed, "results": results, "receipt": receipt}
        if channel.ours is not None:
            signature = await asyncio.to_thread(sign_detached, receipt_bytes(receipt), channel.ours)
            answer["receiptSignature"] = base64.b64encode(signature).decode()
        return answer


Mapped = list[tuple[LedgerEntry | None, Reject | None]]  # per record, in the batch's order


def map_records(mapping: InboundMapping, source: str, batch: InboundBatch, today: dt.date,
                secret: KeySecret | None = None) -> Mapped:
    """Each record mapped and validated; a record's source key is its record key when it has one (``secret``:
    the store's key secret, for datasets whose keys pseudonymise ID numbers)."""
    out: Mapped = []
    for n, row in enumerate(batch.records, start=1):
        nested = [Problem(k, "nested values are not accepted") for k, v in row.items() if isinstance(v, dict | list)]
        mapped = mapping.map_row({k: v for k, v in row.items() if not isinstance(v, dict | list)}, today, source,
                                 secret=secret)
        source_key = mapped.key if mapped.key and all(mapped.key.split("|")) else f"{batch.batch_id}#{n}"
        if mapped.record is not None and not nested:
            out.append((dataclasses.replace(mapped.record, source_key=source_key).entry(), None))
        else:
            out.append((None, Reject(source, source_key, mapping.dataset.name, mapped.key,
                                     [*nested, *mapped.problems], dict(row))))
    return out


def record_results(mapped: Mapped, changed: Sequence[tuple[LedgerEntry, int]]) -> list[dict[str, Any]]:
    """Per record, in the batch's order: accepted (a new version), unchanged, or rejected with its reasons."""
    versions = {id(entry): version for entry, version in changed}
    results: list[dict[str, Any]] = []
    for n, (entry, reject) in enumerate(mapped, start=1):
        if entry is not None:
            version = versions.get(id(entry))
            status = {"status": "accepted", "version": version} if version else {"status": "unchanged"}
            results.append({"index": n, "recordKey": entry.key, **status})
        elif reject is not None:
            results.append({"index": n, "recordKey": reject.record_key, "status": "rejected",
                            "errors": [{"field": p.path, "message": p.message} for p in reject.problems]})
    return results
