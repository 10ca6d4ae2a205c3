"""``[inbound]`` and ``[admin]``: the gateway's two HTTP listeners, both off unless configured.

``[inbound]`` is where the platform and partners push batches to us; each ``[inbound.channels.NAME]`` names
the dataset (through its inbound mapping), the envelope profile, our key (to open envelopes and sign receipts),
the CAs that may issue partners' certificates and which partners may push (subjects or certificate files).
``[admin]`` serves status, spool and quarantine to the CLI and the dashboard, for tokens with a role.

Parsing collects every problem with its TOML path, like the rest of the config; files are read and TLS
contexts built once here, so a bad certificate is reported by ``credit-gateway check``, not at the first
request. Tokens are read from ``token_env`` / ``token_file`` and never appear in a message.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, Problem
from gateway.mapping import InboundMapping, load_mapping
from gateway.sealing import profile_names
from gateway.sealing.base import Credentials, EnvelopeError, Peer, load_certificates, normalise_subject
from gateway.sealing.target import CONTENT_TYPES
from gateway.settings import parse_settings, read_secret, setting

MIN_TOKEN_CHARS = 16
ROLES = ("read", "operator")


@dataclass(frozen=True)
class InboundSettings:
    host: str = setting("127.0.0.1", help="address to listen on")
    port: int = setting(8471, help="port (0 picks a free one)")
    tls_cert: str = setting("", help="our TLS certificate (PEM); with tls_key, the endpoint speaks HTTPS")
    tls_key: str = setting("", help="our TLS private key (PEM)")
    client_ca: str = setting("", help="CA certificate(s) (PEM) for client certificates: mutual TLS, required")
    max_body_bytes: int = setting(16 * 1024 * 1024, check="positive", help="larger requests are refused (413)")
    timestamp_window_s: float = setting(300.0, check="positive", help="a batch's sentAt may differ this much")
    nonce_retention_s: float = setting(900.0, check="positive",
                                       help="how long nonces are kept (at least twice the window)")
    read_timeout_s: float = setting(60.0, check="positive",
                                    help="a request's headers, and then its body, must arrive within this (408)")


@dataclass(frozen=True)
class ChannelSettings:
    mapping: str = setting(help="inbound mapping file: the partner's field names → the canonical dataset")
    profile: str = setting(choices=profile_names(), help="cms | sm | xmldsig | none (none: mutual TLS, internal)")
    dataset: str = setting("", help="optional: the dataset the mapping must produce")
    key: str = setting("", help="our private key (PEM): opens envelopes and signs receipts")
    cert: str = setting("", help="our certificate (PEM)")
    passphrase_env: str = setting("", help="environment variable with the key's passphrase")
    passphrase_file: str = setting("", help="file with the key's passphrase")
    trusted_cas: list[str] = setting([], help="CA certificates that may issue the partners' certificates")
    peers: list[str] = setting([], help="subjects allowed to push, e.g. 'CN=platform,O=…,C=CN'")
    peer_certs: list[str] = setting([], help="partners' certificates (PEM): their subjects may push")
    external: bool = setting(True, help="a public or partner link (profile none is refused)")
    snapshots: bool = setting(False, help="take full-snapshot batches: a snapshot's last page withdraws the keys "
                                          "of its scope that no page named (credit lists pushed by the platform)")


@dataclass(frozen=True)
class Channel:
    """One inbound channel, ready to use."""

    name: str
    mapping: InboundMapping
    profile: str
    ours: Credentials | None = field(repr=False)
    peer: Peer
    peer_files: tuple[tuple[str, bytes], ...] = ()  # (TOML path, PEM) of configured peer certificates
    snapshots: bool = False  # takes full-snapshot batches (gateway.inbound.lists)

    @property
    def source(self) -> str:
        """The source name its records carry in the ledger and the quarantine."""
        return f"inbound.{self.name}"

    @property
    def dataset(self) -> str:
        return self.mapping.dataset.name

    @property
    def content_types(self) -> tuple[str, ...]:
        return ("application/json", "application/xml") if self.profile == "none" else (CONTENT_TYPES[self.profile],)


@dataclass(frozen=True)
class TlsFiles:
    """A listener's TLS credentials (paths), and the client CA for mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def server_context(self) -> ssl.SSLContext:
        """TLS 1.2+ server context; with a client CA, a client certificate is required (CERT_REQUIRED)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        if self.client_ca is not None:
            ctx.load_verify_locations(cafile=str(self.client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


@dataclass(frozen=True)
class InboundConfig:
    settings: InboundSettings
    channels: Mapping[str, Channel]
    tls: TlsFiles | None = None


@dataclass(frozen=True)
class AdminToken:
    name: str
    role: str
    token: str = field(repr=False)
    where: str = ""  # TOML path of its token_env / token_file, for `certs list`
    origin: str = ""  # "environment variable X" / "file F"


@dataclass(frozen=True)
class AdminSettings:
    host: str = setting("127.0.0.1", help="address to listen on (another address needs tls_cert and tls_key)")
    port: int = setting(8472, help="port (0 picks a free one)")
    tls_cert: str = setting("", help="TLS certificate (PEM)")
    tls_key: str = setting("", help="TLS private key (PEM)")
    client_ca: str = setting("", help="CA certificate(s) (PEM) a client certificate must chain to (mutual TLS: "
                                      "a client without one is refused in the handshake, before its token is read)")


@dataclass(frozen=True)
class AdminConfig:
    settings: AdminSettings
    tokens: tuple[AdminToken, ...] = field(repr=False)
    tls: TlsFiles | None = None


# ---------------------------------------------------------------- helpers

def _path(base: Path, file: str) -> Path:
    return Path(file) if Path(file).is_absolute() else base / file


def _read(base: Path, file: str, where: str, problems: list[Problem]) -> bytes | None:
    try:
        return _path(base, file).read_bytes()
    except OSError as exc:
        problems.append(Problem(where, f"cannot read {_path(base, file)}: {exc.strerror}"))
        return None


def _port(value: int, where: str, problems: list[Problem]) -> None:
    if not 0 <= value <= 65535:
        problems.append(Problem(where, f"expected a port 0..65535, got {value}"))


def _tls(cert: str, key: str, client_ca: str, where: str, base: Path, problems: list[Problem]) -> TlsFiles | None:
    """Paths checked by building the context once: a wrong key or an unreadable file is a config problem."""
    if not cert and not key:
        if client_ca:
            problems.append(Problem(f"{where}.client_ca", "mutual TLS needs tls_cert and tls_key too"))
        return None
    if not (cert and key):
        problems.append(Problem(f"{where}.{'tls_key' if cert else 'tls_cert'}", "tls_cert and tls_key go together"))
        return None
    files = TlsFiles(_path(base, cert), _path(base, key), _path(base, client_ca) if client_ca else None)
    try:
        files.server_context()
    except (OSError, ssl.SSLError) as exc:
        problems.append(Problem(f"{where}.tls_cert", f"cannot use {files.cert} / {files.key} "
                                                     f"{'/ ' + str(files.client_ca) + ' ' if client_ca else ''}"
                                                     f"for TLS: {exc}"))
        return None
    return files


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _table(raw: Any, where: str, problems: list[Problem]) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        problems.append(Problem(where, "must be a table"))
        return None
    return raw


# ---------------------------------------------------------------- [inbound]

def load_inbound(raw: Any, base: Path, skipped: list[Problem] | None = None
                 ) -> tuple[InboundConfig | None, list[Problem]]:
    """``[inbound]`` → an InboundConfig (None when the section is absent or has problems). A channel whose mapping
    file does not compile is left out with its problems in ``skipped`` when given (gateway.config lenient)."""
    problems: list[Problem] = []
    if raw is None or _table(raw, "inbound", problems) is None:
        return None, problems
    settings, found = parse_settings(InboundSettings, raw, "inbound", frozenset({"channels"}))
    problems += found
    if settings is None:
        return None, problems
    _port(settings.port, "inbound.port", problems)
    if settings.nonce_retention_s < 2 * settings.timestamp_window_s:
        problems.append(Problem("inbound.nonce_retention_s", f"must be at least twice timestamp_window_s "
                                f"({2 * settings.timestamp_window_s:g}): a batch stays acceptable that long"))
    tls = _tls(settings.tls_cert, settings.tls_key, settings.client_ca, "inbound", base, problems)
    channels: dict[str, Channel] = {}
    tables = _table(raw.get("channels", {}), "inbound.channels", problems) or {}
    if not tables:
        problems.append(Problem("inbound.channels", "at least one [inbound.channels.NAME] is needed"))
    for name, table in tables.items():
        channel = _channel(name, table, base, tls, problems, problems if skipped is None else skipped)
        if channel is not None:
            channels[name] = channel
    if problems:
        return None, problems
    return InboundConfig(settings, channels, tls), []


def _channel(name: str, raw: Any, base: Path, tls: TlsFiles | None, problems: list[Problem],
             skipped: list[Problem]) -> Channel | None:
    where = f"inbound.channels.{name}"
    if _table(raw, where, problems) is None:
        return None
    settings, found = parse_settings(ChannelSettings, raw, where)
    problems += found
    if settings is None:
        return None
    before = len(problems)
    mapping = _inbound_mapping(settings, where, base, skipped)
    if settings.profile == "none":
        _check_plain(settings, where, tls, problems)
    elif not settings.trusted_cas:
        problems.append(Problem(f"{where}.trusted_cas", "at least one CA certificate is needed to check partners"))
    ours = _credentials(settings, where, base, problems)
    cas = tuple(pem for i, f in enumerate(settings.trusted_cas)
                if (pem := _read(base, f, f"{where}.trusted_cas[{i}]", problems)) is not None)
    allowed, files = _allowed_peers(settings, where, base, problems)
    if len(problems) > before or mapping is None:
        return None
    peer = Peer(b"", cas, allowed)
    return Channel(name, mapping, settings.profile, ours, peer, files, settings.snapshots)


def _inbound_mapping(settings: ChannelSettings, where: str, base: Path,
                     problems: list[Problem]) -> InboundMapping | None:
    try:
        mapping = load_mapping(_path(base, settings.mapping))
    except ConfigError as exc:
        problems += [Problem(f"{where}.mapping", f"{exc.source}: {p}") for p in exc.problems]
        return None
    if not isinstance(mapping, InboundMapping):
        problems.append(Problem(f"{where}.mapping", f"{settings.mapping} is not an inbound mapping"))
        return None
    if settings.dataset and settings.dataset != mapping.dataset.name:
        problems.append(Problem(f"{where}.dataset", f"{settings.mapping} maps dataset {mapping.dataset.name}, "
                                                    f"not {settings.dataset}"))
    return mapping


def _check_plain(settings: ChannelSettings, where: str, tls: TlsFiles | None, problems: list[Problem]) -> None:
    """Profile none authenticates nobody by itself: only on an internal link, with mutual TLS naming the sender."""
    if settings.external:
        problems.append(Problem(f"{where}.profile", "profile none is refused on an external channel "
                                                    "(set external = false for an internal link)"))
    if tls is None or tls.client_ca is None:
        problems.append(Problem(f"{where}.profile", "profile none needs mutual TLS ([inbound] client_ca) to know "
                                                    "who is pushing"))


def _credentials(settings: ChannelSettings, where: str, base: Path, problems: list[Problem]) -> Credentials | None:
    if not settings.key and not settings.cert and settings.profile == "none":
        return None  # receipts unsigned: mutual TLS is the authentication on this internal link
    key = _read(base, settings.key, f"{where}.key", problems) if settings.key else None
    cert = _read(base, settings.cert, f"{where}.cert", problems) if settings.cert else None
    for name, value in (("key", settings.key), ("cert", settings.cert)):
        if not value:
            problems.append(Problem(f"{where}.{name}", f"required for profile {settings.profile} (ours: opens "
                                                       "envelopes, signs receipts)"))
    passphrase, problem = read_secret(settings.passphrase_env or None, settings.passphrase_file or None,
                                      f"{where}.passphrase", base)
    if problem:
        problems.append(problem)
    if key is None or cert is None:
        return None
    return Credentials(key, cert, passphrase.encode() if passphrase else None)


def _allowed_peers(settings: ChannelSettings, where: str, base: Path,
                   problems: list[Problem]) -> tuple[tuple[str, ...], tuple[tuple[str, bytes], ...]]:
    subjects: list[str] = []
    for i, text in enumerate(settings.peers):
        try:
            subjects.append(normalise_subject(text))
        except ValueError as exc:
            problems.append(Problem(f"{where}.peers[{i}]", f"not an RFC 4514 subject like 'CN=x,O=y,C=CN': {exc}"))
    files: list[tuple[str, bytes]] = []
    for i, file in enumerate(settings.peer_certs):
        label = f"{where}.peer_certs[{i}]"
        pem = _read(base, file, label, problems)
        if pem is None:
            continue
        try:
            subjects.append(load_certificates(pem, label)[0].subject.rfc4514_string())
        except EnvelopeError as exc:
            problems.append(Problem(label, str(exc)))
            continue
        files.append((label, pem))
    if not subjects:
        problems.append(Problem(f"{where}.peers", "name who may push: peers (subjects) or peer_certs (files)"))
    return tuple(dict.fromkeys(subjects)), tuple(files)


# ---------------------------------------------------------------- [admin]

def load_admin(raw: Any, base: Path) -> tuple[AdminConfig | None, list[Problem]]:
    """``[admin]`` → an AdminConfig (None when the section is absent or has problems)."""
    problems: list[Problem] = []
    if raw is None or _table(raw, "admin", problems) is None:
        return None, problems
    settings, found = parse_settings(AdminSettings, raw, "admin", frozenset({"tokens"}))
    problems += found
    if settings is None:
        return None, problems
    _port(settings.port, "admin.port", problems)
    tls = _tls(settings.tls_cert, settings.tls_key, settings.client_ca, "admin", base, problems)
    if tls is None and not _loopback(settings.host):
        problems.append(Problem("admin.host", f"{settings.host} is not a loopback address: tokens would cross the "
                                              "network in clear; set tls_cert and tls_key"))
    tokens = _tokens(raw.get("tokens", {}), base, problems)
    if problems:
        return None, problems
    return AdminConfig(settings, tokens, tls), []


def _tokens(raw: Any, base: Path, problems: list[Problem]) -> tuple[AdminToken, ...]:
    tables = _table(raw, "admin.tokens", problems) or {}
    if not tables:
        problems.append(Problem("admin.tokens", 'at least one [admin.tokens.NAME] (role = "read" | "operator")'))
    tokens = [t for name, table in tables.items() if (t := _token(name, table, base, problems)) is not None]
    seen: dict[str, str] = {}
    for t in tokens:
        if t.token in seen:
            problems.append(Problem(f"admin.tokens.{t.name}", f"the same token as admin.tokens.{seen[t.token]}; "
                                                              "every token must be different"))
        seen.setdefault(t.token, t.name)
    return tuple(tokens)


def _token(name: str, raw: Any, base: Path, problems: list[Problem]) -> AdminToken | None:
    where = f"admin.tokens.{name}"
    if _table(raw, where, problems) is None:
        return None
    unknown = sorted(set(raw) - {"role", "token_env", "token_file"})
    problems += [Problem(f"{where}.{k}", "unknown setting; known: role, token_env, token_file") for k in unknown]
    role = raw.get("role")
    if role not in ROLES:
        problems.append(Problem(f"{where}.role", f"expected read or operator, got {role!r}"))
    env, file = raw.get("token_env", ""), raw.get("token_file", "")
    if not isinstance(env, str) or not isinstance(file, str) or bool(env) == bool(file):
        problems.append(Problem(where, "give exactly one of token_env or token_file (never the token itself)"))
        return None
    token, problem = read_secret(env or None, file or None, f"{where}.token", base)
    if problem or token is None:
        problems.append(problem or Problem(where, "no token"))
        return None
    if len(token) < MIN_TOKEN_CHARS:
        problems.append(Problem(f"{where}.token_{'env' if env else 'file'}",
                                f"the token has {len(token)} characters; use at least {MIN_TOKEN_CHARS}"))
    if unknown or role not in ROLES:
        return None
    origin = f"environment variable {env}" if env else f"file {file}"
    return AdminToken(name, str(role), token, f"{where}.token_{'env' if env else 'file'}", origin)
