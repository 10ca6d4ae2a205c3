"""Evidence files: what was sent in a batch, and the receipt that proves it arrived, checkable offline.

An evidence file is a ZIP archive:

``manifest.json``   batch id, target, dataset, envelope profile, content type, record count, times, digests, and
                    ``receiptSigner``: who must have signed the receipt (``party`` "platform": the target's peer
                    certificate, or "us" for a batch we received), by subject and SHA-256 certificate fingerprint
``sent.bin``        the request body exactly as sent (for ``cms`` a DER CMS EnvelopedData: the platform opens it
                    with ``openssl cms -decrypt -inform DER -in sent.bin -recip platform.crt -inkey platform.key``)
``answer.json``     the platform's answer as stored (per-record results and the receipt)
``receipt.json``    the receipt's canonical bytes (JSON, sorted keys): what its signature covers
``receipt.sig``     the receipt's detached signature (DER CMS for RSA/EC, the ``sm`` container for SM2), if signed

:func:`verify_evidence` checks that the receipt names the batch and the SHA-256 of ``sent.bin``, that the
per-record results match the receipt's ``resultsSha256``, and (given trusted CA certificates) the receipt's
signature, made by the signer the manifest records (or the ``--signer`` subject given): a certificate from the
same CA, ours included, is not the platform. The manifest's batch id, receipt id and record count must be the
receipt's (and, for a plain JSON body, the body's). With openssl alone, for a CMS signature::

    openssl cms -verify -binary -inform DER -in receipt.sig -content receipt.json -CAfile ca.pem -out /dev/null \
        -certsout signer.pem      # then: openssl x509 -in signer.pem -noout -subject -fingerprint -sha256
    sha256sum sent.bin            # equals bodySha256 in receipt.json
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.sealing.base import EnvelopeError, fingerprint_sha256, load_certificates
from gateway.sealing.signatures import verify_detached
from gateway.sealing.target import Sealing, receipt_bytes, results_digest

PARTS = ("manifest.json", "sent.bin", "answer.json", "receipt.json")


class EvidenceError(GatewayError):
    """An evidence file is malformed or does not prove what it claims; the message says which check failed."""


@dataclass
class Verdict:
    """The outcome of checking one evidence file: each check with its result."""

    batch_id: str
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(passed for _, passed, _ in self.checks)

    def add(self, name: str, passed: bool, detail: str = "") -> None:
        self.checks.append((name, passed, detail))


def receipt_signer(party: str, cert_pems: Sequence[bytes]) -> dict[str, Any]:
    """The manifest's ``receiptSigner``: the subject of the first certificate (the peer's, or ours for a batch we
    received) and the SHA-256 fingerprints of all of them (a rotation's retired certificates after it)."""
    certs = [c for pem in cert_pems for c in load_certificates(pem, "the receipt signer's certificate")[:1]]
    return {"party": party, "subject": certs[0].subject.rfc4514_string() if certs else "",
            "sha256": [fingerprint_sha256(c) for c in certs]}


def build_evidence(batch: Mapping[str, Any], content_type: str, profile: str,
                   signer: Mapping[str, Any] | None = None) -> bytes:
    """The ZIP evidence for one batch as :meth:`Store.show_batch` returns it (with its receipt); ``signer``
    (:func:`receipt_signer`) is who must have signed the receipt."""
    receipt_row = batch.get("receipt")
    if receipt_row is None:
        raise EvidenceError(f"batch {batch['id']} has no receipt yet: nothing proves it arrived")
    answer = orjson.loads(receipt_row["body"])
    sent = batch["body_bytes"]
    manifest = {"batchId": batch["id"], "target": batch["target"], "dataset": batch["dataset"],
                "profile": profile, "contentType": content_type, "records": batch["record_count"],
                "createdAt": batch["created_at"], "receivedAt": receipt_row["received_at"],
                "sentSha256": hashlib.sha256(sent).hexdigest(), "receiptId": receipt_row["receipt_id"]}
    if signer is not None:
        manifest["receiptSigner"] = dict(signer)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        z.writestr("sent.bin", sent)
        z.writestr("answer.json", receipt_row["body"])
        receipt = answer.get("receipt")
        if isinstance(receipt, dict):
            z.writestr("receipt.json", receipt_bytes(receipt))
        signature = answer.get("receiptSignature")
        if signature:
            import base64

            z.writestr("receipt.sig", base64.b64decode(signature))
    return out.getvalue()


def target_evidence(batch: Mapping[str, Any], sealing: Sealing | None) -> bytes:
    """:func:`build_evidence` for a batch sent to a target sealed with ``sealing`` (None: no longer configured):
    its receipt must be signed by the target's peer certificate (or, during a rotation, a retired one)."""
    if sealing is None:
        return build_evidence(batch, "application/json", "none")
    peer = sealing.peer
    signer = receipt_signer("platform", [peer.cert_pem, *sealing.retired_peer_pems]) if peer is not None else None
    return build_evidence(batch, sealing.content_type, sealing.profile, signer)
MAX_PART_BYTES = 512 * 1024 * 1024  # a batch body is megabytes; a zip that unpacks to more is not ours


def _read(path: Path) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as z:
            big = [i.filename for i in z.infolist() if i.file_size > MAX_PART_BYTES]
            if big:
                raise EvidenceError(f"{path}: not an evidence file ({big[0]} unpacks to more than "
                                    f"{MAX_PART_BYTES} bytes)")
            return {name: z.read(name) for name in z.namelist()}
    except (OSError, zipfile.BadZipFile, KeyError, zlib.error, RuntimeError, EOFError) as exc:
        raise EvidenceError(f"{path}: not an evidence file ({exc})") from None  # RuntimeError: encrypted


def verify_evidence(path: Path, trusted_ca_pems: Sequence[bytes] = (), expected_signer: str = "") -> Verdict:
    """Check an evidence file offline; signature checks need ``trusted_ca_pems``."""
    parts = _read(path)
    missing = [p for p in PARTS if p not in parts]
    if missing:
        raise EvidenceError(f"{path}: missing {', '.join(missing)}")
    try:
        manifest, answer = orjson.loads(parts["manifest.json"]), orjson.loads(parts["answer.json"])
        receipt = orjson.loads(parts["receipt.json"])
    except orjson.JSONDecodeError as exc:
        raise EvidenceError(f"{path}: broken JSON ({exc})") from None
    for name, value in (("manifest.json", manifest), ("answer.json", answer), ("receipt.json", receipt)):
        if not isinstance(value, dict):
            raise EvidenceError(f"{path}: {name} is not a JSON object")
    verdict = Verdict(str(manifest.get("batchId")))
    _check_digests(verdict, parts, manifest, answer, receipt)
    _check_manifest(verdict, parts["sent.bin"], manifest, answer, receipt)
    _check_signature(verdict, parts, trusted_ca_pems, expected_signer, manifest.get("receiptSigner"))
    return verdict


def _check_digests(verdict: Verdict, parts: Mapping[str, bytes], manifest: Mapping[str, Any],
                   answer: Mapping[str, Any], receipt: Mapping[str, Any]) -> None:
    sent_sha = hashlib.sha256(parts["sent.bin"]).hexdigest()
    verdict.add("receipt names this batch", receipt.get("batchId") == manifest.get("batchId"),
                f"receipt batchId {receipt.get('batchId')}")
    verdict.add("receipt digest equals the body sent", receipt.get("bodySha256") == sent_sha, f"sha256 {sent_sha}")
    verdict.add("receipt.json is the answer's receipt", receipt_bytes(answer.get("receipt") or {}) ==
                parts["receipt.json"])
    if "resultsSha256" in receipt:
        verdict.add("per-record results match the receipt", receipt["resultsSha256"] ==
                    results_digest(answer.get("results")))


def _check_manifest(verdict: Verdict, sent: bytes, manifest: Mapping[str, Any], answer: Mapping[str, Any],
                    receipt: Mapping[str, Any]) -> None:
    """The manifest says what the receipt (and a plain JSON body) says: its receipt id and record count."""
    verdict.add("manifest names the receipt", manifest.get("receiptId") == receipt.get("receiptId"),
                f"receipt {receipt.get('receiptId')}")
    records = manifest.get("records")
    counts: list[tuple[str, Any]] = []
    if "successSize" in receipt or "failSize" in receipt:
        counts.append(("receipt", _int(receipt.get("successSize")) + _int(receipt.get("failSize"))))
    if isinstance(answer.get("results"), list):  # covered by the receipt's resultsSha256
        counts.append(("results", len(answer["results"])))
    body = _plain_body(sent)
    if body is not None and isinstance(body.get("records"), list):
        counts.append(("body", len(body["records"])))
    wrong = [f"{what} {n}" for what, n in counts if n != records]
    verdict.add("manifest record count", not wrong, f"{records} record(s)" + (f"; but {', '.join(wrong)}"
                                                                              if wrong else ""))
    if body is not None and "batchId" in body:
        verdict.add("body names this batch", body["batchId"] == manifest.get("batchId"),
                    f"body batchId {body['batchId']}")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _plain_body(sent: bytes) -> dict[str, Any] | None:
    """The body when it was sent as plain JSON (profile none); a sealed body is opened by the platform only."""
    try:
        body = orjson.loads(sent)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _check_signature(verdict: Verdict, parts: Mapping[str, bytes], trusted: Sequence[bytes],
                     expected_signer: str, recorded: Any) -> None:
    signature = parts.get("receipt.sig")
    if signature is None:
        verdict.add("receipt is signed", False, "no receipt.sig in the file")
        return
    if not trusted:
        verdict.add("receipt signature", False, "give the CA certificate(s) to check it against (--trusted-ca)")
        return
    try:
        opened = verify_detached(parts["receipt.json"], signature, tuple(trusted))
    except EnvelopeError as exc:
        verdict.add("receipt signature", False, str(exc))
        return
    verdict.add("receipt signature", True, f"signed by {opened.signer_subject} "
                                           f"(sha256 {opened.signer_fingerprint_sha256[:16]}…)")
    _check_signer(verdict, opened.signer_subject, opened.signer_fingerprint_sha256, expected_signer, recorded)


def _check_signer(verdict: Verdict, subject: str, fingerprint: str, given: str, recorded: Any) -> None:
    """The signer is the one expected: ``--signer`` (a subject) if given, and the manifest's ``receiptSigner``
    (subject and certificate fingerprints). With neither, nothing says who should have signed: not verified."""
    recorded = recorded if isinstance(recorded, dict) else {}
    wanted = given or str(recorded.get("subject") or "")
    if not wanted:
        verdict.add("receipt signer", False, "the evidence file names no expected signer: give --signer")
        return
    if subject != wanted:
        verdict.add("receipt signer", False, f"signed by {subject}, not by {wanted}")
        return
    prints = recorded.get("sha256") if recorded.get("subject") == wanted else None
    if isinstance(prints, list) and prints and fingerprint not in prints:
        verdict.add("receipt signer", False, f"{subject}, but not the certificate the evidence file names "
                                             f"(sha256 {fingerprint[:16]}…)")
        return
    party = recorded.get("party") if recorded.get("subject") == wanted else None
    verdict.add("receipt signer", True, subject + (f" ({party})" if party else ""))
