"""Development PKIs: a CA and leaf certificates, RSA, EC P-256 or SM2, written into a directory.

Used by ``credit-gateway certs init`` (a development CA, our certificate and a sandbox peer's) and by the
tests (expired and not-yet-valid certificates are easy to make). Never for production credentials.

RSA and EC material is made with ``cryptography``'s ``CertificateBuilder`` (any validity window, so expired
and not-yet-valid certificates are easy). SM2 material is made by the real ``openssl`` binary, because
``cryptography`` cannot load SM2 keys: ``genpkey -algorithm SM2`` and ``openssl ca`` with ``-md sm3``,
``-startdate``/``-enddate`` and ``-sigopt distid:1234567812345678`` (the GM/T 0009 default ID; without it
openssl 3.0 signs certificates with an empty ID).

Every credential is written as PEM files beside the bytes, so tests can hand the paths to ``openssl`` and
``xmlsec1``::

    ca = make_ca(tmp_path, "rsa")
    alice = ca.issue("alice")
    expired = ca.issue("old", not_after=NOW - timedelta(days=1))
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gateway.files import touch_private, write_private
from gateway.sealing.base import EnvelopeError

KINDS = ("rsa", "ec", "sm2")
ORGANIZATION = "credit-gateway development"  # the O= of every subject made here
SM2_DEFAULT_ID = "1234567812345678"


@dataclass(frozen=True)
class Issued:
    """One key and its certificate, as PEM bytes and as files."""

    name: str
    key_pem: bytes
    cert_pem: bytes
    key_path: Path
    cert_path: Path
    passphrase: bytes | None = None


def _run(args: list[str], cwd: Path) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, check=False)  # noqa: S603 - fixed openssl arguments
    if done.returncode != 0:
        raise EnvelopeError(f"{' '.join(args)} failed: {done.stderr.decode(errors='replace')}")


def _write(directory: Path, name: str, key_pem: bytes, cert_pem: bytes, passphrase: bytes | None) -> Issued:
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    write_private(key_path, key_pem)  # a private key, the CA's included: 0600
    cert_path.write_bytes(cert_pem)
    return Issued(name, key_pem, cert_pem, key_path, cert_path, passphrase)


def _window(not_before: datetime | None, not_after: datetime | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return (not_before or now - timedelta(days=30), not_after or now + timedelta(days=365))


@dataclass(frozen=True)
class CA:
    """A certificate authority of one kind that issues leaf certificates into ``directory``."""

    kind: str
    directory: Path
    root: Issued

    def issue(
        self,
        name: str,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        passphrase: bytes | None = None,
        kind: str | None = None,
        common_name: str | None = None,
        hosts: tuple[str, ...] = (),
    ) -> Issued:
        """A leaf certificate (files ``name.key``, ``name.crt``) for ``CN=common_name`` (default: ``name``),
        signed by this CA; ``kind`` picks another key type than the CA's (not for SM2); ``hosts`` (DNS names
        or IP addresses) go into subjectAltName, for a TLS server certificate (RSA and EC only)."""
        window = _window(not_before, not_after)
        if self.kind == "sm2":
            return _sm2_sign(self, self.directory, name, common_name or name, window, passphrase)
        return _x509_issue(self, name, common_name or name, kind or self.kind, window, passphrase, hosts)


# --- RSA and EC, with cryptography -------------------------------------------------------------------------

def _new_key(kind: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key kind {kind!r}")


def _key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _builder(subject: str, issuer: x509.Name, public_key: object, start: datetime, end: datetime
             ) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _x509_ca(directory: Path, kind: str, common_name: str) -> CA:
    key = _new_key(kind)
    start, end = _window(None, None)
    cert = (
        _builder(common_name, _name(common_name), key.public_key(), start, end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    root = _write(directory, "ca", _key_pem(key, None), cert.public_bytes(serialization.Encoding.PEM), None)
    return CA(kind, directory, root)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca, content_commitment=not ca, key_encipherment=not ca, data_encipherment=False,
        key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )


def _alt_names(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _x509_issue(ca: CA, name: str, common_name: str, kind: str, window: tuple[datetime, datetime],
                passphrase: bytes | None, hosts: tuple[str, ...] = ()) -> Issued:
    start, end = window
    ca_key = serialization.load_pem_private_key(ca.root.key_pem, None)
    ca_cert = x509.load_pem_x509_certificate(ca.root.cert_pem)
    key = _new_key(kind)
    builder = _builder(common_name, ca_cert.subject, key.public_key(), start, end)
    if hosts:
        builder = builder.add_extension(_alt_names(hosts), critical=False)
    cert = (
        builder
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return _write(ca.directory, name, _key_pem(key, passphrase), cert.public_bytes(serialization.Encoding.PEM),
                  passphrase)


# --- SM2, with the openssl binary ----------------------------------------------------------------------------

_SM2_CONFIG = """\
[ca]
default_ca = test_ca
[test_ca]
dir = .
database = index.txt
new_certs_dir = newcerts
serial = serial
default_md = sm3
policy = policy_any
unique_subject = no
email_in_dn = no
copy_extensions = none
[policy_any]
countryName = optional
organizationName = optional
commonName = supplied
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _openssl_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


