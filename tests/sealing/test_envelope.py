"""Envelope profiles against the real ``openssl`` and ``xmlsec1`` binaries, in both directions, and every refusal."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gateway.sealing import get_profile
from gateway.sealing import sm as envelope_sm
from gateway.sealing.base import (
    CertificateError,
    Credentials,
    DecryptError,
    EnvelopeError,
    Opened,
    Peer,
    Profile,
    SignatureError,
)
from gateway.sealing.signatures import sign_detached, verify_detached
from tests.support.pki import CA, SM2_DEFAULT_ID, Issued, make_ca

NOW = datetime.now(UTC)
PAST = NOW - timedelta(days=5)  # when the expired certificates were still valid
FUTURE = NOW + timedelta(days=5)  # when the not-yet-valid certificates are valid
RECORD = '{"dataset": "penalty", "key": "京01-2024-001", "name": "某某公司", "amount": "1.5万元"},'
BODY = ('{"batch": "b-0001", "records": [' + RECORD * 300 + '{}]}\r\n').encode()
XML_BODY = ('<?xml version="1.0" encoding="UTF-8"?>\n<batch xmlns="urn:credit-gateway:batch" id="b-0001">'
            '<record seq="1"><name>某某公司</name><amount unit="万元">1.5</amount></record></batch>').encode()
DS = "http://www.w3.org/2000/09/xmldsig#"
XMLSEC_ALGORITHMS = {"rsa": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
                     "ec": "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"}


def run(args: list[str], cwd: Path, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(args, cwd=cwd, input=stdin, capture_output=True, check=False, timeout=60)
    assert done.returncode == 0, f"{' '.join(args)} failed: {done.stderr.decode(errors='replace')}"
    return done.stdout


def flip(data: bytes, index: int) -> bytes:
    """``data`` with one bit changed at ``index``."""
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


@dataclass(frozen=True)
class World:
    """A CA and the parties the tests need; every ``alice*`` certificate has the subject CN=alice."""

    kind: str
    ca: CA
    alice: Issued  # the signer; key encrypted with a passphrase
    bob: Issued  # the recipient (RSA for CMS)
    carol: Issued  # another subject from the same CA
    expired: Issued  # CN=alice, expired yesterday
    future: Issued  # CN=alice, valid from tomorrow
    stranger: Issued  # CN=alice from another CA
    rogue: Issued  # CN=alice from a different CA that has the same name as ours
    other_ca: CA

    @staticmethod
    def creds(who: Issued) -> Credentials:
        return Credentials(who.key_pem, who.cert_pem, who.passphrase)

    def peer(self, who: Issued) -> Peer:
        return Peer(who.cert_pem, (self.ca.root.cert_pem,))

    def passin(self) -> list[str]:
        return ["-passin", "pass:" + (self.alice.passphrase or b"").decode()]


def make_world(base: Path, kind: str) -> World:
    ca = make_ca(base / "ca", kind)
    recipient = "rsa" if kind == "ec" else None  # cms encrypts to RSA certificates only
    other, rogue_ca = make_ca(base / "other", kind, "Other CA"), make_ca(base / "rogue", kind)
    return World(
        kind=kind, ca=ca, other_ca=other,
        alice=ca.issue("alice", passphrase=b"alice-pw"),
        bob=ca.issue("bob", kind=recipient),
        carol=ca.issue("carol", kind=recipient),
        expired=ca.issue("alice-expired", common_name="alice", not_before=NOW - timedelta(days=20),
                         not_after=NOW - timedelta(days=1)),
        future=ca.issue("alice-future", common_name="alice", not_before=NOW + timedelta(days=1)),
        stranger=other.issue("alice", common_name="alice"),
        rogue=rogue_ca.issue("alice", common_name="alice"),
    )


@pytest.fixture(scope="module")
def rsa_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("rsa"), "rsa")


@pytest.fixture(scope="module")
def ec_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("ec"), "ec")


@pytest.fixture(scope="module")
def sm2_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("sm2"), "sm2")


@pytest.fixture(params=["rsa", "ec"])
def world(request: pytest.FixtureRequest) -> World:
    """The RSA world and the EC world (EC signers, RSA recipients)."""
    found: World = request.getfixturevalue(f"{request.param}_world")
    return found


def assert_from_alice(result: Opened, world: World, body: bytes) -> None:
    cert = x509.load_pem_x509_certificate(world.alice.cert_pem)
    assert result.body == body
    assert result.signer_subject == cert.subject.rfc4514_string()
    assert result.signer_fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert result.digest_sha256 == hashlib.sha256(body).hexdigest()
    assert result.signature


def refused_cases(world: World) -> list[tuple[Issued, Peer, datetime, type[EnvelopeError], str]]:
    """(sender, what the receiver trusts, when sealed, expected error, words in it)."""
    trusted_other = Peer(world.alice.cert_pem, (world.other_ca.root.cert_pem,))
    return [
        (world.stranger, world.peer(world.alice), NOW, CertificateError, "issuer 'CN=Other CA"),
        (world.rogue, world.peer(world.alice), NOW, CertificateError, "did not sign this certificate"),
        (world.carol, world.peer(world.alice), NOW, CertificateError, "wrong signer"),
        (world.expired, world.peer(world.alice), PAST, CertificateError, "expired at"),
        (world.future, world.peer(world.alice), FUTURE, CertificateError, "not yet valid"),
        (world.alice, trusted_other, NOW, CertificateError, "not issued by a trusted CA"),
    ]


REFUSALS = ["unknown CA", "same-named rogue CA", "other subject", "expired", "not yet valid", "untrusted CA list"]


class TestCms:
    """CMS SignedData in EnvelopedData, against `openssl cms`."""

    profile: Profile = get_profile("cms")

    def seal(self, world: World, sender: Issued, when: datetime = NOW) -> bytes:
        return self.profile.seal(BODY, world.creds(sender), world.peer(world.bob), now=when)

    def open(self, world: World, sealed: bytes, peer: Peer | None = None) -> Opened:
        return self.profile.open(sealed, world.creds(world.bob), peer or world.peer(world.alice))

    def openssl_seal(self, world: World, tmp_path: Path, *extra: str, cipher: str = "-aes256",
                     signed_hook: object = None) -> bytes:
        (tmp_path / "body").write_bytes(BODY)
        run(["openssl", "cms", "-sign", "-binary", "-nodetach", "-md", "sha256", "-in", "body", "-signer",
             str(world.alice.cert_path), "-inkey", str(world.alice.key_path), *world.passin(), *extra,
             "-outform", "DER", "-out", "signed.der"], tmp_path)
        if callable(signed_hook):
            (tmp_path / "signed.der").write_bytes(signed_hook((tmp_path / "signed.der").read_bytes()))
        run(["openssl", "cms", "-encrypt", "-binary", cipher, "-in", "signed.der", "-outform", "DER", "-out",
             "sealed.der", str(world.bob.cert_path)], tmp_path)
        return (tmp_path / "sealed.der").read_bytes()

    def test_openssl_decrypts_and_verifies_our_envelope(self, world: World, tmp_path: Path) -> None:
        """`openssl cms -decrypt | openssl cms -verify -CAfile` gives back our body."""
        (tmp_path / "sealed.der").write_bytes(self.seal(world, world.alice))
        inner = run(["openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-in", "sealed.der", "-recip",
                     str(world.bob.cert_path), "-inkey", str(world.bob.key_path)], tmp_path)
        body = run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-CAfile",
                    str(world.ca.root.cert_path)], tmp_path, stdin=inner)
        assert body == BODY

    def test_envelope_uses_aes256_cbc(self, world: World, tmp_path: Path) -> None:
        """openssl reports AES-256-CBC content encryption and RSA key transport in our envelope."""
        (tmp_path / "sealed.der").write_bytes(self.seal(world, world.alice))
        printed = run(["openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", "sealed.der"], tmp_path)
        assert b"aes-256-cbc" in printed and b"rsaEncryption" in printed

    def test_we_open_what_openssl_signs_and_encrypts(self, world: World, tmp_path: Path) -> None:
        """`openssl cms -sign | openssl cms -encrypt -aes256` (DER) opens to the body and names the signer."""
        assert_from_alice(self.open(world, self.openssl_seal(world, tmp_path)), world, BODY)

    def test_we_open_openssl_envelopes_without_signed_attributes(self, world: World, tmp_path: Path) -> None:
        """A SignedData made with `openssl cms -sign -noattr` verifies too (signature over the content)."""
        assert_from_alice(self.open(world, self.openssl_seal(world, tmp_path, "-noattr")), world, BODY)

    def test_round_trip_returns_body_and_signer(self, world: World) -> None:
        """Our seal, our open: the body, alice's subject and fingerprint, the SHA-256 of the body."""
        assert_from_alice(self.open(world, self.seal(world, world.alice)), world, BODY)

    def test_openssl_verifies_our_detached_signature(self, world: World, tmp_path: Path) -> None:
        """sign_detached makes a CMS detached signature that `openssl cms -verify -content` accepts."""
        (tmp_path / "body").write_bytes(BODY)
        (tmp_path / "sig.der").write_bytes(sign_detached(BODY, world.creds(world.alice)))
        run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", "sig.der", "-content", "body",
             "-CAfile", str(world.ca.root.cert_path), "-out", "/dev/null"], tmp_path)

    def test_we_verify_openssl_detached_signature(self, world: World, tmp_path: Path) -> None:
        """verify_detached accepts `openssl cms -sign` without -nodetach, and refuses another body."""
        (tmp_path / "body").write_bytes(BODY)
        run(["openssl", "cms", "-sign", "-binary", "-md", "sha256", "-in", "body", "-signer",
             str(world.alice.cert_path), "-inkey", str(world.alice.key_path), *world.passin(),
             "-outform", "DER", "-out", "sig.der"], tmp_path)
        signature = (tmp_path / "sig.der").read_bytes()
        assert_from_alice(verify_detached(BODY, signature, (world.ca.root.cert_pem,)), world, BODY)
        with pytest.raises(SignatureError, match="messageDigest"):
            verify_detached(BODY + b" ", signature, (world.ca.root.cert_pem,))

    def test_tampered_ciphertext_is_refused(self, world: World) -> None:
        """One bit changed in the encrypted body: the messageDigest check refuses it."""
        sealed = self.seal(world, world.alice)
        with pytest.raises(SignatureError, match="messageDigest"):
            self.open(world, flip(sealed, len(sealed) // 2))

    def test_tampered_signature_is_refused(self, world: World, tmp_path: Path) -> None:
        """openssl seals a SignedData whose signature value has one bit changed: refused."""
        sealed = self.openssl_seal(world, tmp_path, signed_hook=lambda der: flip(der, len(der) - 2))
        with pytest.raises(SignatureError, match="does not verify"):
            self.open(world, sealed)

    def test_tampered_detached_payload_is_refused(self, world: World) -> None:
        """A receipt body changed after signing does not verify."""
        signature = sign_detached(BODY, world.creds(world.alice))
        with pytest.raises(SignatureError, match="content altered"):
            verify_detached(BODY.replace(b"b-0001", b"b-0002"), signature, (world.ca.root.cert_pem,))

    @pytest.mark.parametrize("case", range(len(REFUSALS)), ids=REFUSALS)
    def test_wrong_or_invalid_signer_is_refused(self, world: World, case: int) -> None:
        """Unknown CA, rogue CA, another subject, expired, not yet valid, untrusted list: CertificateError."""
        sender, peer, when, error, words = refused_cases(world)[case]
        with pytest.raises(error, match=words):
            self.open(world, self.seal(world, sender, when), peer)

    def test_expired_signer_was_fine_when_valid(self, world: World) -> None:
        """The expired certificate's envelope opens when checked at a time inside its validity."""
        sealed = self.seal(world, world.expired, PAST)
        result = self.profile.open(sealed, world.creds(world.bob), world.peer(world.alice), now=PAST)
        assert result.body == BODY

    def test_wrong_recipient_cannot_open(self, world: World) -> None:
        """carol's key does not open an envelope sealed for bob."""
        with pytest.raises(DecryptError, match="cannot decrypt"):
            self.profile.open(self.seal(world, world.alice), world.creds(world.carol), world.peer(world.alice))

    def test_seal_refuses_expired_peer_certificate(self, world: World) -> None:
        """We do not encrypt to an expired peer certificate."""
        with pytest.raises(CertificateError, match=r"peer certificate .* expired"):
            self.profile.seal(BODY, world.creds(world.alice), world.peer(world.expired))

    def test_seal_refuses_our_expired_certificate(self, world: World) -> None:
        """We do not sign with an expired certificate of ours."""
        with pytest.raises(CertificateError, match=r"our certificate .* expired"):
            self.seal(world, world.expired)

    def test_aes128_envelopes_are_refused(self, world: World, tmp_path: Path) -> None:
        """The profile is AES-256: an AES-128 envelope from openssl is refused before decryption."""
        with pytest.raises(DecryptError, match="aes128_cbc"):
            self.open(world, self.openssl_seal(world, tmp_path, cipher="-aes128"))

    def test_ec_recipient_is_refused(self, ec_world: World) -> None:
        """Sealing to an EC certificate is refused with a message asking for an RSA encryption certificate."""
        peer = ec_world.peer(ec_world.alice)
        with pytest.raises(CertificateError, match="RSA encryption certificate"):
            self.profile.seal(BODY, ec_world.creds(ec_world.carol), peer)

    def test_rsa_pss_signatures_from_openssl_verify(self, rsa_world: World, tmp_path: Path) -> None:
        """An RSA-PSS SignedData (`-keyopt rsa_padding_mode:pss`) opens too."""
        sealed = self.openssl_seal(rsa_world, tmp_path, "-keyopt", "rsa_padding_mode:pss")
        printed = run(["openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", "signed.der"], tmp_path)
        assert b"rsassaPss" in printed
        assert_from_alice(self.open(rsa_world, sealed), rsa_world, BODY)

    def test_wrong_passphrase_is_refused(self, rsa_world: World) -> None:
        """Our encrypted key with the wrong passphrase gives a clear error, not a crash."""
        ours = Credentials(rsa_world.alice.key_pem, rsa_world.alice.cert_pem, b"wrong")
        with pytest.raises(EnvelopeError, match="wrong passphrase"):
            self.profile.seal(BODY, ours, rsa_world.peer(rsa_world.bob))


# --- sm -------------------------------------------------------------------------------------------------------------

def sm2_signature_of(container: bytes) -> bytes:
    return bytes(envelope_sm.SmSignature.load(container)["signature"].native)


def der_of(cert_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


def sm_container(signer: Issued, signature: bytes) -> envelope_sm.SmSignature:
    """An SmSignature around a signature made elsewhere (openssl)."""
    cert = asn1_x509.Certificate.load(der_of(signer.cert_pem))
    return envelope_sm.SmSignature({"version": 1, "signer_certificate": cert, "signature": signature})


def openssl_sm2_sign(world: World, tmp_path: Path, body: bytes) -> bytes:
    (tmp_path / "to-sign").write_bytes(body)
    run(["openssl", "pkeyutl", "-sign", "-rawin", "-digest", "sm3", "-pkeyopt", f"distid:{SM2_DEFAULT_ID}",
         "-inkey", str(world.alice.key_path), *world.passin(), "-in", "to-sign", "-out", "openssl.sig"], tmp_path)
    return (tmp_path / "openssl.sig").read_bytes()


def openssl_sm_seal(world: World, tmp_path: Path, inner: bytes) -> bytes:
    """The SmSealed container, every cryptographic step done by the openssl binary."""
    (tmp_path / "inner.der").write_bytes(inner)
    key = run(["openssl", "rand", "32"], tmp_path)
    iv = run(["openssl", "rand", "16"], tmp_path)
    (tmp_path / "key.bin").write_bytes(key)
    run(["openssl", "x509", "-in", str(world.bob.cert_path), "-pubkey", "-noout", "-out", "bob.pub"], tmp_path)
    wrapped = run(["openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey", "bob.pub", "-in", "key.bin"], tmp_path)
    encrypted = run(["openssl", "enc", "-sm4-cbc", "-K", key[:16].hex(), "-iv", iv.hex(), "-in", "inner.der"],
                    tmp_path)
    mac = run(["openssl", "dgst", "-sm3", "-mac", "HMAC", "-macopt", f"hexkey:{key[16:].hex()}", "-binary"],
              tmp_path, stdin=iv + encrypted)
    return bytes(envelope_sm.SmSealed({
        "version": 1, "recipient_sm3": envelope_sm.sm3(der_of(world.bob.cert_pem)), "wrapped_key": wrapped, "iv": iv,
        "encrypted_content": encrypted, "mac": mac,
    }).dump())


class TestSm:
    """SM2/SM3 signatures, SM4-CBC + HMAC-SM3 content, SM2 key wrapping, against openssl 3."""

    profile: Profile = get_profile("sm")

    def seal(self, world: World, sender: Issued, when: datetime = NOW) -> bytes:
        return self.profile.seal(BODY, world.creds(sender), world.peer(world.bob), now=when)

    def open(self, world: World, sealed: bytes, peer: Peer | None = None) -> Opened:
        return self.profile.open(sealed, world.creds(world.bob), peer or world.peer(world.alice))

    def test_openssl_verifies_our_signature(self, sm2_world: World, tmp_path: Path) -> None:
        """Our SM2 signature passes `openssl pkeyutl -verify -digest sm3 -pkeyopt distid:...` and `dgst -sm3`."""
        (tmp_path / "body").write_bytes(BODY)
        (tmp_path / "sig.der").write_bytes(sm2_signature_of(sign_detached(BODY, sm2_world.creds(sm2_world.alice))))
        out = run(["openssl", "pkeyutl", "-verify", "-rawin", "-digest", "sm3", "-pkeyopt",
                   f"distid:{SM2_DEFAULT_ID}", "-certin", "-inkey", str(sm2_world.alice.cert_path),
                   "-sigfile", "sig.der", "-in", "body"], tmp_path)
        assert b"Signature Verified Successfully" in out
        run(["openssl", "x509", "-in", str(sm2_world.alice.cert_path), "-pubkey", "-noout", "-out", "a.pub"], tmp_path)
        out = run(["openssl", "dgst", "-sm3", "-verify", "a.pub", "-sigopt", f"distid:{SM2_DEFAULT_ID}",
                   "-signature", "sig.der", "body"], tmp_path)
        assert b"Verified OK" in out

    def test_openssl_refuses_our_signature_over_another_body(self, sm2_world: World, tmp_path: Path) -> None:
        """The interop check can fail: openssl rejects our signature for a changed body."""
        (tmp_path / "body").write_bytes(BODY + b" ")
        (tmp_path / "sig.der").write_bytes(sm2_signature_of(sign_detached(BODY, sm2_world.creds(sm2_world.alice))))
        done = subprocess.run(["openssl", "pkeyutl", "-verify", "-rawin", "-digest", "sm3", "-pkeyopt",
                               f"distid:{SM2_DEFAULT_ID}", "-certin", "-inkey", str(sm2_world.alice.cert_path),
                               "-sigfile", "sig.der", "-in", "body"], cwd=tmp_path, capture_output=True, check=False)
        assert done.returncode != 0

    def test_we_verify_openssl_signatures(self, sm2_world: World, tmp_path: Path) -> None:
        """SM2 signatures from `openssl pkeyutl -sign` and `openssl dgst -sm3 -sign` verify with our code."""
        by_pkeyutl = openssl_sm2_sign(sm2_world, tmp_path, BODY)
        container = sm_container(sm2_world.alice, by_pkeyutl).dump()
        assert_from_alice(verify_detached(BODY, container, (sm2_world.ca.root.cert_pem,)), sm2_world, BODY)
        (tmp_path / "body").write_bytes(BODY)
        run(["openssl", "dgst", "-sm3", "-sign", str(sm2_world.alice.key_path), *sm2_world.passin(), "-sigopt",
             f"distid:{SM2_DEFAULT_ID}", "-out", "dgst.sig", "body"], tmp_path)
        point = envelope_sm.sm2_point(x509.load_pem_x509_certificate(sm2_world.alice.cert_pem))
        assert point is not None
        assert envelope_sm.sm2_verify(BODY, (tmp_path / "dgst.sig").read_bytes(), point)
        assert not envelope_sm.sm2_verify(BODY + b" ", (tmp_path / "dgst.sig").read_bytes(), point)

    def test_openssl_opens_our_envelope_step_by_step(self, sm2_world: World, tmp_path: Path) -> None:
        """openssl unwraps the key (pkeyutl -decrypt), checks the HMAC-SM3, decrypts SM4-CBC, verifies SM2."""
        outer = envelope_sm.SmSealed.load(self.seal(sm2_world, sm2_world.alice))
        (tmp_path / "wrapped.der").write_bytes(outer["wrapped_key"].native)
        key = run(["openssl", "pkeyutl", "-decrypt", "-inkey", str(sm2_world.bob.key_path), "-in", "wrapped.der"],
                  tmp_path)
        assert len(key) == 32
        iv, encrypted = outer["iv"].native, outer["encrypted_content"].native
        mac = run(["openssl", "dgst", "-sm3", "-mac", "HMAC", "-macopt", f"hexkey:{key[16:].hex()}", "-binary"],
                  tmp_path, stdin=iv + encrypted)
        assert mac == outer["mac"].native
        inner = run(["openssl", "enc", "-d", "-sm4-cbc", "-K", key[:16].hex(), "-iv", iv.hex()], tmp_path,
                    stdin=encrypted)
        signed = envelope_sm.SmSignedContent.load(inner)
        assert signed["content"].native == BODY
        (tmp_path / "body").write_bytes(BODY)
        (tmp_path / "sig.der").write_bytes(signed["signature"]["signature"].native)
        (tmp_path / "signer.der").write_bytes(signed["signature"]["signer_certificate"].dump())
        run(["openssl", "x509", "-inform", "DER", "-in", "signer.der", "-pubkey", "-noout", "-out", "s.pub"], tmp_path)
        run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "s.pub", "-rawin", "-digest", "sm3", "-pkeyopt",
             f"distid:{SM2_DEFAULT_ID}", "-sigfile", "sig.der", "-in", "body"], tmp_path)

    def test_we_open_an_envelope_openssl_made(self, sm2_world: World, tmp_path: Path) -> None:
        """Signature, key wrap, SM4-CBC and HMAC all by openssl: our open() returns the body and the signer."""
        signature = openssl_sm2_sign(sm2_world, tmp_path, BODY)
        inner = envelope_sm.SmSignedContent({"signature": sm_container(sm2_world.alice, signature),
                                              "content": BODY}).dump()
        assert_from_alice(self.open(sm2_world, openssl_sm_seal(sm2_world, tmp_path, inner)), sm2_world, BODY)

    def test_round_trip_returns_body_and_signer(self, sm2_world: World) -> None:
        """Our seal, our open: the body, alice's subject and fingerprint."""
        assert_from_alice(self.open(sm2_world, self.seal(sm2_world, sm2_world.alice)), sm2_world, BODY)

    def test_tampered_ciphertext_is_refused(self, sm2_world: World) -> None:
        """One bit changed in the SM4 ciphertext: the HMAC-SM3 refuses it before decryption."""
        sealed = self.seal(sm2_world, sm2_world.alice)
        with pytest.raises(DecryptError, match="HMAC-SM3 mismatch"):
            self.open(sm2_world, flip(sealed, len(sealed) // 2))

    def test_tampered_signature_is_refused(self, sm2_world: World, tmp_path: Path) -> None:
        """An otherwise valid envelope (made by openssl) whose SM2 signature has one bit changed: refused."""
        signature = openssl_sm2_sign(sm2_world, tmp_path, BODY)
        inner = envelope_sm.SmSignedContent({"signature": sm_container(sm2_world.alice, flip(signature, 10)),
                                              "content": BODY}).dump()
        with pytest.raises(SignatureError, match="does not verify"):
            self.open(sm2_world, openssl_sm_seal(sm2_world, tmp_path, inner))

    def test_tampered_payload_is_refused(self, sm2_world: World, tmp_path: Path) -> None:
        """The signature is over the original body; openssl seals a changed body with it: refused."""
        signature = openssl_sm2_sign(sm2_world, tmp_path, BODY)
        inner = envelope_sm.SmSignedContent({"signature": sm_container(sm2_world.alice, signature),
                                              "content": BODY.replace(b"b-0001", b"b-0666")}).dump()
        with pytest.raises(SignatureError, match="does not verify"):
            self.open(sm2_world, openssl_sm_seal(sm2_world, tmp_path, inner))

    def test_tampered_detached_payload_is_refused(self, sm2_world: World) -> None:
        """A receipt body changed after signing does not verify."""
        container = sign_detached(BODY, sm2_world.creds(sm2_world.alice))
        with pytest.raises(SignatureError, match="does not verify"):
            verify_detached(BODY + b"\n", container, (sm2_world.ca.root.cert_pem,))

    @pytest.mark.parametrize("case", range(len(REFUSALS)), ids=REFUSALS)
    def test_wrong_or_invalid_signer_is_refused(self, sm2_world: World, case: int) -> None:
        """Unknown CA, rogue CA, another subject, expired, not yet valid, untrusted list: CertificateError."""
        sender, peer, when, error, words = refused_cases(sm2_world)[case]
        with pytest.raises(error, match=words):
            self.open(sm2_world, self.seal(sm2_world, sender, when), peer)

    def test_wrong_recipient_cannot_open(self, sm2_world: World) -> None:
        """carol's key does not open an envelope sealed for bob (the recipient id differs)."""
        with pytest.raises(DecryptError, match="another recipient"):
            self.profile.open(self.seal(sm2_world, sm2_world.alice), sm2_world.creds(sm2_world.carol),
                              sm2_world.peer(sm2_world.alice))

    def test_key_wrapped_for_someone_else_does_not_unwrap(self, sm2_world: World) -> None:
        """With the recipient id forged to carol's, the SM2 key unwrap still fails with her key."""
        outer = envelope_sm.SmSealed.load(self.seal(sm2_world, sm2_world.alice))
        outer["recipient_sm3"] = envelope_sm.sm3(der_of(sm2_world.carol.cert_pem))
        with pytest.raises(DecryptError, match="does not decrypt with our key"):
            self.profile.open(outer.dump(force=True), sm2_world.creds(sm2_world.carol),
                              sm2_world.peer(sm2_world.alice))

    def test_seal_refuses_expired_peer_certificate(self, sm2_world: World) -> None:
        """We do not encrypt to an expired peer certificate."""
        with pytest.raises(CertificateError, match=r"peer certificate .* expired"):
            self.profile.seal(BODY, sm2_world.creds(sm2_world.alice), sm2_world.peer(sm2_world.expired))

    def test_accepts_certificates_openssl_signed_with_its_empty_default_id(self, sm2_world: World,
                                                                           tmp_path: Path) -> None:
        """A leaf that `openssl x509 -req -sm3` signed without -sigopt distid (empty ID) still chains."""
        world, ca = sm2_world, sm2_world.ca
        run(["openssl", "req", "-new", "-key", str(world.alice.key_path), *world.passin(), "-sm3", "-subj",
             "/C=CN/O=credit-gateway tests/CN=alice", "-out", "a.csr"], tmp_path)
        run(["openssl", "x509", "-req", "-in", "a.csr", "-CA", str(ca.root.cert_path), "-CAkey",
             str(ca.root.key_path), "-sm3", "-days", "5", "-set_serial", "77", "-out", "a.crt"], tmp_path)
        cert_pem = (tmp_path / "a.crt").read_bytes()
        container = sign_detached(BODY, Credentials(world.alice.key_pem, cert_pem, world.alice.passphrase))
        assert verify_detached(BODY, container, (ca.root.cert_pem,)).body == BODY
        with pytest.raises(CertificateError, match="did not sign"):
            verify_detached(BODY, container, (rogue_root(world),))

    def test_wrong_passphrase_is_refused(self, sm2_world: World) -> None:
        """Our PBES2-encrypted SM2 key with the wrong passphrase gives a clear error."""
        ours = Credentials(sm2_world.alice.key_pem, sm2_world.alice.cert_pem, b"wrong")
        with pytest.raises(EnvelopeError, match="wrong passphrase"):
            self.profile.seal(BODY, ours, sm2_world.peer(sm2_world.bob))

    def test_rsa_peer_is_refused(self, sm2_world: World, rsa_world: World) -> None:
        """The sm profile encrypts to SM2 certificates only."""
        peer = Peer(rsa_world.bob.cert_pem, (rsa_world.ca.root.cert_pem,))
        with pytest.raises(CertificateError, match="no SM2 public key"):
            self.profile.seal(BODY, sm2_world.creds(sm2_world.alice), peer)


def rogue_root(world: World) -> bytes:
    """The certificate of the rogue CA (same name as ours, another key)."""
    return (world.rogue.cert_path.parent / "ca.crt").read_bytes()


# --- xmldsig --------------------------------------------------------------------------------------------------------

def xmlsec1_template(kind: str) -> bytes:
    """XML_BODY with an empty enveloped-signature template for `xmlsec1 --sign` to fill in."""
    signature = (
        f'<Signature xmlns="{DS}"><SignedInfo>'
        '<CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
        f'<SignatureMethod Algorithm="{XMLSEC_ALGORITHMS[kind]}"/>'
        f'<Reference URI=""><Transforms><Transform Algorithm="{DS}enveloped-signature"/></Transforms>'
        '<DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><DigestValue/></Reference>'
        '</SignedInfo><SignatureValue/><KeyInfo><X509Data/></KeyInfo></Signature>'
    )
    return XML_BODY.replace(b"</batch>", signature.encode() + b"</batch>")


class TestXmlDsig:
    """Enveloped XML Signature, against `xmlsec1`."""

    profile: Profile = get_profile("xmldsig")

    def seal(self, world: World, sender: Issued, when: datetime = NOW, body: bytes = XML_BODY) -> bytes:
        return self.profile.seal(body, world.creds(sender), world.peer(world.bob), now=when)

    def open(self, world: World, sealed: bytes, peer: Peer | None = None) -> Opened:
        return self.profile.open(sealed, world.creds(world.bob), peer or world.peer(world.alice))

    def xmlsec1_verify(self, world: World, tmp_path: Path, signed: bytes) -> subprocess.CompletedProcess[bytes]:
        (tmp_path / "signed.xml").write_bytes(signed)
        return subprocess.run(["xmlsec1", "--verify", "--trusted-pem", str(world.ca.root.cert_path), "signed.xml"],
                              cwd=tmp_path, capture_output=True, check=False, timeout=60)

    def test_xmlsec1_verifies_our_signature(self, world: World, tmp_path: Path) -> None:
        """`xmlsec1 --verify --trusted-pem ca.crt` accepts our enveloped signature."""
        done = self.xmlsec1_verify(world, tmp_path, self.seal(world, world.alice))
        assert done.returncode == 0, done.stderr.decode()
        assert b"OK" in done.stderr

    def test_xmlsec1_refuses_our_signature_on_a_changed_document(self, world: World, tmp_path: Path) -> None:
        """The interop check can fail: xmlsec1 rejects our signed XML once a value is changed."""
        signed = self.seal(world, world.alice).replace(b">1.5<", b">9.5<")
        assert self.xmlsec1_verify(world, tmp_path, signed).returncode != 0

    def test_we_verify_what_xmlsec1_signs(self, world: World, tmp_path: Path) -> None:
        """A template signed by `xmlsec1 --sign` opens: the signed document without its Signature."""
        (tmp_path / "template.xml").write_bytes(xmlsec1_template(world.kind))
        key_and_cert = f"{world.alice.key_path},{world.alice.cert_path}"
        run(["xmlsec1", "--sign", "--privkey-pem", key_and_cert, "--pwd", (world.alice.passphrase or b"").decode(),
             "--output", "signed.xml", "template.xml"], tmp_path)
        result = self.open(world, (tmp_path / "signed.xml").read_bytes())
        assert_from_alice(result, world, result.body)
        assert b"<name>\xe6\x9f\x90\xe6\x9f\x90\xe5\x85\xac\xe5\x8f\xb8</name>" in result.body
        assert b"Signature" not in result.body

    def test_round_trip_returns_signed_document(self, world: World) -> None:
        """Our seal, our open: the canonical document without the Signature, and alice as signer."""
        result = self.open(world, self.seal(world, world.alice))
        assert_from_alice(result, world, result.body)
        assert result.body.startswith(b'<batch xmlns="urn:credit-gateway:batch" id="b-0001">')
        assert b"Signature" not in result.body

    def test_tampered_payload_is_refused(self, world: World) -> None:
        """A changed amount in the signed document: refused."""
        with pytest.raises(SignatureError, match="does not verify"):
            self.open(world, self.seal(world, world.alice).replace(b">1.5<", b">9.5<"))

    def test_tampered_signature_is_refused(self, world: World) -> None:
        """A changed SignatureValue: refused."""
        sealed = self.seal(world, world.alice)
        start = sealed.index(b"<ds:SignatureValue>") + len(b"<ds:SignatureValue>") + 4
        swapped = b"B" if sealed[start:start + 1] != b"B" else b"C"
        with pytest.raises(SignatureError, match="does not verify"):
            self.open(world, sealed[:start] + swapped + sealed[start + 1:])

    @pytest.mark.parametrize("case", range(len(REFUSALS)), ids=REFUSALS)
    def test_wrong_or_invalid_signer_is_refused(self, world: World, case: int) -> None:
        """Unknown CA, rogue CA, another subject, expired, not yet valid, untrusted list: CertificateError."""
        sender, peer, when, error, words = refused_cases(world)[case]
        with pytest.raises(error, match=words):
            self.open(world, self.seal(world, sender, when), peer)

    def test_document_with_dtd_is_refused(self, world: World) -> None:
        """A DOCTYPE (entity expansion, external entities) is refused before anything else."""
        hostile = (b'<?xml version="1.0"?><!DOCTYPE batch [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
                   b"<batch>&b;</batch>")
        with pytest.raises(EnvelopeError, match="DTD"):
            self.open(world, hostile)
        with pytest.raises(EnvelopeError, match="DTD"):
            self.seal(world, world.alice, body=hostile)

    def test_wrapped_second_signature_is_refused(self, world: World) -> None:
        """A copy of the signature nested inside the document (signature wrapping) is refused."""
        sealed = self.seal(world, world.alice)
        signature = sealed[sealed.index(b"<ds:Signature"):sealed.index(b"</ds:Signature>") + 15]
        wrapped = sealed.replace(b"<record ", b"<extra>" + signature + b"</extra><record ", 1)
        with pytest.raises(SignatureError, match="exactly one ds:Signature"):
            self.open(world, wrapped)

    def test_non_xml_body_is_refused(self, world: World) -> None:
        """The xmldsig profile signs XML only: a JSON body gets a clear error."""
        with pytest.raises(EnvelopeError, match="not well-formed XML"):
            self.seal(world, world.alice, body=BODY)


# --- none and the registry ------------------------------------------------------------------------------------------

class TestNone:
    """The identity profile for tests and internal links."""

    def test_passes_the_body_through(self, rsa_world: World) -> None:
        """seal and open return the body unchanged, with its digest and no signer."""
        profile = get_profile("none")
        sealed = profile.seal(BODY, rsa_world.creds(rsa_world.alice), rsa_world.peer(rsa_world.bob))
        result = profile.open(sealed, rsa_world.creds(rsa_world.bob), rsa_world.peer(rsa_world.alice))
        assert sealed == BODY
        assert (result.body, result.signer_subject, result.signature) == (BODY, "", b"")
        assert result.digest_sha256 == hashlib.sha256(BODY).hexdigest()

    def test_is_not_for_external_targets(self) -> None:
        """Only `none` says it must not be used for an external target."""
        assert {name: get_profile(name).external_ok for name in ("cms", "sm", "xmldsig", "none")} == {
            "cms": True, "sm": True, "xmldsig": True, "none": False}


class TestGetProfile:
    """The profile registry."""

    @pytest.mark.parametrize("name", ["cms", "sm", "xmldsig", "none"])
    def test_known_names_give_profiles(self, name: str) -> None:
        """Each known name gives an object that satisfies the Profile protocol and carries its name."""
        profile = get_profile(name)
        assert isinstance(profile, Profile)
        assert profile.name == name

    def test_unknown_name_lists_the_known_ones(self) -> None:
        """An unknown profile is an EnvelopeError naming the choices."""
        with pytest.raises(EnvelopeError, match="known: cms, none, sm, xmldsig"):
            get_profile("pgp")

    def test_credentials_repr_hides_the_key(self, rsa_world: World) -> None:
        """Credentials never show the private key or passphrase in logs."""
        text = repr(rsa_world.creds(rsa_world.alice))
        assert "PRIVATE KEY" not in text and "alice-pw" not in text
