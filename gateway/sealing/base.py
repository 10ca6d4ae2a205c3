"""Envelopes: sign and encrypt whole batches for a peer, and open (decrypt, verify) what peers send.

One :class:`Profile` per target, chosen by name with :func:`get_profile`; each is pure and synchronous,
bytes in and bytes out, and raises only :class:`EnvelopeError` subclasses:

==========  ==============================================================================================
``cms``     CMS SignedData (SHA-256; RSA PKCS#1 v1.5 or ECDSA signer, signed attributes, signer certificate
            attached) inside CMS EnvelopedData (AES-256-CBC content, RSA PKCS#1 v1.5 key transport), DER.
            ``openssl cms -decrypt | openssl cms -verify`` reads it. See :mod:`gateway.sealing.cms`.
``sm``      国密: SM2 signature over SM3 (ID ``1234567812345678``), SM4-CBC content, HMAC-SM3 over the
            ciphertext, SM4 and MAC keys wrapped with the receiver's SM2 public key, in a small DER container
            documented in :mod:`gateway.sealing.sm`.
``xmldsig`` Enveloped XML Signature (RSA-SHA256 or ECDSA-SHA256, signer certificate in ``KeyInfo``) for XML
            bodies; signature only, confidentiality comes from TLS. ``xmlsec1 --verify`` accepts it.
            See :mod:`gateway.sealing.xmldsig`.
``none``    The body as it is, for tests and internal links; ``external_ok`` is False and the config layer
            refuses it for external targets.
==========  ==============================================================================================

What ``open`` checks, for every signing profile: the signature over the body (and, for CMS, the signed
attributes); that the signer's certificate chains to one of ``peer.trusted_ca_pems`` (issuer name and
signature, CA basic constraints, key usage, every certificate valid at ``now``); and that the signer has the
same subject as ``peer.cert_pem`` (so a certificate that another party got from the same CA is refused).
``seal`` refuses an expired or untrusted peer certificate and an expired certificate of ours.

Receipts use :func:`sign_detached` / :func:`verify_detached`: a CMS detached SignedData for RSA and EC
credentials, the ``sm`` detached container for SM2 credentials. ``verify_detached`` has no expected peer: the
caller compares ``Opened.signer_subject`` or ``signer_fingerprint_sha256`` with who should have signed.

Errors name what failed and never echo key material. Nothing is returned when any check fails.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.errors import GatewayError

__all__ = [
    "CertificateError",
    "Credentials",
    "DecryptError",
    "EnvelopeError",
    "Opened",
    "Peer",
    "Profile",
    "SignatureError",
    "get_profile",
    "profile_names",
    "sign_detached",
    "verify_detached",
]

MAX_CHAIN_DEPTH = 8


class EnvelopeError(GatewayError):
    """A batch could not be sealed or opened; the message names what failed."""


class SignatureError(EnvelopeError):
    """A signature is missing, malformed or does not match the signed data."""


class CertificateError(EnvelopeError):
    """A certificate is expired, not yet valid, from an unknown CA, or not the expected signer's."""


class DecryptError(EnvelopeError):
    """The envelope is not for our key, or its ciphertext was altered."""


@dataclass(frozen=True)
class Credentials:
    """Our side: private key (PEM, optionally encrypted) and certificate (PEM; more PEMs after it are sent as
    intermediates)."""

    key_pem: bytes = field(repr=False)
    cert_pem: bytes
    passphrase: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Peer:
    """The other side: the certificate we encrypt to, and the CAs that may issue its signing certificates.

    ``allowed_signers`` (RFC 4514 subjects) replaces the one expected signer (``cert_pem``'s subject) when
    opening: an inbound channel accepts batches from several partners, and encrypts to none of them.
    """

    cert_pem: bytes
    trusted_ca_pems: tuple[bytes, ...]
    allowed_signers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Opened:
    """A verified, decrypted body and who signed it."""

    body: bytes
    signer_subject: str
    signer_fingerprint_sha256: str
    signature: bytes
    digest_sha256: str