def _sm2_key(directory: Path, name: str, passphrase: bytes | None) -> Path:
    key_path = directory / f"{name}.key"
    args = ["openssl", "genpkey", "-algorithm", "SM2", "-out", key_path.name]
    if passphrase:
        args += ["-aes-256-cbc", "-pass", f"pass:{passphrase.decode()}"]
    touch_private(key_path)  # openssl writes into the file as it is: 0600 before the key is in it
    _run(args, directory)
    return key_path


def _sm2_sign(ca: CA | None, directory: Path, name: str, common_name: str, window: tuple[datetime, datetime],
              passphrase: bytes | None) -> Issued:
    start, end = window
    key_path = _sm2_key(directory, name, passphrase)
    csr = f"{name}.csr"
    pass_args = ["-passin", f"pass:{passphrase.decode()}"] if passphrase else []
    # The request is self-signed with openssl's default (empty) ID: `openssl ca` checks it with that ID.
    subject = f"/C=CN/O={ORGANIZATION}/CN={common_name}"
    _run(["openssl", "req", "-new", "-key", key_path.name, *pass_args, "-sm3", "-subj", subject, "-out", csr],
         directory)
    signer = ["-selfsign", "-keyfile", key_path.name, *pass_args, "-extensions", "v3_ca"] if ca is None else [
        "-cert", ca.root.cert_path.name, "-keyfile", ca.root.key_path.name, "-extensions", "v3_leaf"]
    _run(["openssl", "ca", "-batch", "-notext", "-config", "ca.cnf", "-md", "sm3",
          "-sigopt", f"distid:{SM2_DEFAULT_ID}", "-startdate", _openssl_time(start), "-enddate", _openssl_time(end),
          *signer, "-in", csr, "-out", f"{name}.crt"], directory)
    cert_path = directory / f"{name}.crt"
    if not cert_path.exists():  # `openssl ca` can fail with exit code 0
        raise EnvelopeError(f"openssl ca made no certificate for {name} in {directory}")
    return Issued(name, key_path.read_bytes(), cert_path.read_bytes(), key_path, cert_path, passphrase)


def _sm2_ca(directory: Path, common_name: str) -> CA:
    (directory / "ca.cnf").write_text(_SM2_CONFIG)
    (directory / "index.txt").write_text("")
    (directory / "serial").write_text("1000\n")
    (directory / "newcerts").mkdir(exist_ok=True)
    root = _sm2_sign(None, directory, "ca", common_name, _window(None, None), None)
    return CA("sm2", directory, root)


def make_ca(directory: Path, kind: str, common_name: str = "Test CA") -> CA:
    """A new CA of ``kind`` ("rsa", "ec" or "sm2") whose files live in ``directory`` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "sm2":
        return _sm2_ca(directory, common_name)
    return _x509_ca(directory, kind, common_name)
