"""Credentials: a development PKI for trying things out, and the inventory of what a configuration uses.

``credit-gateway certs init`` writes, per key type (RSA, EC P-256, SM2), a development CA, the gateway's key
and certificate and a sandbox peer's (``certs/<kind>/{ca,gateway,platform}.{key,crt}``). ``certs list`` shows
every credential the configuration uses with its expiry; certificates due within 60, 30 and 7 days are
flagged (also in the daemon's log at start and in ``status``), expired ones refuse transfers when sealing.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.adapter import Credentialed, Sink, Source
from gateway.clock import CHINA
from gateway.config import Config
from gateway.domain.calendar import WorkCalendar
from gateway.errors import Problem
from gateway.files import exposure
from gateway.health import EXPIRED, WARN_DAYS
from gateway.sealing.base import Credentials, EnvelopeError, load_certificates
from gateway.sealing.pki import KINDS, make_ca
from gateway.sealing.signatures import check_keypair

RETIRED = "retired (key rotation)"
NOT_YET_VALID = "NOT YET VALID"
UNUSABLE = (EXPIRED, NOT_YET_VALID)  # `certs list` exits 1 when a certificate in use is one of these


@dataclass(frozen=True)
class Credential:
    """One credential a configuration uses."""

    where: str  # TOML path, e.g. targets.province.envelope.peer_cert
    kind: str  # key | certificate | token
    subject: str = ""
    not_after: dt.datetime | None = None
    detail: str = ""
    not_before: dt.datetime | None = None


    def days_left(self, now: dt.datetime) -> float | None:
        return None if self.not_after is None else (self.not_after - now).total_seconds() / 86400

    def status(self, now: dt.datetime) -> str:
        """ok | expires in ≤60/≤30/≤7 days | EXPIRED | NOT YET VALID (no validity: ok)."""
        if self.not_before is not None and now < self.not_before:
            return NOT_YET_VALID
        days = self.days_left(now)
        if days is None:
            return "ok"
        if days < 0:
            return EXPIRED
        for limit in sorted(WARN_DAYS):
            if days <= limit:
                return f"expires within {limit} days"
        return "ok"


def inventory(config: Config) -> list[Credential]:
    """Every key, certificate and token the configuration uses."""
    out = _url_password("store.url", config.store.url)
    for name, source in config.sources.items():
        out += _adapter_credentials(f"sources.{name}", source.adapter)
    for name, target in config.targets.items():
        out += _sealing_credentials(f"targets.{name}.envelope", target.sealing)
        out += _adapter_credentials(f"targets.{name}", target.adapter)
    out += _inbound_credentials(config)
    if config.admin is not None:
        out += [Credential(t.where, "token", detail=f"role {t.role}, from {t.origin}") for t in config.admin.tokens]
        out += _tls_credentials("admin", config.admin.tls)
    return out


def _inbound_credentials(config: Config) -> list[Credential]:
    """The inbound endpoint's TLS certificate and client CA, each channel's key, certificate, CAs and peers."""
    if config.inbound is None:
        return []
    out = _tls_credentials("inbound", config.inbound.tls)
    for name, channel in config.inbound.channels.items():
        where = f"inbound.channels.{name}"
        if channel.ours is not None:
            encrypted = b"ENCRYPTED" in channel.ours.key_pem
            out.append(Credential(f"{where}.key", "key", detail="encrypted" if encrypted else "not encrypted"))
            out += _certificates(f"{where}.cert", channel.ours.cert_pem)
        for i, pem in enumerate(channel.peer.trusted_ca_pems):
            out += _certificates(f"{where}.trusted_cas[{i}]", pem)
        for label, pem in channel.peer_files:
            out += _certificates(label, pem)
    return out


def _tls_credentials(section: str, tls: Any) -> list[Credential]:
    if tls is None:
        return []
    out = [Credential(f"{section}.tls_key", "key", detail=str(tls.key))]
    out += _read_certificates(f"{section}.tls_cert", tls.cert)
    return out + (_read_certificates(f"{section}.client_ca", tls.client_ca) if tls.client_ca else [])


def _read_certificates(where: str, path: Path) -> list[Credential]:
    try:
        return _certificates(where, path.read_bytes())
    except OSError as exc:
        return [Credential(where, "certificate", detail=f"unreadable: {exc.strerror}")]


def _sealing_credentials(where: str, sealing: Any) -> list[Credential]:
    if not sealing.active or sealing.ours is None or sealing.peer is None:
        return []
    key = sealing.ours.key_pem
    out = [Credential(f"{where}.key", "key", detail="encrypted" if b"ENCRYPTED" in key else "not encrypted")]
    out += _certificates(f"{where}.cert", sealing.ours.cert_pem)
    out += _certificates(f"{where}.peer_cert", sealing.peer.cert_pem)
    for i, pem in enumerate(sealing.peer.trusted_ca_pems):
        out += _certificates(f"{where}.trusted_cas[{i}]", pem)
    until = f"until {sealing.overlap_until:%Y-%m-%d %H:%M} UTC" if sealing.overlap_until else ""
    retired = f"{RETIRED}: honoured {until}" if sealing.in_overlap() else f"{RETIRED}: no longer honoured"
    for i, pem in enumerate(sealing.retired_peer_pems):
        out += _certificates(f"{where}.previous_peer_certs[{i}]", pem, retired)
    if sealing.previous is not None:
        out += _certificates(f"{where}.previous_cert", sealing.previous.cert_pem, retired)
    return out


def _certificates(where: str, pem: bytes, detail: str = "") -> list[Credential]:
    try:
        certs = load_certificates(pem, where)
    except EnvelopeError as exc:
        return [Credential(where, "certificate", detail=f"unreadable: {exc}")]
    return [Credential(where if i == 0 else f"{where} (#{i + 1})", "certificate", c.subject.rfc4514_string(),
                       c.not_valid_after_utc, detail, c.not_valid_before_utc) for i, c in enumerate(certs)]


def _url_password(where: str, url: Any) -> list[Credential]:
    """A database password written into a URL (``postgresql://gw:…@db/gw``): listed, never shown."""
    if not isinstance(url, str) or "://" not in url:
        return []
    userinfo = url.split("://", 1)[1].split("/", 1)[0].rpartition("@")[0]
    return [Credential(where, "password", detail="in the URL")] if ":" in userinfo else []


def _under(base: Path, file: str) -> Path:
    return Path(file) if Path(file).is_absolute() else base / file


def _adapter_credentials(where: str, adapter: Source | Sink) -> list[Credential]:
    """The tokens, passwords and certificates an adapter says it reads (its certificates with their expiry)."""
    if not isinstance(adapter, Credentialed):
        return []
    out: list[Credential] = []
    for c in adapter.credential_sources():
        if c.kind == "certificate" and c.path is not None:
            out += _read_certificates(f"{where}.{c.setting}", c.path)
        else:
            out.append(Credential(f"{where}.{c.setting}", c.kind, detail=f"from {c.origin}"))
    return out


def expiry_warnings(config: Config, now: dt.datetime | None = None) -> list[str]:
    """One line per certificate that is expired or due within 60 days."""
    now = now or dt.datetime.now(dt.UTC)
    return [f"{c.where}: {c.subject} {c.status(now)} ({_window(c)})"
            for c in inventory(config)
            if c.not_after is not None and c.status(now) != "ok" and not c.detail.startswith(RETIRED)]


def expiries(config: Config, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Days left per certificate in use and for the working-day calendar (heartbeat, health, /metrics)."""
    now = now or dt.datetime.now(dt.UTC)
    found = [{"kind": "certificate", "what": f"{c.where}: {c.subject}", "until": c.not_after.isoformat(),
              "days_left": round(days, 3)}
             for c in inventory(config)
             if c.not_after is not None and not c.detail.startswith(RETIRED)
             and (days := c.days_left(now)) is not None]
    return [*found, calendar_expiry(WorkCalendar.from_settings(config.calendar), now)]


def calendar_expiry(calendar: WorkCalendar, now: dt.datetime) -> dict[str, Any]:
    """The working-day calendar's coverage as an expiry: due dates past its last date cannot be computed."""
    last = calendar.last_covered()
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), CHINA)
    return {"kind": "calendar", "what": f"working-day calendar ({calendar.coverage()})", "until": last.isoformat(),
            "days_left": round((end - now).total_seconds() / 86400, 3)}


