"""A client for a gateway's inbound endpoint: build a batch, seal it, POST it, verify the gateway's receipt.

Used by the tests and by anything that pushes lists or cases to a gateway (the sandbox, a partner's script)::

    client = InboundClient(url, "platform", "penalty", "cms", ours=Credentials(key, cert),
                           gateway=Peer(gateway_cert, (ca,)))
    answer = await client.send([{"cfjdswh": "…", …}, …])    # raises PushRefused, or returns a verified answer

A retry of the same batch (same ``batch_id`` and records) must carry a fresh nonce and ``sentAt``:
:meth:`InboundClient.retry` makes one; the gateway answers it with the original receipt.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ssl
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from gateway.domain.lists import ListState, SnapshotMark
from gateway.errors import GatewayError
from gateway.inbound.batch import (
    InboundBatch,
    as_xml_text,
    batch_json,
    batch_xml,
    new_nonce,
)
from gateway.sealing import get_profile
from gateway.sealing.base import Credentials, EnvelopeError, Peer
from gateway.sealing.target import CONTENT_TYPES, Sealing


class PushRefused(GatewayError):
    """The gateway refused the batch (or its answer did not verify); ``status`` and ``kind`` say why."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(f"HTTP {status} {kind}: {message}")
        self.status, self.kind, self.message = status, kind, message


@dataclass(frozen=True)
class Pushed:
    """What the endpoint answered: the status and the JSON body."""

    status: int
    answer: dict[str, Any]


@dataclass(frozen=True)
class InboundClient:
    url: str  # the endpoint's base URL, e.g. https://gateway.example:8471
    channel: str
    dataset: str
    profile: str  # cms | sm | xmldsig | none
    ours: Credentials | None = field(default=None, repr=False)  # signs the batch
    gateway: Peer | None = None  # we encrypt to its certificate, and its receipts must be signed by it
    ssl_context: ssl.SSLContext | None = None  # HTTPS: trust and (mutual TLS) our client certificate
    xml: bool = False  # send the batch as XML (always for xmldsig)
    timeout_s: float = 30.0

    def batch(self, records: Sequence[Mapping[str, Any]], batch_id: str | None = None,
              sent_at: dt.datetime | None = None, nonce: str | None = None, *, snapshot: SnapshotMark | None = None,
              list_state: ListState | None = None) -> InboundBatch:
        """A new batch; ``snapshot`` marks it as a page of a full snapshot, ``list_state`` says what the list is."""
        return InboundBatch(batch_id or f"b-{uuid.uuid4().hex}", self.channel, self.dataset,
                            sent_at or dt.datetime.now(dt.UTC), nonce or new_nonce(), list(records), snapshot,
                            list_state)

    @staticmethod
    def retry(batch: InboundBatch, sent_at: dt.datetime | None = None) -> InboundBatch:
        """The same batch again, with a fresh nonce and sentAt."""
        return dataclasses.replace(batch, nonce=new_nonce(), sent_at=sent_at or dt.datetime.now(dt.UTC))

    @property
    def content_type(self) -> str:
        if self.profile == "none":
            return "application/xml" if self.xml else "application/json"
        return CONTENT_TYPES[self.profile]

    @property
    def sends_xml(self) -> bool:
        return self.xml or self.profile == "xmldsig"

    def seal(self, batch: InboundBatch) -> bytes:
        body = batch_xml(batch) if self.sends_xml else batch_json(batch)
        if self.profile == "none":
            return body
        if self.ours is None or self.gateway is None:
            raise EnvelopeError(f"profile {self.profile}: our credentials and the gateway's certificate are needed")
        return get_profile(self.profile).seal(body, self.ours, self.gateway)

    async def post(self, body: bytes, content_type: str | None = None) -> Pushed:
        """POST bytes as they are (tests send altered ones); connection errors become GatewayError."""
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        headers = {"Content-Type": content_type or self.content_type}
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                    f"{self.url.rstrip('/')}/inbound/{self.channel}", data=body, headers=headers,
                    ssl=self.ssl_context if self.ssl_context is not None else True) as response:
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            raise GatewayError(f"cannot push to {self.url}: {type(exc).__name__}: {exc}") from exc
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = {"error": "http", "message": raw[:200].decode(errors="replace")}
        return Pushed(response.status, answer if isinstance(answer, dict) else {"answer": answer})

    async def push(self, batch: InboundBatch) -> Pushed:
        return await self.post(self.seal(batch))

    async def send(self, records: Sequence[Mapping[str, Any]] | InboundBatch) -> dict[str, Any]:
        """Push a batch and return the gateway's answer once its receipt verifies; PushRefused otherwise."""
        batch = records if isinstance(records, InboundBatch) else self.batch(records)
        pushed = await self.push(batch)
        if pushed.status != 200:
            raise PushRefused(pushed.status, str(pushed.answer.get("error")), str(pushed.answer.get("message")))
        self.verify(pushed.answer, batch)
        return pushed.answer

    def verify(self, answer: Mapping[str, Any], batch: InboundBatch) -> None:
        """The receipt names this batch and its records, its results match, and the gateway signed it."""
        receipt = answer.get("receipt")
        if not isinstance(receipt, dict) or receipt.get("batchId") != batch.batch_id:
            raise PushRefused(200, "receipt", f"the receipt does not name batch {batch.batch_id}")
        sent = as_xml_text(batch) if self.sends_xml else batch
        if receipt.get("contentSha256") != sent.content_sha256():
            raise PushRefused(200, "receipt", "the receipt names other records than the batch sent")
        if self.profile != "none" or answer.get("receiptSignature"):
            try:
                Sealing(self.profile, self.ours, self.gateway, require_signed_receipts=True).verify_receipt(answer)
            except EnvelopeError as exc:
                raise PushRefused(200, "receipt", str(exc)) from exc
