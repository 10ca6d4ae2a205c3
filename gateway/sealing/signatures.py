"""Detached signatures of receipts and evidence: CMS SignedData (DER) for RSA/EC credentials, the ``sm``
container for SM2; the verifier tells them apart by their bytes."""

from __future__ import annotations

from datetime import datetime

from gateway.sealing import cms, sm
from gateway.sealing.base import Credentials, Opened, load_certificate


def sign_detached(body: bytes, ours: Credentials) -> bytes:
    """A detached signature of ``body``: CMS SignedData (DER) for RSA/EC credentials, the ``sm`` container for SM2."""
    if sm.is_sm2_certificate(load_certificate(ours.cert_pem, "our certificate")):
        return sm.sign_detached(body, ours)
    return cms.sign_detached(body, ours)


def verify_detached(body: bytes, signature: bytes, trusted_ca_pems: tuple[bytes, ...], now: datetime | None = None
                    ) -> Opened:
    """Check a detached signature made by :func:`sign_detached` (or ``openssl cms -sign`` / the sm container)."""
    if cms.is_cms_signed_data(signature):
        return cms.verify_detached(body, signature, trusted_ca_pems, now)
    return sm.verify_detached(body, signature, trusted_ca_pems, now)
