"""The ``sm`` envelope profile (国密): SM2 signature over SM3, SM4-CBC content, HMAC-SM3, SM2 key wrapping.

Container format, version 1 (DER; a platform can implement it with any ASN.1 library, and ``openssl
asn1parse -inform DER -i`` shows it)::

    SmSealed ::= SEQUENCE {                 -- what seal() returns
        version           INTEGER (1),
        recipientSm3      OCTET STRING,     -- SM3 of the recipient's certificate (DER): which key to use
        wrappedKey        OCTET STRING,     -- DER SM2Ciphertext (GM/T 0009) of K = Kenc(16) || Kmac(16),
                                            --   encrypted to the recipient certificate's SM2 public key
        iv                OCTET STRING,     -- 16 random bytes
        encryptedContent  OCTET STRING,     -- SM4-CBC(Kenc, iv, PKCS#7 padding) of the DER SmSignedContent
        mac               OCTET STRING }    -- HMAC-SM3(Kmac, iv || encryptedContent), 32 bytes

    SmSignedContent ::= SEQUENCE {
        signature         SmSignature,      -- over content
        content           OCTET STRING }    -- the batch body

    SmSignature ::= SEQUENCE {              -- also what sign_detached() returns for SM2 credentials (receipts)
        version           INTEGER (1),
        signerCertificate Certificate,      -- the signer's SM2 X.509 certificate
        signature         OCTET STRING }    -- DER SEQUENCE { r INTEGER, s INTEGER }: SM2 signature of
                                            --   SM3(Z_A || content), Z_A with the default ID "1234567812345678"

    SM2Ciphertext ::= SEQUENCE { x INTEGER, y INTEGER, hash OCTET STRING (32), ciphertext OCTET STRING }
                                            -- C1 = (x, y), C3 = hash, C2 = ciphertext, as openssl 3 writes it

Opening checks, in order, each failure raising and returning nothing: version; the recipient id is our
certificate's; the key unwraps with our SM2 key (the SM2 C3 hash checks it); the MAC (so an altered ciphertext
is refused before decryption: no padding oracle); SM4 padding; the SM2 signature; the signer's chain to the
trusted CAs at ``now``; the signer has the peer's subject.

With openssl 3 alone: ``openssl pkeyutl -decrypt -inkey our.key -in wrappedKey.der`` gives K; ``openssl enc
-d -sm4-cbc -K <Kenc hex> -iv <iv hex>`` decrypts encryptedContent; ``openssl dgst -sm3 -mac HMAC -macopt
hexkey:<Kmac hex>`` recomputes the MAC; ``openssl pkeyutl -verify -rawin -digest sm3 -pkeyopt
distid:1234567812345678 -certin -inkey signer.crt -sigfile sig.der -in content`` checks the signature.

SM2 arithmetic comes from ``snowland-smx`` (``pysmx``, pure Python, CSPRNG randoms, GM/T 0003 Z_A); SM3, SM4
and HMAC-SM3 from ``cryptography``; ASN.1 from ``asn1crypto``. Keys: PKCS#8 (optionally PBES2 with PBKDF2 and
AES-CBC, as ``openssl genpkey -algorithm SM2 -aes-256-cbc`` writes) or SEC1 ``EC PRIVATE KEY``. SM2 certificate
signatures are checked with the default ID and, failing that, with the empty ID that openssl 3.0 uses when
``-sigopt distid:...`` is not given.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from asn1crypto import algos, core, keys, pem  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pysmx.SM2 import Decrypt, Encrypt, Sign, Verify, get_za, kG, sm2_G, sm2_N  # type: ignore[import-untyped]

from gateway.sealing.base import (
    CertificateError,
    Credentials,
    DecryptError,
    EnvelopeError,
    Opened,
    Peer,
    SignatureError,
    check_chain,
    check_peer_for_sealing,
    check_peer_signer,
    check_usage,
    check_validity,
    describe,
    load_certificate,
    load_certificates,
    load_trusted,
    opened,
    resolve_now,
    x509_issued_by,
)

SM2_CURVE_OID = "1.2.156.10197.1.301"
SM2_WITH_SM3_OID = "1.2.156.10197.1.501"
DEFAULT_ID = b"1234567812345678"
VERSION = 1
_P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
_A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
_B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
_N: int = sm2_N


_FieldList = list[tuple[str, Any]]


class SM2Ciphertext(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[_FieldList] = [
        ("x", core.Integer), ("y", core.Integer), ("hash", core.OctetString), ("ciphertext", core.OctetString),
    ]


class SmSignature(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[_FieldList] = [
        ("version", core.Integer), ("signer_certificate", asn1_x509.Certificate), ("signature", core.OctetString),
    ]


class SmSignedContent(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[_FieldList] = [("signature", SmSignature), ("content", core.OctetString)]


class SmSealed(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[_FieldList] = [
        ("version", core.Integer), ("recipient_sm3", core.OctetString), ("wrapped_key", core.OctetString),
        ("iv", core.OctetString), ("encrypted_content", core.OctetString), ("mac", core.OctetString),
    ]


# --- SM2 primitives -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sm2Signer:
    """Our SM2 private scalar, our certificate and its public point (x || y, 64 bytes)."""

    d: int = field(repr=False)
    cert: x509.Certificate
    point: bytes


def sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def _on_curve(point: bytes) -> bool:
    if len(point) != 64:
        return False
    x, y = int.from_bytes(point[:32], "big"), int.from_bytes(point[32:], "big")
    return x < _P and y < _P and (y * y - x * x * x - _A * x - _B) % _P == 0


def _e(message: bytes, point: bytes, uid: bytes) -> str:
    """SM3(Z_A || message) as hex; Z_A by pysmx, the long SM3 by cryptography (fast)."""
    return sm3(bytes.fromhex(get_za(uid, point.hex())) + message).hex()


def sm2_sign(message: bytes, signer: Sm2Signer) -> bytes:
    """DER SM2 signature of SM3(Z_A || message) with the default ID; k comes from ``secrets``."""
    e, d = _e(message, signer.point, DEFAULT_ID), f"{signer.d:064x}"
    for _ in range(16):
        raw = Sign(e, d, f"{secrets.randbelow(_N - 1) + 1:064x}", 64, Hexstr=1)
        if raw:
            return bytes(algos.DSASignature.from_p1363(raw).dump())
    raise SignatureError("sm: SM2 signing failed 16 times in a row")


def sm2_verify(message: bytes, signature: bytes, point: bytes, uid: bytes = DEFAULT_ID) -> bool:
    """True when ``signature`` (DER) is a valid SM2 signature of ``message`` by ``point`` with ``uid``."""
    try:
        parsed = algos.DSASignature.load(signature, strict=True)
        r, s = int(parsed["r"].native), int(parsed["s"].native)
    except (ValueError, TypeError):
        return False
    if not (0 < r < _N and 0 < s < _N and _on_curve(point)):
        return False
    try:
        return bool(Verify(f"{r:064x}{s:064x}", _e(message, point, uid), point.hex(), 64, Hexstr=1) is True)
    except (TypeError, ValueError):  # a point at infinity on the way
        return False


def sm2_encrypt(plaintext: bytes, point: bytes) -> bytes:
    """SM2 public-key encryption (C1C3C2) as the DER SM2Ciphertext that openssl 3 reads."""
    raw = Encrypt(plaintext, point.hex(), 64)
    if raw is None:
        raise EnvelopeError("sm: SM2 encryption failed")
    return bytes(SM2Ciphertext({"x": int.from_bytes(raw[:32], "big"), "y": int.from_bytes(raw[32:64], "big"),
                                "hash": raw[64:96], "ciphertext": raw[96:]}).dump())


def sm2_decrypt(ciphertext: bytes, signer: Sm2Signer) -> bytes:
    """Undo :func:`sm2_encrypt` (or ``openssl pkeyutl -encrypt``) with our key; DecryptError when it fails."""
    try:
        parsed = SM2Ciphertext.load(ciphertext, strict=True)
        c1 = int(parsed["x"].native).to_bytes(32, "big") + int(parsed["y"].native).to_bytes(32, "big")
        c3, c2 = bytes(parsed["hash"].native), bytes(parsed["ciphertext"].native)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DecryptError(f"sm: the wrapped key is not a DER SM2Ciphertext ({exc})") from exc
    if not _on_curve(c1) or len(c3) != 32:
        raise DecryptError("sm: the wrapped key is malformed (C1 not on the SM2 curve, or C3 not 32 bytes)")
    plain = Decrypt(c1 + c3 + c2, f"{signer.d:064x}", 64)
    if plain is None:
        raise DecryptError(f"sm: the wrapped key does not decrypt with our key for {describe(signer.cert)} "
                           "(sealed for someone else, or altered)")
    return bytes(plain)


# --- certificates and keys ----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _point_of(cert_der: bytes) -> bytes | None:
    try:
        spki = asn1_x509.Certificate.load(cert_der)["tbs_certificate"]["subject_public_key_info"]
        params = spki["algorithm"]["parameters"]
        if spki["algorithm"]["algorithm"].native != "ec" or params.name != "named" \
                or params.chosen.dotted != SM2_CURVE_OID:
            return None
        point = bytes(spki["public_key"].native)
    except (ValueError, TypeError, KeyError):
        return None
    return point[1:] if len(point) == 65 and point[0] == 4 and _on_curve(point[1:]) else None


def sm2_point(cert: x509.Certificate) -> bytes | None:
    """The SM2 public point (x || y) of ``cert``, or None when it has no valid SM2 key."""
    return _point_of(cert.public_bytes(serialization.Encoding.DER))


def is_sm2_certificate(cert: x509.Certificate) -> bool:
    return sm2_point(cert) is not None


def _require_point(cert: x509.Certificate, role: str) -> bytes:
    point = sm2_point(cert)
    if point is None:
        raise CertificateError(f"sm profile: {role} certificate {describe(cert)} has no SM2 public key")
    return point


@functools.lru_cache(maxsize=256)
def _cert_signature_ok(tbs: bytes, signature: bytes, point: bytes) -> bool:
    return sm2_verify(tbs, signature, point, DEFAULT_ID) or sm2_verify(tbs, signature, point, b"")


def sm2_issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Like :func:`gateway.sealing.base.x509_issued_by`, and for SM2-with-SM3 signatures too."""
    if child.signature_algorithm_oid.dotted_string != SM2_WITH_SM3_OID:
        return x509_issued_by(child, issuer)
    point = sm2_point(issuer)
    return point is not None and _cert_signature_ok(child.tbs_certificate_bytes, child.signature, point)