def _window(c: Credential) -> str:
    after = f"not after {c.not_after:%Y-%m-%d}"
    return f"not before {c.not_before:%Y-%m-%d %H:%M} UTC, {after}" if c.not_before is not None else after


def key_problems(config: Config) -> list[Problem]:
    """Every private key the configuration uses, read with its passphrase and paired with its certificate (targets'
    envelopes, their rotation's previous pair, inbound channels): what would otherwise fail at the first transfer."""
    pairs: list[tuple[str, Credentials | None]] = []
    for name, target in config.targets.items():
        where = f"targets.{name}.envelope"
        if target.sealing.active:
            pairs += [(f"{where}.key", target.sealing.ours), (f"{where}.previous_key", target.sealing.previous)]
    for name, channel in (config.inbound.channels.items() if config.inbound else ()):
        pairs.append((f"inbound.channels.{name}.key", channel.ours))
    problems = []
    for where, ours in pairs:
        if ours is None:
            continue
        try:
            check_keypair(ours)
        except EnvelopeError as exc:
            problems.append(Problem(where, str(exc)))
    return problems


SECRET_FILES = frozenset({"key", "tls_key", "previous_key", "token_file", "passphrase_file"})


def exposed_files(config: Config) -> list[str]:
    """Key, token and passphrase files the configuration names that the group or others can read, one line each
    (``targets.p.envelope.key: certs/gateway.key is readable by others (0644)``)."""
    try:
        doc = tomllib.loads(config.path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return []
    lines = []
    for where, file in _secret_settings(doc, ""):
        path = _under(config.path.parent, file)
        if found := exposure(path):
            lines.append(f"{where}: {path} is {found}; chmod 600 it")
    return lines


def _secret_settings(table: Mapping[str, Any], prefix: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in table.items():
        where = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out += _secret_settings(value, where + ".")
        elif key in SECRET_FILES and isinstance(value, str) and value:
            out.append((where, value))
    return out


def init_dev_pki(directory: Path, kinds: Sequence[str] = KINDS) -> list[Path]:
    """A development CA, our key/certificate and a sandbox peer's, per key type; returns the directories."""
    made = []
    for kind in kinds:
        if kind not in KINDS:
            raise EnvelopeError(f"unknown key type {kind!r}; known: {', '.join(KINDS)}")
        target = directory / kind
        if (target / "ca.crt").exists():
            raise EnvelopeError(f"{target} already holds a PKI; remove it first to make a new one")
        ca = make_ca(target, kind, common_name=f"credit-gateway development CA ({kind})")
        ca.issue("gateway", hosts=("localhost", "127.0.0.1"))  # also usable as the inbound endpoint's TLS cert
        ca.issue("platform")
        made.append(target)
    return made