@runtime_checkable
class Profile(Protocol):
    """One envelope format: ``seal`` signs with ours and encrypts to the peer, ``open`` undoes and checks it."""

    name: str
    external_ok: bool

    def seal(self, body: bytes, ours: Credentials, peer: Peer, *, now: datetime | None = None) -> bytes: ...

    def open(self, sealed: bytes, ours: Credentials, peer: Peer, *, now: datetime | None = None) -> Opened: ...


# --- time, certificates, chains ------------------------------------------------------------------------------

def resolve_now(now: datetime | None) -> datetime:
    """``now`` as an aware UTC datetime; the current time when None."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


_CORRUPT = (ValueError, x509.InvalidVersion, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


def _read_fully(cert: x509.Certificate) -> x509.Certificate:
    """cryptography parses lazily: read every field now, so a corrupt certificate fails here and not later."""
    _ = (cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), cert.serial_number, cert.not_valid_after_utc,
         cert.not_valid_before_utc, cert.signature_algorithm_oid, list(cert.extensions))
    with contextlib.suppress(UnsupportedAlgorithm):  # SM2 keys are read by gateway.sealing.sm
        cert.public_key()
    return cert


def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    """Every certificate in ``data`` (one DER certificate, or one or more PEM blocks), first one first."""
    try:
        if b"-----BEGIN" in data:
            return [_read_fully(cert) for cert in x509.load_pem_x509_certificates(data)]
        return [_read_fully(x509.load_der_x509_certificate(data))]
    except _CORRUPT as exc:
        raise CertificateError(f"{what}: not a readable X.509 certificate ({exc})") from exc


def load_certificate(data: bytes, what: str) -> x509.Certificate:
    """The first certificate in ``data``."""
    return load_certificates(data, what)[0]


def load_trusted(pems: Sequence[bytes]) -> list[x509.Certificate]:
    """The trust anchors; an empty list is an error (nothing could ever verify)."""
    anchors = [cert for pem in pems for cert in load_certificates(pem, "trusted CA certificate")]
    if not anchors:
        raise CertificateError("no trusted CA certificate is configured for this peer")
    return anchors


def normalise_subject(text: str) -> str:
    """An RFC 4514 subject as :attr:`Opened.signer_subject` spells it; ValueError when it is not one."""
    return x509.Name.from_rfc4514_string(text).rfc4514_string()


def certificate_subject(der: bytes) -> str:
    """The subject of a DER certificate (a TLS peer's), RFC 4514."""
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def describe(cert: x509.Certificate) -> str:
    """``'CN=...,O=...' (serial 0x...)`` for error messages."""
    return f"'{cert.subject.rfc4514_string()}' (serial {cert.serial_number:#x})"


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def check_validity(cert: x509.Certificate, now: datetime, role: str) -> None:
    """Refuse ``cert`` unless ``now`` lies in its validity period."""
    if now < cert.not_valid_before_utc:
        raise CertificateError(f"{role} certificate {describe(cert)} is not yet valid: valid from "
                               f"{cert.not_valid_before_utc.isoformat()}, checked at {now.isoformat()}")
    if now > cert.not_valid_after_utc:
        raise CertificateError(f"{role} certificate {describe(cert)} expired at "
                               f"{cert.not_valid_after_utc.isoformat()}, checked at {now.isoformat()}")


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def check_usage(cert: x509.Certificate, role: str, *, signing: bool) -> None:
    """When a key usage extension is present it must allow signing (or key encipherment)."""
    usage = _key_usage(cert)
    if usage is None:
        return
    allowed = (usage.digital_signature or usage.content_commitment) if signing else (
        usage.key_encipherment or usage.data_encipherment or usage.key_agreement)
    if not allowed:
        purpose = "signing" if signing else "encryption"
        raise CertificateError(f"{role} certificate {describe(cert)} has a key usage that does not allow {purpose}")


IssuedBy = Callable[[x509.Certificate, x509.Certificate], bool]


def x509_issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s key made ``child``'s signature (RSA, RSA-PSS, ECDSA; via cryptography)."""
    try:
        child.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _check_ca(issuer: x509.Certificate, below: int) -> None:
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CertificateError(f"issuer certificate {describe(issuer)} is not a CA certificate")
    if constraints.path_length is not None and below > constraints.path_length:
        raise CertificateError(f"issuer certificate {describe(issuer)} allows {constraints.path_length} "
                               f"intermediate CAs below it, the chain has {below}")
    usage = _key_usage(issuer)
    if usage is not None and not usage.key_cert_sign:
        raise CertificateError(f"issuer certificate {describe(issuer)} may not sign certificates")


def _find_issuer(cert: x509.Certificate, candidates: Sequence[x509.Certificate], issued_by: IssuedBy,
                 role: str) -> x509.Certificate:
    named = [c for c in candidates if c.subject == cert.issuer]
    for candidate in named:
        if issued_by(cert, candidate):
            return candidate
    issuer = cert.issuer.rfc4514_string()
    if named:
        raise CertificateError(f"{role} certificate {describe(cert)} is not issued by a trusted CA: a CA named "
                               f"'{issuer}' is known but its key did not sign this certificate")
    raise CertificateError(f"{role} certificate {describe(cert)} is not issued by a trusted CA: its issuer "
                           f"'{issuer}' is unknown")


def check_chain(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
                anchors: Sequence[x509.Certificate], now: datetime, *, role: str,
                issued_by: IssuedBy = x509_issued_by) -> None:
    """Refuse ``leaf`` unless a chain of valid CA certificates leads from it to one of ``anchors``."""
    check_validity(leaf, now, role)
    trusted = {c.public_bytes(serialization.Encoding.DER) for c in anchors}
    current, pool = leaf, [*anchors, *intermediates]
    for below in range(MAX_CHAIN_DEPTH):
        if current.public_bytes(serialization.Encoding.DER) in trusted:
            return
        issuer = _find_issuer(current, [c for c in pool if c != current], issued_by, role)
        check_validity(issuer, now, "issuer")
        _check_ca(issuer, below)
        current = issuer
    raise CertificateError(f"{role} certificate {describe(leaf)}: no trusted CA within {MAX_CHAIN_DEPTH} levels")


def check_expected_signer(signer: x509.Certificate, peer_cert: x509.Certificate) -> None:
    """The signer must be the peer: same subject as the peer's certificate (a renewed certificate passes)."""
    if signer.subject != peer_cert.subject:
        raise CertificateError(f"wrong signer: signed by {describe(signer)}, expected the peer "
                               f"'{peer_cert.subject.rfc4514_string()}'")


def check_peer_signer(signer: x509.Certificate, peer: Peer) -> None:
    """The signer must be one of ``peer.allowed_signers`` when given, else the peer of ``peer.cert_pem``."""
    if not peer.allowed_signers:
        check_expected_signer(signer, load_certificate(peer.cert_pem, "peer certificate"))
        return
    subject = signer.subject.rfc4514_string()
    if subject not in peer.allowed_signers:
        raise CertificateError(f"wrong signer: signed by {describe(signer)}, which is not an allowed peer "
                               f"({'; '.join(repr(s) for s in peer.allowed_signers)})")


def opened(body: bytes, signer: x509.Certificate, signature: bytes) -> Opened:
    """The result of a successful open."""
    return Opened(body=body, signer_subject=signer.subject.rfc4514_string(),
                  signer_fingerprint_sha256=fingerprint_sha256(signer), signature=signature,
                  digest_sha256=hashlib.sha256(body).hexdigest())


# --- our RSA / EC credentials ---------------------------------------------------------------------------------

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Signer:
    """Our loaded key, our certificate and the intermediates sent with it."""

    key: SigningKey = field(repr=False)
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]


