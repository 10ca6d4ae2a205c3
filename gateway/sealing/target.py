"""Per-target sealing: what a target's ``[targets.NAME.envelope]`` table turns into.

A :class:`Sealing` seals each batch body once, when the batch is made (the sealed bytes are what is stored,
resent on retry and kept as evidence), and verifies the peer's signed receipt: the receipt's canonical
bytes (JSON, sorted keys) must carry a detached signature by the peer's certificate, chaining to the
trusted CAs. Keys and passphrases are read from files and environment variables, never logged.

Rotation. When the platform rotates its key, ``peer_cert`` becomes the new certificate (we encrypt to it at
once) and the old one moves to ``previous_peer_certs``: receipts it signed are still accepted until
``overlap_until``, then refused as retired. When we rotate ours, ``key``/``cert`` become the new pair (we sign
with it at once) and the old pair moves to ``previous_key``/``previous_cert``: what a peer still encrypts
to the old certificate can be opened until ``overlap_until`` (see :meth:`Sealing.our_keys`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.errors import Problem
from gateway.sealing import get_profile, profile_names
from gateway.sealing.base import (
    Credentials,
    EnvelopeError,
    Opened,
    Peer,
    SignatureError,
    fingerprint_sha256,
    load_certificate,
    load_certificates,
)
from gateway.sealing.signatures import verify_detached
from gateway.settings import parse_settings, read_secret, setting

CONTENT_TYPES = {"none": "application/json", "cms": "application/pkcs7-mime", "sm": "application/x-sm-envelope",
                 "xmldsig": "application/xml"}


@dataclass(frozen=True)
class EnvelopeSettings:
    profile: str = setting("none", choices=profile_names(),
                           help="cms | sm | xmldsig | none (none is refused on a target with external = true)")
    key: str = setting("", help="our private key (PEM), e.g. certs/gateway.key")
    cert: str = setting("", help="our certificate (PEM); intermediates may follow it in the file")
    passphrase_env: str = setting("", help="environment variable with the key's passphrase")
    passphrase_file: str = setting("", help="file with the key's passphrase")
    peer_cert: str = setting("", help="the platform's certificate: we encrypt to it and expect its receipts")
    trusted_cas: list[str] = setting([], help="CA certificates that may issue the platform's certificates")
    require_signed_receipts: bool = setting(True, help="refuse a receipt without a valid signature by the peer")
    previous_peer_certs: list[str] = setting([], help="the platform's retired certificates, accepted until "
                                                    "overlap_until (key rotation)")
    previous_key: str = setting("", help="our previous private key, still used to open what was sealed to "
                                         "previous_cert until overlap_until")
    previous_cert: str = setting("", help="our previous certificate (with previous_key)")
    overlap_until: str = setting("", help="end of the rotation overlap: ISO date or date-time (UTC if no zone)")


@dataclass(frozen=True)
class Sealing:
    """Seal bodies for one target and check its receipts."""

    profile: str
    ours: Credentials | None = field(default=None, repr=False)
    peer: Peer | None = None
    require_signed_receipts: bool = False
    retired_peer_fingerprints: frozenset[str] = frozenset()  # previous_peer_certs, by SHA-256 fingerprint
    retired_peer_pems: tuple[bytes, ...] = ()
    previous: Credentials | None = field(default=None, repr=False)
    overlap_until: dt.datetime | None = None

    def in_overlap(self, now: dt.datetime | None = None) -> bool:
        """True while retired credentials are still honoured."""
        return self.overlap_until is not None and (now or dt.datetime.now(dt.UTC)) < self.overlap_until

    def our_keys(self, now: dt.datetime | None = None) -> list[Credentials]:
        """Our credentials to open with, newest first: the previous pair only during the overlap."""
        keys = [self.ours] if self.ours is not None else []
        if self.previous is not None and self.in_overlap(now):
            keys.append(self.previous)
        return keys

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.profile]

    @property
    def active(self) -> bool:
        return self.profile != "none"

    def seal(self, body: bytes) -> bytes:
        if not self.active or self.ours is None or self.peer is None:
            return body
        return get_profile(self.profile).seal(body, self.ours, self.peer)

    def open(self, sealed: bytes, now: dt.datetime | None = None) -> Opened:
        """Decrypt and verify what the peer sealed to us: with our current key, or during a rotation overlap
        with the previous one (a peer may still encrypt to our old certificate)."""
        if not self.active or self.peer is None or not self.our_keys(now):
            raise EnvelopeError("no credentials to open envelopes with")
        first: EnvelopeError | None = None
        for ours in self.our_keys(now):
            try:
                opened = get_profile(self.profile).open(sealed, ours, self.peer, now=now)
            except EnvelopeError as exc:
                first = first or exc
                continue
            self.check_signer(opened, now)
            return opened
        assert first is not None
        raise first

    def verify_receipt(self, answer: Mapping[str, Any], now: dt.datetime | None = None) -> Opened | None:
        """Check the receipt's signature (when one is required or present); None when there is none to check."""
        receipt, signature = answer.get("receipt"), answer.get("receiptSignature")
        if not signature:
            if self.require_signed_receipts and self.active:
                raise SignatureError("the receipt is not signed")
            return None
        if self.peer is None or not isinstance(receipt, dict):
            raise SignatureError("a signed receipt arrived but no peer certificate is configured to check it")
        try:
            raw_signature = base64.b64decode(str(signature), validate=True)
        except ValueError:
            raise SignatureError("the receipt signature is not base64") from None
        opened = verify_detached(receipt_bytes(receipt), raw_signature, self.peer.trusted_ca_pems, now)
        self.check_signer(opened, now)
        _check_results(answer, receipt)
        return opened

    def check_signer(self, opened: Opened, now: dt.datetime | None = None) -> None:
        """The signer must be the peer (same subject: a renewed certificate passes), and not a retired
        certificate past the rotation overlap."""
        assert self.peer is not None
        expected = load_certificate(self.peer.cert_pem, "the peer certificate").subject.rfc4514_string()
        if opened.signer_subject != expected:
            raise SignatureError(f"the receipt is signed by '{opened.signer_subject}', not by the peer '{expected}'")
        if opened.signer_fingerprint_sha256 in self.retired_peer_fingerprints and not self.in_overlap(now):
            until = self.overlap_until.isoformat() if self.overlap_until else "no overlap configured"
            raise SignatureError(f"signed with the peer's retired certificate (sha256 "
                                 f"{opened.signer_fingerprint_sha256[:16]}…); the rotation overlap ended: {until}")


