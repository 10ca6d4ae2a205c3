"""The ``xmldsig`` envelope profile: an enveloped XML Signature over the whole XML body, as ``xmlsec1`` checks it.

Seal adds one ``ds:Signature`` as the last child of the root element: ``Reference URI=""`` (the whole document)
with the enveloped-signature transform, Canonical XML 1.1 (signxml's default), SHA-256 digest,
RSA-SHA256 or ECDSA-SHA256 (by our key), and our certificate (plus intermediates) in ``KeyInfo/X509Data``.
A platform checks it with ``xmlsec1 --verify --trusted-pem ca.pem signed.xml``.

**Signature only**: the xmldsig profile does not encrypt (XML Encryption is out of scope); confidentiality comes
from TLS on the link. Use ``cms`` or ``sm`` where the body must be encrypted end to end.

Open parses with a hardened parser (no DTD, no entities, no network, no huge trees) and accepts exactly one
signature, at the root, referencing the whole document; the signer is the first ``X509Certificate`` in
``KeyInfo`` and must chain to the trusted CAs at ``now`` and carry the peer's subject; the signature itself is
verified by signxml against that certificate. The body returned is what was signed: the canonicalised
document without its ``ds:Signature``, never the bytes around it (no signature-wrapping).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree  # type: ignore[import-untyped]
from signxml.algorithms import DigestAlgorithm, SignatureConstructionMethod, SignatureMethod
from signxml.exceptions import InvalidCertificate, InvalidInput, SignXMLException
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, VerifyResult, XMLVerifier

from gateway.sealing import xmlsafe
from gateway.sealing.base import (
    CertificateError,
    Credentials,
    EnvelopeError,
    Opened,
    Peer,
    SignatureError,
    check_chain,
    check_peer_for_sealing,
    check_peer_signer,
    check_usage,
    check_validity,
    load_certificate,
    load_signer,
    load_trusted,
    opened,
    resolve_now,
)

DS = "http://www.w3.org/2000/09/xmldsig#"
_NS = {"ds": DS}
_ACCEPTED = SignatureConfiguration(
    signature_methods=frozenset({
        SignatureMethod.RSA_SHA256, SignatureMethod.RSA_SHA384, SignatureMethod.RSA_SHA512,
        SignatureMethod.ECDSA_SHA256, SignatureMethod.ECDSA_SHA384, SignatureMethod.ECDSA_SHA512,
    }),
    digest_algorithms=frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512}),
    location="./",
)


def parse_xml(data: bytes, what: str) -> etree._Element:
    """Parse untrusted XML with :func:`gateway.sealing.xmlsafe.parse_xml` (no DTD, no entities, no network, bounded)."""
    try:
        return xmlsafe.parse_xml(data, what)
    except xmlsafe.XmlRefused as exc:
        raise EnvelopeError(f"xmldsig: {exc}") from exc


class XmlDsigProfile:
    """Enveloped XML Signature (RSA-SHA256 / ECDSA-SHA256) over the whole XML body; no encryption."""

    name: str = "xmldsig"
    external_ok: bool = True

    def seal(self, body: bytes, ours: Credentials, peer: Peer, *, now: datetime | None = None) -> bytes:
        when = resolve_now(now)
        root = parse_xml(body, "body")
        if root.find("ds:Signature", _NS) is not None:
            raise EnvelopeError("xmldsig: the body is already signed (it has a ds:Signature at the root)")
        signer = load_signer(ours)
        check_validity(signer.cert, when, "our")
        check_peer_for_sealing(peer, when)
        method = SignatureMethod.RSA_SHA256 if isinstance(signer.key, rsa.RSAPrivateKey) else (
            SignatureMethod.ECDSA_SHA256)
        xml_signer = XMLSigner(method=SignatureConstructionMethod.enveloped, signature_algorithm=method,
                               digest_algorithm=DigestAlgorithm.SHA256)
        signed = xml_signer.sign(root, key=signer.key, cert=[signer.cert, *signer.chain])
        return bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))

    def open(self, sealed: bytes, ours: Credentials, peer: Peer, *, now: datetime | None = None) -> Opened:
        when = resolve_now(now)
        root = parse_xml(sealed, "signed document")
        signer, others = _signer_certificates(root)
        check_chain(signer, others, load_trusted(peer.trusted_ca_pems), when, role="signer")
        check_usage(signer, "signer", signing=True)
        check_peer_signer(signer, peer)
        return _verify(root, signer, when)


def _signer_certificates(root: etree._Element) -> tuple[x509.Certificate, list[x509.Certificate]]:
    signatures = root.findall("ds:Signature", _NS)
    if len(signatures) != 1 or len(root.findall(".//ds:Signature", _NS)) != 1:
        raise SignatureError(f"xmldsig: expected exactly one ds:Signature, at the root; found "
                             f"{len(root.findall('.//ds:Signature', _NS))}")
    texts = [node.text or "" for node in signatures[0].findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", _NS)]
    if not texts:
        raise SignatureError("xmldsig: the signature carries no X509Certificate in its KeyInfo")
    try:
        ders = [base64.b64decode("".join(text.split()), validate=True) for text in texts]
    except (ValueError, binascii.Error) as exc:
        raise CertificateError(f"xmldsig: an X509Certificate in KeyInfo is not base64 ({exc})") from exc
    certs = [load_certificate(der, "X509Certificate in KeyInfo") for der in ders]
    return certs[0], certs[1:]


def _verify(root: etree._Element, signer: x509.Certificate, now: datetime) -> Opened:
    references = root.findall("ds:Signature/ds:SignedInfo/ds:Reference", _NS)
    if len(references) != 1 or references[0].get("URI") != "":
        raise SignatureError('xmldsig: the signature must have one Reference with URI="" (the whole document)')
    config = dataclasses.replace(_ACCEPTED, verification_time=now)
    try:
        result = XMLVerifier().verify(root, x509_cert=signer, expect_config=config)
        assert isinstance(result, VerifyResult)  # one reference expected, so one result
    except InvalidCertificate as exc:
        raise CertificateError(f"xmldsig: signer certificate refused: {exc}") from exc
    except (SignXMLException, InvalidInput, UnsupportedAlgorithm, ValueError, TypeError, etree.LxmlError) as exc:
        raise SignatureError(f"xmldsig: the signature does not verify (document or signature altered): "
                             f"{exc}") from exc
    value = result.signature_xml.findtext("ds:SignatureValue", default="", namespaces=_NS)
    return opened(bytes(result.signed_data), signer, base64.b64decode("".join(value.split())))