def _load_private_key(ours: Credentials) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(ours.key_pem, ours.passphrase)
    except TypeError as exc:  # passphrase missing, or given for an unencrypted key
        raise EnvelopeError(f"our private key: {exc}") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise EnvelopeError("our private key cannot be read (wrong passphrase, or not an RSA/EC PEM key)") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise EnvelopeError(f"our private key is {type(key).__name__}; this profile signs with RSA or EC keys")
    return key


@functools.lru_cache(maxsize=32)
def load_signer(ours: Credentials) -> Signer:
    """Our RSA/EC key and certificate, checked to belong together (cached: parsing keys is slow)."""
    key = _load_private_key(ours)
    certs = load_certificates(ours.cert_pem, "our certificate")
    if certs[0].public_key() != key.public_key():
        raise EnvelopeError(f"our private key does not match our certificate {describe(certs[0])}")
    return Signer(key, certs[0], tuple(certs[1:]))


def check_keypair(ours: Credentials) -> None:
    """Our key read with its passphrase and paired with our certificate, as the first transfer would: an
    EnvelopeError names what is wrong (``credit-gateway check``)."""
    from gateway.sealing import sm as envelope_sm
    if envelope_sm.is_sm2_certificate(load_certificate(ours.cert_pem, "our certificate")):
        envelope_sm.load_sm2_signer(ours)
    else:
        load_signer(ours)