@dataclass(frozen=True)
class SignedAnswers:
    """A peer whose answers (a list page, a case feed page) are signed the way receipts are: a detached
    signature over the data as canonical JSON, by the peer's certificate, chaining to the trusted CAs."""

    peer_subject: str
    trusted_ca_pems: tuple[bytes, ...]

    def verify(self, data: Mapping[str, Any], signature: str) -> Opened:
        """The signature checked; SignatureError / EnvelopeError naming what is wrong."""
        try:
            raw = base64.b64decode(signature, validate=True)
        except ValueError:
            raise SignatureError("the signature is not base64") from None
        opened = verify_detached(receipt_bytes(data), raw, self.trusted_ca_pems)
        if opened.signer_subject != self.peer_subject:
            raise SignatureError(f"signed by '{opened.signer_subject}', not by the platform '{self.peer_subject}'")
        return opened


def load_signed_answers(peer_cert: str, trusted_cas: Sequence[str], where: str,
                        base: Path) -> tuple[SignedAnswers | None, list[Problem]]:
    """A source's ``peer_cert`` and ``trusted_cas`` settings (None, no problems, when neither is set)."""
    if not peer_cert and not trusted_cas:
        return None, []
    problems: list[Problem] = []
    if not peer_cert:
        problems.append(Problem(f"{where}.peer_cert", "trusted_cas is set: give the platform's certificate"))
    if not trusted_cas:
        problems.append(Problem(f"{where}.trusted_cas", "at least one CA certificate is needed to check answers"))
    cert = _read(peer_cert, f"{where}.peer_cert", base, problems) if peer_cert else b""
    cas = tuple(_read(path, f"{where}.trusted_cas[{i}]", base, problems) for i, path in enumerate(trusted_cas))
    if problems:
        return None, problems
    try:
        subject = load_certificate(cert, "the platform certificate").subject.rfc4514_string()
    except EnvelopeError as exc:
        return None, [Problem(f"{where}.peer_cert", str(exc))]
    return SignedAnswers(subject, cas), []


def receipt_bytes(receipt: Mapping[str, Any]) -> bytes:
    """The bytes a receipt signature covers: the receipt object as JSON with sorted keys, no spaces."""
    return orjson.dumps(dict(receipt), option=orjson.OPT_SORT_KEYS)


def results_digest(results: Any) -> str:
    """SHA-256 of the per-record results as JSON: the signed receipt names it, so results are covered too."""
    return hashlib.sha256(orjson.dumps(results)).hexdigest()


