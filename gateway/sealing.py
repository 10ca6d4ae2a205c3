"""Per-target sealing: what a target's ``[targets.NAME.envelope]`` table turns into.

A :class:`Sealing` seals each batch body once, when the batch is made (the sealed bytes are what is stored,
resent on retry and kept as evidence), and verifies the peer's signed receipt: the receipt's canonical
bytes (JSON, sorted keys) must carry a detached signature by the peer's certificate, chaining to the
trusted CAs. Keys and passphrases are read from files and environment variables, never logged.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.envelope import (
    Credentials,
    Opened,
    Peer,
    SignatureError,
    get_profile,
    load_certificate,
    profile_names,
    verify_detached,
)
from gateway.errors import Problem
from gateway.settings import parse_settings, read_secret, setting

CONTENT_TYPES = {"none": "application/json", "cms": "application/pkcs7-mime", "sm": "application/x-sm-envelope",
                 "xmldsig": "application/xml"}


@dataclass(frozen=True)
class EnvelopeSettings:
    profile: str = setting("none", choices=profile_names(), help="cms | sm | xmldsig | none")
    key: str = setting("", help="our private key (PEM), e.g. certs/gateway.key")
    cert: str = setting("", help="our certificate (PEM); intermediates may follow it in the file")
    passphrase_env: str = setting("", help="environment variable with the key's passphrase")
    passphrase_file: str = setting("", help="file with the key's passphrase")
    peer_cert: str = setting("", help="the platform's certificate: we encrypt to it and expect its receipts")
    trusted_cas: list[str] = setting([], help="CA certificates that may issue the platform's certificates")
    require_signed_receipts: bool = setting(True, help="refuse a receipt without a valid signature by the peer")


@dataclass(frozen=True)
class Sealing:
    """Seal bodies for one target and check its receipts."""

    profile: str
    ours: Credentials | None = field(default=None, repr=False)
    peer: Peer | None = None
    require_signed_receipts: bool = False

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

    def verify_receipt(self, answer: Mapping[str, Any]) -> Opened | None:
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
        opened = verify_detached(receipt_bytes(receipt), raw_signature, self.peer.trusted_ca_pems)
        expected = load_certificate(self.peer.cert_pem, "the peer certificate").subject.rfc4514_string()
        if opened.signer_subject != expected:
            raise SignatureError(f"the receipt is signed by '{opened.signer_subject}', not by the peer '{expected}'")
        _check_results(answer, receipt)
        return opened


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
    ours = Credentials(files["key"], files["cert"], passphrase.encode() if passphrase else None)
    peer = Peer(files["peer_cert"], tuple(files[f"ca{i}"] for i in range(len(settings.trusted_cas))))
    return Sealing(settings.profile, ours, peer, settings.require_signed_receipts), []


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
            continue
        file = Path(path) if Path(path).is_absolute() else base / path
        try:
            out[name] = file.read_bytes()
        except OSError as exc:
            problems.append(Problem(f"{where}.{label}", f"cannot read {file}: {exc.strerror}"))
    return out