def check_peer_for_sealing(peer: Peer, now: datetime, *, issued_by: IssuedBy = x509_issued_by) -> x509.Certificate:
    """The peer's certificate, refused when it is expired, not yet valid or not from a trusted CA."""
    cert, *intermediates = load_certificates(peer.cert_pem, "peer certificate")
    check_chain(cert, intermediates, load_trusted(peer.trusted_ca_pems), now, role="peer", issued_by=issued_by)
    return cert


# --- the none profile, the registry, detached signatures --------------------------------------------------------

class NoneProfile:
    """The body unchanged: for tests and internal links only (``external_ok`` is False)."""

    name: str = "none"
    external_ok: bool = False

    def seal(self, body: bytes, ours: Credentials, peer: Peer, *, now: datetime | None = None) -> bytes:
        return body

    def open(self, sealed: bytes, ours: Credentials, peer: Peer, *, now: datetime | None = None) -> Opened:
        return Opened(body=sealed, signer_subject="", signer_fingerprint_sha256="", signature=b"",
                      digest_sha256=hashlib.sha256(sealed).hexdigest())


def _make_profile(name: str) -> Profile:
    if name == "cms":
        from gateway.sealing.cms import CmsProfile
        return CmsProfile()
    if name == "sm":
        from gateway.sealing.sm import SmProfile
        return SmProfile()
    if name == "xmldsig":
        from gateway.sealing.xmldsig import XmlDsigProfile
        return XmlDsigProfile()
    return NoneProfile()


def profile_names() -> tuple[str, ...]:
    return ("cms", "none", "sm", "xmldsig")


def get_profile(name: str) -> Profile:
    """The profile called ``name``: "cms", "sm", "xmldsig" or "none"."""
    if name not in profile_names():
        raise EnvelopeError(f"unknown envelope profile {name!r}; known: {', '.join(profile_names())}")
    return _make_profile(name)


def sign_detached(body: bytes, ours: Credentials) -> bytes:
    """A detached signature of ``body``: CMS SignedData (DER) for RSA/EC credentials, the ``sm`` container for SM2."""
    from gateway.sealing import cms as envelope_cms
    from gateway.sealing import sm as envelope_sm
    if envelope_sm.is_sm2_certificate(load_certificate(ours.cert_pem, "our certificate")):
        return envelope_sm.sign_detached(body, ours)
    return envelope_cms.sign_detached(body, ours)


def verify_detached(body: bytes, signature: bytes, trusted_ca_pems: tuple[bytes, ...], now: datetime | None = None
                    ) -> Opened:
    """Check a detached signature made by :func:`sign_detached` (or ``openssl cms -sign`` / the sm container)."""
    from gateway.sealing import cms as envelope_cms
    from gateway.sealing import sm as envelope_sm
    if envelope_cms.is_cms_signed_data(signature):
        return envelope_cms.verify_detached(body, signature, trusted_ca_pems, now)
    return envelope_sm.verify_detached(body, signature, trusted_ca_pems, now)