def _check_results(answer: Mapping[str, Any], receipt: Mapping[str, Any]) -> None:
    expected = receipt.get("resultsSha256")
    if expected is not None and expected != results_digest(answer.get("results")):
        raise SignatureError("the per-record results do not match the signed receipt")


def load_sealing(raw: Any, where: str, base: Path) -> tuple[Sealing | None, list[Problem]]:
    """Build a target's sealing from its ``envelope`` table (missing = profile none)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return None, [Problem(where, "must be a table")]
    if isinstance(raw.get("overlap_until"), dt.date):  # a TOML date or date-time, written without quotes
        raw = {**raw, "overlap_until": raw["overlap_until"].isoformat()}
    settings, problems = parse_settings(EnvelopeSettings, raw, where)
    if settings is None:
        return None, problems
    if settings.profile == "none":
        return Sealing("none"), []
    files = _read_files(settings, where, base, problems)
    if problems:
        return None, problems
    passphrase, problem = read_secret(settings.passphrase_env or None, settings.passphrase_file or None,
                                      f"{where}.passphrase", base)
    if problem:
        return None, [problem]
    secret = passphrase.encode() if passphrase else None
    ours = Credentials(files["key"], files["cert"], secret)
    peer = Peer(files["peer_cert"], tuple(files[f"ca{i}"] for i in range(len(settings.trusted_cas))))
    rotation = _rotation(settings, where, base, secret)
    if isinstance(rotation, list):
        return None, rotation
    retired, pems, previous, until = rotation
    return Sealing(settings.profile, ours, peer, settings.require_signed_receipts, retired, pems, previous,
                   until), []


def _rotation(settings: EnvelopeSettings, where: str, base: Path, secret: bytes | None
              ) -> tuple[frozenset[str], tuple[bytes, ...], Credentials | None, dt.datetime | None] | list[Problem]:
    """The retired credentials of a key rotation and the end of its overlap (or the problems found)."""
    problems: list[Problem] = []
    until = _overlap_until(settings.overlap_until, f"{where}.overlap_until", problems)
    retired: set[str] = set()
    pems: list[bytes] = []
    for i, path in enumerate(settings.previous_peer_certs):
        data = _read(path, f"{where}.previous_peer_certs[{i}]", base, problems)
        if not data:
            continue
        try:
            retired.update(fingerprint_sha256(c) for c in load_certificates(data, path))
            pems.append(data)
        except EnvelopeError as exc:
            problems.append(Problem(f"{where}.previous_peer_certs[{i}]", str(exc)))
    previous = None
    if bool(settings.previous_key) != bool(settings.previous_cert):
        problems.append(Problem(f"{where}.previous_key", "previous_key and previous_cert go together"))
    elif settings.previous_key:
        key = _read(settings.previous_key, f"{where}.previous_key", base, problems)
        cert = _read(settings.previous_cert, f"{where}.previous_cert", base, problems)
        previous = Credentials(key, cert, secret) if key and cert else None
    if (retired or settings.previous_key) and until is None and not problems:
        problems.append(Problem(f"{where}.overlap_until", "required with previous credentials: until when they "
                                "are honoured"))
    return problems if problems else (frozenset(retired), tuple(pems), previous, until)


def _overlap_until(text: str, where: str, problems: list[Problem]) -> dt.datetime | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        problems.append(Problem(where, f"expected an ISO date or date-time, got {text!r}"))
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _read(path: str, where: str, base: Path, problems: list[Problem]) -> bytes:
    file = Path(path) if Path(path).is_absolute() else base / path
    try:
        return file.read_bytes()
    except OSError as exc:
        problems.append(Problem(where, f"cannot read {file}: {exc.strerror}"))
        return b""


def _read_files(settings: EnvelopeSettings, where: str, base: Path, problems: list[Problem]) -> dict[str, bytes]:
    wanted = {"key": settings.key, "cert": settings.cert, "peer_cert": settings.peer_cert}
    wanted.update({f"ca{i}": path for i, path in enumerate(settings.trusted_cas)})
    if not settings.trusted_cas:
        problems.append(Problem(f"{where}.trusted_cas", "at least one CA certificate is needed to check the peer"))
    out: dict[str, bytes] = {}
    for name, path in wanted.items():
        label = f"trusted_cas[{name[2:]}]" if name.startswith("ca") else name
        if not path:
            problems.append(Problem(f"{where}.{label}", f"required for profile {settings.profile}"))
        else:
            out[name] = _read(path, f"{where}.{label}", base, problems)
    return out
