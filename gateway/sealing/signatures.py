"""Detached signatures of receipts and evidence: CMS SignedData (DER) for RSA/EC credentials, the ``sm``
container for SM2; the verifier tells them apart by their bytes. And the check that our key pairs with our
certificate, whichever kind it is."""

from __future__ import annotations

from datetime import datetime

from gateway.sealing import cms, sm
from gateway.sealing.base import Credentials, Opened, load_certificate, load_signer


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


def check_keypair(ours: Credentials) -> None:
    """Our key read with its passphrase and paired with our certificate, as the first transfer would: an
    EnvelopeError names what is wrong (``credit-gateway check``)."""
    if sm.is_sm2_certificate(load_certificate(ours.cert_pem, "our certificate")):
        sm.load_sm2_signer(ours)
    else:
        load_signer(ours)
