"""The ``cms`` envelope profile: CMS SignedData inside CMS EnvelopedData, DER, as ``openssl cms`` reads it.

Seal: ``SignedData`` (RFC 5652) over the body with SHA-256, signed attributes (contentType, messageDigest,
signingTime), our certificate and any intermediates we hold; signed by an RSA (PKCS#1 v1.5) or ECDSA key.
That DER is the content (type id-data) of an ``EnvelopedData`` with AES-256-CBC and RSA PKCS#1 v1.5 key
transport to the peer's certificate. Made with ``cryptography``'s PKCS7 builders. A platform opens it with::

    openssl cms -decrypt -binary -inform DER -in sealed.der -recip our.crt -inkey our.key \\
      | openssl cms -verify -binary -inform DER -CAfile ca.pem

Choices, forced by ``cryptography`` (50.x), the only CMS library behind this module:

* AES-256-**CBC**, not AES-GCM (``AuthEnvelopedData``): cryptography can neither make nor decrypt GCM
  envelopes. CBC has no integrity of its own; the SignedData inside is what detects tampering, so the
  receiving HTTP layer must answer every failed open with the same response (no padding oracle).
* The peer's **encryption certificate must be RSA**: cryptography only does RSA key transport, not the ECDH key
  agreement an EC recipient needs. Signatures may be RSA or ECDSA (a peer may hold an EC signing
  certificate and an RSA encryption certificate with the same subject).
* Open accepts what ``openssl cms -sign -binary | openssl cms -encrypt -aes256 -binary`` makes (DER): AES-256-CBC
  envelopes only (others are refused), signers RSA PKCS#1 v1.5, RSA-PSS or ECDSA with SHA-256/384/512, with
  or without signed attributes, exactly one signer.

CMS signature verification is not in cryptography: the SignedData is parsed with ``asn1crypto`` and the
signature checked with cryptography's primitives (messageDigest and contentType attributes, then the signature
over the DER SET of signed attributes), then the chain (:func:`gateway.sealing.base.check_chain`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asn1crypto import cms  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from gateway.sealing.base import (
    CertificateError,
    Credentials,
    DecryptError,
    Opened,
    Peer,
    SignatureError,
    Signer,
    check_chain,
    check_peer_for_sealing,
    check_peer_signer,
    check_usage,
    check_validity,
    describe,
    load_certificate,
    load_signer,
    load_trusted,
    opened,
    resolve_now,
)

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}
_ENVELOPE_CIPHER = "aes256_cbc"


class CmsProfile:
    """CMS SignedData (RSA/ECDSA, SHA-256) inside EnvelopedData (AES-256-CBC, RSA key transport)."""

    name: str = "cms"
    external_ok: bool = True

    def seal(self, body: bytes, ours: Credentials, peer: Peer, *, now: datetime | None = None) -> bytes:
        when = resolve_now(now)
        signer = _our_signer(ours, when)
        recipient = check_peer_for_sealing(peer, when)
        if not isinstance(recipient.public_key(), rsa.RSAPublicKey):
            raise CertificateError(f"cms profile: peer certificate {describe(recipient)} has no RSA key; CMS "
                                   "encryption here is RSA key transport, so the peer needs an RSA encryption "
                                   "certificate")
        check_usage(recipient, "peer", signing=False)
        signed = _sign(body, signer, detached=False)
        return (pkcs7.PKCS7EnvelopeBuilder().set_data(signed)
                .set_content_encryption_algorithm(algorithms.AES256).add_recipient(recipient)
                .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary]))

    def open(self, sealed: bytes, ours: Credentials, peer: Peer, *, now: datetime | None = None) -> Opened:
        when = resolve_now(now)
        inner = _decrypt(sealed, load_signer(ours))
        result = _verify_signed_data(inner, None, peer.trusted_ca_pems, when)
        check_peer_signer(result.signer, peer)
        return opened(result.content, result.signer, result.signature)


def _our_signer(ours: Credentials, now: datetime) -> Signer:
    signer = load_signer(ours)
    check_validity(signer.cert, now, "our")
    return signer


def _sign(body: bytes, signer: Signer, *, detached: bool) -> bytes:
    builder = pkcs7.PKCS7SignatureBuilder().set_data(body).add_signer(signer.cert, signer.key, hashes.SHA256())
    for cert in signer.chain:
        builder = builder.add_certificate(cert)
    options = [pkcs7.PKCS7Options.Binary, pkcs7.PKCS7Options.NoCapabilities]
    if detached:
        options.append(pkcs7.PKCS7Options.DetachedSignature)
    return builder.sign(serialization.Encoding.DER, options)


def _decrypt(sealed: bytes, signer: Signer) -> bytes:
    if not isinstance(signer.key, rsa.RSAPrivateKey):
        raise DecryptError("cms profile: our key is not RSA, so it cannot decrypt RSA key transport envelopes")
    cipher = _envelope_cipher(sealed)
    if cipher != _ENVELOPE_CIPHER:
        raise DecryptError(f"cms: the envelope uses {cipher}; the cms profile accepts {_ENVELOPE_CIPHER} only")
    try:
        return pkcs7.pkcs7_decrypt_der(sealed, signer.cert, signer.key, [])
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise DecryptError(f"cms: cannot decrypt the envelope with our key for {describe(signer.cert)}: "
                           f"{exc}") from exc


def _envelope_cipher(sealed: bytes) -> str:
    try:
        info = cms.ContentInfo.load(sealed)
        if info["content_type"].native != "enveloped_data":
            raise DecryptError(f"cms: expected EnvelopedData, got {info['content_type'].native}")
        return str(info["content"]["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"].native)
    except (ValueError, TypeError, KeyError) as exc:
        raise DecryptError(f"cms: not a DER CMS EnvelopedData ({exc})") from exc


# --- SignedData verification -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Parsed:
    content: bytes
    content_type: str
    certs: list[x509.Certificate]
    signer: x509.Certificate
    digest: str
    signed_attrs: dict[str, bytes | str] | None
    signed_attrs_der: bytes
    signature_kind: str
    pss: tuple[padding.PSS, hashes.HashAlgorithm] | None
    signature: bytes


@dataclass(frozen=True)
class _Verified:
    content: bytes
    signer: x509.Certificate
    signature: bytes


def is_cms_signed_data(data: bytes) -> bool:
    """True when ``data`` is a DER CMS ContentInfo holding SignedData."""
    try:
        return bool(cms.ContentInfo.load(data)["content_type"].native == "signed_data")
    except (ValueError, TypeError, KeyError):
        return False


def _verify_signed_data(der: bytes, detached: bytes | None, trusted: tuple[bytes, ...], now: datetime) -> _Verified:
    anchors = load_trusted(trusted)
    try:
        parsed = _parse(der, detached)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise SignatureError(f"cms: malformed SignedData ({exc})") from exc
    data = _signed_bytes(parsed)
    _check_signature(parsed, data)
    check_chain(parsed.signer, parsed.certs, anchors, now, role="signer")
    check_usage(parsed.signer, "signer", signing=True)
    return _Verified(parsed.content, parsed.signer, parsed.signature)


def _parse(der: bytes, detached: bytes | None) -> _Parsed:
    info = cms.ContentInfo.load(der)
    if info["content_type"].native != "signed_data":
        raise SignatureError(f"cms: expected SignedData, got {info['content_type'].native}")
    signed = info["content"]
    infos = signed["signer_infos"]
    if len(infos) != 1:
        raise SignatureError(f"cms: expected exactly one signer, found {len(infos)}")
    signer_info = infos[0]
    certs = [c.chosen for c in signed["certificates"] if c.name == "certificate"] if signed["certificates"] else []
    attrs = signer_info["signed_attrs"]
    kind = str(signer_info["signature_algorithm"].signature_algo)
    return _Parsed(
        content=_content(signed["encap_content_info"], detached),
        content_type=str(signed["encap_content_info"]["content_type"].native),
        certs=[load_certificate(c.dump(), "certificate in the SignedData") for c in certs],
        signer=_find_signer(signer_info["sid"], certs),
        digest=str(signer_info["digest_algorithm"]["algorithm"].native),
        signed_attrs=_attributes(attrs) if len(attrs) else None,
        signed_attrs_der=b"\x31" + attrs.dump()[1:] if len(attrs) else b"",
        signature_kind=kind,
        pss=_pss(signer_info["signature_algorithm"]) if kind == "rsassa_pss" else None,
        signature=bytes(signer_info["signature"].native),
    )


def _content(encap: Any, detached: bytes | None) -> bytes:
    embedded = encap["content"].native if encap["content"] else None
    if detached is not None:
        if embedded is not None:
            raise SignatureError("cms: expected a detached signature, but the SignedData embeds content")
        return detached
    if embedded is None:
        raise SignatureError("cms: the SignedData carries no content")
    return bytes(embedded)


def _find_signer(sid: Any, certs: list[Any]) -> x509.Certificate:
    for cert in certs:
        if sid.name == "issuer_and_serial_number":
            found = (cert.issuer == sid.chosen["issuer"] and cert.serial_number == sid.chosen["serial_number"].native)
        else:
            found = cert.key_identifier == sid.chosen.native
        if found:
            return load_certificate(cert.dump(), "signer certificate")
    raise SignatureError("cms: the signer's certificate is not in the SignedData")


def _attributes(attrs: Any) -> dict[str, bytes | str]:
    found: dict[str, bytes | str] = {}
    for attr in attrs:
        kind, values = attr["type"].native, attr["values"]
        if kind in found or len(values) != 1:
            raise SignatureError(f"cms: signed attribute {kind} is repeated or has {len(values)} values")
        if kind in ("content_type", "message_digest"):
            found[kind] = values[0].native
    return found


def _signed_bytes(parsed: _Parsed) -> bytes:
    """What the signature covers: the DER SET of signed attributes (after checking them), or the content."""
    hash_type = _HASHES.get(parsed.digest)
    if hash_type is None:
        raise SignatureError(f"cms: digest algorithm {parsed.digest} is not accepted (sha256/384/512 only)")
    if parsed.signed_attrs is None:
        return parsed.content
    if parsed.signed_attrs.get("content_type") != parsed.content_type:
        raise SignatureError("cms: the signed contentType attribute does not match the content type")
    digest = hashes.Hash(hash_type())
    digest.update(parsed.content)
    expected = parsed.signed_attrs.get("message_digest")
    if not isinstance(expected, bytes) or not hmac.compare_digest(digest.finalize(), expected):
        raise SignatureError("cms: the content does not match the signed messageDigest (content altered)")
    return parsed.signed_attrs_der


def _check_signature(parsed: _Parsed, data: bytes) -> None:
    try:
        key = parsed.signer.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise SignatureError(f"cms: the signer's key type is not supported here ({exc})") from exc
    hash_type, kind = _HASHES[parsed.digest], parsed.signature_kind
    try:
        if kind == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(parsed.signature, data, padding.PKCS1v15(), hash_type())
        elif kind == "rsassa_pss" and parsed.pss is not None and isinstance(key, rsa.RSAPublicKey):
            key.verify(parsed.signature, data, *parsed.pss)
        elif kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(parsed.signature, data, ec.ECDSA(hash_type()))
        else:
            raise SignatureError(f"cms: signature algorithm {kind} does not fit the signer's key "
                                 f"({type(key).__name__})")
    except InvalidSignature as exc:
        raise SignatureError(f"cms: the signature by {describe(parsed.signer)} does not verify "
                             "(payload or signature altered)") from exc


def _pss(algo: Any) -> tuple[padding.PSS, hashes.HashAlgorithm]:
    params = algo["parameters"]
    names = (params["hash_algorithm"]["algorithm"].native,
             params["mask_gen_algorithm"]["parameters"]["algorithm"].native)
    if any(name not in _HASHES for name in names):
        raise SignatureError(f"cms: RSA-PSS with {names} is not accepted (sha256/384/512 only)")
    pss = padding.PSS(mgf=padding.MGF1(_HASHES[names[1]]()), salt_length=int(params["salt_length"].native))
    return pss, _HASHES[names[0]]()


# --- detached signatures (receipts) -----------------------------------------------------------------------------

def sign_detached(body: bytes, ours: Credentials) -> bytes:
    """CMS SignedData without the content (DER); ``openssl cms -verify -binary -content body`` checks it."""
    return _sign(body, _our_signer(ours, resolve_now(None)), detached=True)


def verify_detached(body: bytes, signature: bytes, trusted: tuple[bytes, ...], now: datetime | None) -> Opened:
    """Check a CMS detached signature over ``body``; the signer must chain to ``trusted``."""
    result = _verify_signed_data(signature, body, trusted, resolve_now(now))
    return opened(result.content, result.signer, result.signature)