_PBKDF2_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def _decrypt_pkcs8(der: bytes, passphrase: bytes) -> bytes:
    algo = keys.EncryptedPrivateKeyInfo.load(der)["encryption_algorithm"]
    if algo["algorithm"].native != "pbes2" or algo.kdf != "pbkdf2" or algo.encryption_cipher != "aes" \
            or algo.encryption_mode != "cbc" or algo.kdf_hmac not in _PBKDF2_HASHES:
        raise EnvelopeError("our SM2 private key: only PBES2 with PBKDF2 and AES-CBC encryption is supported")
    key = PBKDF2HMAC(_PBKDF2_HASHES[algo.kdf_hmac](), algo.key_length, algo.kdf_salt, algo.kdf_iterations
                     ).derive(passphrase)
    encrypted = bytes(keys.EncryptedPrivateKeyInfo.load(der)["encrypted_data"].native)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(algo.encryption_iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(decryptor.update(encrypted) + decryptor.finalize()) + unpadder.finalize()


def _ec_private_key(key_pem: bytes, passphrase: bytes | None) -> tuple[Any, Any]:
    """(ECPrivateKey, curve parameters) from PKCS#8, encrypted PKCS#8 or SEC1 PEM."""
    kind, headers, der = pem.unarmor(key_pem)
    if kind == "ENCRYPTED PRIVATE KEY":
        if not passphrase:
            raise EnvelopeError("our SM2 private key is encrypted: a passphrase is needed")
        der, kind = _decrypt_pkcs8(der, passphrase), "PRIVATE KEY"
    elif passphrase:
        raise EnvelopeError("our SM2 private key: a passphrase was given but the key is not encrypted")
    if kind == "PRIVATE KEY":
        info = keys.PrivateKeyInfo.load(der)
        return info["private_key"].parsed, info["private_key_algorithm"]["parameters"]
    if kind == "EC PRIVATE KEY" and "Proc-Type" not in headers:
        parsed = keys.ECPrivateKey.load(der)
        return parsed, parsed["parameters"]
    raise EnvelopeError(f"our SM2 private key: unsupported PEM type {kind!r} (use PKCS#8)")


def _read_scalar(ours: Credentials) -> int:
    try:
        ec_key, params = _ec_private_key(ours.key_pem, ours.passphrase)
        curve = params.chosen.dotted if params.name == "named" else ""
        d = int(ec_key["private_key"].native)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise EnvelopeError("our SM2 private key cannot be read (wrong passphrase, or not an SM2 PEM key)") from exc
    if curve != SM2_CURVE_OID or not 0 < d < _N - 1:
        raise EnvelopeError("our private key is not an SM2 key")
    return d


@functools.lru_cache(maxsize=32)
def load_sm2_signer(ours: Credentials) -> Sm2Signer:
    """Our SM2 key and certificate, checked to belong together (cached: the check costs a scalar multiplication)."""
    cert = load_certificate(ours.cert_pem, "our certificate")
    point = _require_point(cert, "our")
    d = _read_scalar(ours)
    if bytes.fromhex(kG(d, sm2_G, 64)) != point:
        raise EnvelopeError(f"our SM2 private key does not match our certificate {describe(cert)}")
    return Sm2Signer(d, cert, point)


# --- the profile --------------------------------------------------------------------------------------------------

def _our_signer(ours: Credentials, now: datetime) -> Sm2Signer:
    signer = load_sm2_signer(ours)
    check_validity(signer.cert, now, "our")
    return signer


def _signature(body: bytes, signer: Sm2Signer) -> SmSignature:
    cert = asn1_x509.Certificate.load(signer.cert.public_bytes(serialization.Encoding.DER))
    return SmSignature({"version": VERSION, "signer_certificate": cert, "signature": sm2_sign(body, signer)})


def _sm4(key: bytes, iv: bytes, data: bytes, *, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.SM4(key), modes.CBC(iv))
    if encrypt:
        padder = padding.PKCS7(128).padder()
        encryptor = cipher.encryptor()
        return encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize()
    decryptor, unpadder = cipher.decryptor(), padding.PKCS7(128).unpadder()
    return unpadder.update(decryptor.update(data) + decryptor.finalize()) + unpadder.finalize()


def _mac(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, hashes.SM3())
    mac.update(iv + ciphertext)
    return mac.finalize()


class SmProfile:
    """SM2/SM3 signature, SM4-CBC + HMAC-SM3 content, SM2-wrapped keys, in the DER container above."""

    name: str = "sm"
    external_ok: bool = True

    def seal(self, body: bytes, ours: Credentials, peer: Peer, *, now: datetime | None = None) -> bytes:
        when = resolve_now(now)
        signer = _our_signer(ours, when)
        recipient = check_peer_for_sealing(peer, when, issued_by=sm2_issued_by)
        point = _require_point(recipient, "peer")
        check_usage(recipient, "peer", signing=False)
        inner = SmSignedContent({"signature": _signature(body, signer), "content": body}).dump()
        key, iv = secrets.token_bytes(32), secrets.token_bytes(16)
        encrypted = _sm4(key[:16], iv, inner, encrypt=True)
        return bytes(SmSealed({
            "version": VERSION, "recipient_sm3": sm3(recipient.public_bytes(serialization.Encoding.DER)),
            "wrapped_key": sm2_encrypt(key, point), "iv": iv, "encrypted_content": encrypted,
            "mac": _mac(key[16:], iv, encrypted),
        }).dump())

    def open(self, sealed: bytes, ours: Credentials, peer: Peer, *, now: datetime | None = None) -> Opened:
        when = resolve_now(now)
        inner = _decrypt(sealed, load_sm2_signer(ours))
        try:
            parsed = SmSignedContent.load(inner, strict=True)
            content, signature = bytes(parsed["content"].native), parsed["signature"]
        except (ValueError, TypeError) as exc:
            raise SignatureError(f"sm: the decrypted content is not an SmSignedContent ({exc})") from exc
        signer, raw = _verify(content, signature, peer.trusted_ca_pems, when)
        check_peer_signer(signer, peer)
        return opened(content, signer, raw)


def _parse_sealed(sealed: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    try:
        outer = SmSealed.load(sealed, strict=True)
        version = outer["version"].native
        fields = tuple(bytes(outer[name].native) for name in
                       ("recipient_sm3", "wrapped_key", "iv", "encrypted_content", "mac"))
    except (ValueError, TypeError) as exc:
        raise DecryptError(f"sm: not an SmSealed container ({exc})") from exc
    if version != VERSION:
        raise DecryptError(f"sm: container version {version} is not supported (expected {VERSION})")
    return fields  # type: ignore[return-value]


def _decrypt(sealed: bytes, ours: Sm2Signer) -> bytes:
    recipient, wrapped, iv, encrypted, mac = _parse_sealed(sealed)
    if not hmac.compare_digest(recipient, sm3(ours.cert.public_bytes(serialization.Encoding.DER))):
        raise DecryptError(f"sm: sealed for another recipient certificate (SM3 {recipient.hex()[:16]}...), "
                           f"not ours {describe(ours.cert)}")
    key = sm2_decrypt(wrapped, ours)
    if len(key) != 32 or len(iv) != 16:
        raise DecryptError("sm: the wrapped key or the IV has the wrong length")
    if not hmac.compare_digest(_mac(key[16:], iv, encrypted), mac):
        raise DecryptError("sm: the ciphertext or IV was altered (HMAC-SM3 mismatch)")
    try:
        return _sm4(key[:16], iv, encrypted, encrypt=False)
    except ValueError as exc:
        raise DecryptError("sm: SM4 padding is invalid") from exc


def _verify(content: bytes, container: Any, trusted: tuple[bytes, ...], now: datetime
            ) -> tuple[x509.Certificate, bytes]:
    anchors = load_trusted(trusted)
    try:
        version = container["version"].native
        cert = load_certificates(container["signer_certificate"].dump(), "signer certificate")[0]
        signature = bytes(container["signature"].native)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"sm: malformed SmSignature ({exc})") from exc
    if version != VERSION:
        raise SignatureError(f"sm: signature container version {version} is not supported (expected {VERSION})")
    if not sm2_verify(content, signature, _require_point(cert, "signer")):
        raise SignatureError(f"sm: the SM2 signature by {describe(cert)} does not verify (payload or signature "
                             "altered)")
    check_chain(cert, [], anchors, now, role="signer", issued_by=sm2_issued_by)
    check_usage(cert, "signer", signing=True)
    return cert, signature


# --- detached signatures (receipts) -----------------------------------------------------------------------------

def sign_detached(body: bytes, ours: Credentials) -> bytes:
    """An SmSignature (DER) over ``body`` with our SM2 key."""
    return bytes(_signature(body, _our_signer(ours, resolve_now(None))).dump())


def verify_detached(body: bytes, signature: bytes, trusted: tuple[bytes, ...], now: datetime | None) -> Opened:
    """Check an SmSignature over ``body``; the signer must chain to ``trusted``."""
    try:
        container = SmSignature.load(signature, strict=True)
    except ValueError as exc:
        raise SignatureError(f"sm: not an SmSignature or CMS SignedData ({exc})") from exc
    cert, raw = _verify(body, container, trusted, resolve_now(now))
    return opened(body, cert, raw)
