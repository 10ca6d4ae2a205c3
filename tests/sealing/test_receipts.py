"""A platform's signed receipt is proof of delivery only as it was signed: the receipt, its per-record results
and its signer are all checked (Sealing.verify_receipt), for the cms and sm profiles."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest

from gateway.sealing.base import Credentials, SignatureError
from gateway.sealing.signatures import sign_detached
from gateway.sealing.target import Sealing, load_sealing, receipt_bytes, results_digest
from tests.support.pki import CA, Issued, make_ca


def _sealing(ours: Issued, peer: Issued, ca: CA, profile: str) -> Sealing:
    raw = {"profile": profile, "key": str(ours.key_path), "cert": str(ours.cert_path),
           "peer_cert": str(peer.cert_path), "trusted_cas": [str(ca.root.cert_path)]}
    sealing, problems = load_sealing(raw, "t", Path("/"))
    assert problems == [] and sealing is not None
    return sealing


def _answer(signer: Issued) -> dict[str, Any]:
    results = [{"recordKey": "苏市监罚〔2026〕1号|11320500014160152Y", "version": 1, "status": "accepted"},
               {"recordKey": "苏市监罚〔2026〕2号|11320500014160152Y", "version": 1, "status": "rejected",
                "code": "7001", "message": "缺少必填项"}]
    receipt = {"receiptId": "r-1", "batchId": "b-1", "bodySha256": "ab" * 32, "accepted": 1, "rejected": 1,
               "resultsSha256": results_digest(results)}
    signature = sign_detached(receipt_bytes(receipt), Credentials(signer.key_pem, signer.cert_pem))
    return {"results": results, "receipt": receipt, "receiptSignature": base64.b64encode(signature).decode()}


@pytest.fixture(params=[("cms", "rsa"), ("sm", "sm2")], ids=["cms", "sm"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Sealing, Issued, Issued]:
    profile, kind = request.param
    ca = make_ca(tmp_path / "pki", kind)
    gateway, platform, stranger = ca.issue("gateway"), ca.issue("platform"), ca.issue("stranger")
    return _sealing(gateway, platform, ca, profile), platform, stranger


def test_a_genuine_receipt_verifies(world: tuple[Sealing, Issued, Issued]) -> None:
    sealing, platform, _ = world
    opened = sealing.verify_receipt(_answer(platform))
    assert opened is not None and opened.signer_subject.startswith("CN=platform,")


def test_a_changed_receipt_is_refused(world: tuple[Sealing, Issued, Issued]) -> None:
    sealing, platform, _ = world
    answer = _answer(platform)
    answer["receipt"]["accepted"] = 2  # one more record "accepted" than the platform signed
    with pytest.raises(SignatureError):
        sealing.verify_receipt(answer)


def test_changed_results_are_refused(world: tuple[Sealing, Issued, Issued]) -> None:
    """The receipt is intact but a per-record result beside it was altered: its digest no longer matches."""
    sealing, platform, _ = world
    answer = copy.deepcopy(_answer(platform))
    answer["results"][1]["status"] = "accepted"
    with pytest.raises(SignatureError, match="results do not match"):
        sealing.verify_receipt(answer)


def test_a_receipt_signed_by_another_certificate_is_refused(world: tuple[Sealing, Issued, Issued]) -> None:
    sealing, _, stranger = world
    with pytest.raises(SignatureError, match="not by the peer"):
        sealing.verify_receipt(_answer(stranger))


def test_an_unsigned_receipt_is_refused(world: tuple[Sealing, Issued, Issued]) -> None:
    sealing, platform, _ = world
    answer = _answer(platform)
    del answer["receiptSignature"]
    with pytest.raises(SignatureError, match="not signed"):
        sealing.verify_receipt(answer)


def test_a_signature_that_is_not_base64_is_refused(world: tuple[Sealing, Issued, Issued]) -> None:
    sealing, platform, _ = world
    answer = _answer(platform)
    answer["receiptSignature"] = "not base64!"
    with pytest.raises(SignatureError, match="base64"):
        sealing.verify_receipt(answer)
