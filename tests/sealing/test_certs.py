"""Credentials: the development PKI, the inventory of what a config uses, and expiry warnings."""

from __future__ import annotations

import datetime as dt
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.certs import Credential, expiry_warnings, init_dev_pki, inventory
from gateway.config import load_config
from gateway.sealing.base import EnvelopeError
from gateway.testing import config_text
from tests.support.helpers import MAPPINGS, make_department_db, write_config
from tests.support.inbound_helpers import make_pki
from tests.support.inbound_helpers import write_config as write_inbound_config
from tests.support.pki import Issued, make_ca

NOW = dt.datetime.now(dt.UTC)


def _config(tmp_path: Path, peer_days: float) -> Path:
    ca = make_ca(tmp_path / "pki", "rsa")
    ours = ca.issue("gateway")
    peer = ca.issue("platform", not_before=NOW - dt.timedelta(days=300), not_after=NOW + dt.timedelta(days=peer_days))
    return _envelope_config(tmp_path, ours.key_path, ours.cert_path, peer=peer, ca_cert=ca.root.cert_path)


def _envelope_config(tmp_path: Path, key: Path, cert: Path, extra: str = "", *, peer: Issued | None = None,
                     ca_cert: Path | None = None) -> Path:
    """A config whose target seals with ``key``/``cert`` (the peer: ``peer`` from ``ca_cert``, or a new one)."""
    if peer is None or ca_cert is None:
        ca = make_ca(tmp_path / "peer", "rsa")
        peer, ca_cert = ca.issue("platform"), ca.root.cert_path
    sample = make_department_db(tmp_path, penalties=5)
    path = write_config(tmp_path, url="http://127.0.0.1:9/api/v1/upload", db=sample.path, token="t")
    with path.open("a", encoding="utf-8") as f:
        f.write(f'\n[targets.platform.envelope]\nprofile = "cms"\nkey = "{key}"\ncert = "{cert}"\n'
                f'peer_cert = "{peer.cert_path}"\ntrusted_cas = ["{ca_cert}"]\n{extra}')
    return path


class TestInit:
    def test_init_makes_each_kind(self, tmp_path: Path) -> None:
        """One CA, a gateway and a platform certificate per key type, each chaining to its CA."""
        made = init_dev_pki(tmp_path, ["rsa", "ec", "sm2"])
        assert [p.name for p in made] == ["rsa", "ec", "sm2"]
        for directory in made:
            assert {f"{n}.{e}" for n in ("ca", "gateway", "platform") for e in ("key", "crt")} <= {
                p.name for p in directory.iterdir()}
        verify = subprocess.run(["openssl", "verify", "-CAfile", "ca.crt", "gateway.crt"], cwd=made[0],
                                capture_output=True, text=True, check=False)
        assert verify.returncode == 0, verify.stderr

    def test_init_refuses_to_overwrite(self, tmp_path: Path) -> None:
        """A second init into the same directory is refused rather than replacing keys."""
        init_dev_pki(tmp_path, ["rsa"])
        with pytest.raises(EnvelopeError, match="already holds"):
            init_dev_pki(tmp_path, ["rsa"])


class TestInventory:
    def test_lists_every_credential(self, tmp_path: Path) -> None:
        """Key, our certificate, the peer's, the CA and the token appear with their TOML paths."""
        items = {c.where: c for c in inventory(load_config(_config(tmp_path, 365)))}
        base = "targets.platform.envelope"
        assert {f"{base}.key", f"{base}.cert", f"{base}.peer_cert", f"{base}.trusted_cas[0]",
                "targets.platform.token_file"} <= set(items)
        assert "CN=platform" in items[f"{base}.peer_cert"].subject

    def test_lists_a_sources_credentials(self, tmp_path: Path) -> None:
        """A Credentialed source's token and certificates are listed at its TOML paths, certificates read."""
        ca = make_ca(tmp_path / "pki", "rsa")
        peer = ca.issue("platform")
        (tmp_path / "platform.token").write_text("t\n", encoding="utf-8")
        path = tmp_path / "gateway.toml"
        path.write_text(config_text(
            store={"url": "sqlite:///store.db"},
            sources={"lists": {"type": "platform_lists", "url": "http://127.0.0.1:9/api/v1",
                               "token_file": "platform.token", "peer_cert": str(peer.cert_path),
                               "trusted_cas": [str(ca.root.cert_path)],
                               "mapping": f"{MAPPINGS}/platform-credit_list.toml"}},
            targets={"department": {"type": "sql", "url": "sqlite:///dept.db", "personal_ids": "full",
                                    "external": False,
                                    "datasets": {"credit_list": f"{MAPPINGS}/department-credit_list.toml"},
                                    "tables": {"credit_list": {"table": "t", "key_columns": ["record_key"]}}}}),
            encoding="utf-8")
        items = {c.where: c for c in inventory(load_config(path))}
        assert items["sources.lists.token_file"].kind == "token"
        assert "CN=platform" in items["sources.lists.peer_cert"].subject
        assert items["sources.lists.trusted_cas[0]"].not_after is not None

    @pytest.mark.parametrize(("days", "status"), [(365, "ok"), (45, "expires within 60 days"),
                                                  (20, "expires within 30 days"), (3, "expires within 7 days")])
    def test_expiry_levels(self, days: float, status: str) -> None:
        """Certificates are flagged at 60, 30 and 7 days before they expire."""
        cert = Credential("x", "certificate", "CN=x", NOW + dt.timedelta(days=days))
        assert cert.status(NOW) == status

    def test_warning_names_the_expiring_peer(self, tmp_path: Path) -> None:
        """The peer certificate due in 20 days is the one warning, with its path and date."""
        warnings = expiry_warnings(load_config(_config(tmp_path, 20)))
        assert len(warnings) == 1 and warnings[0].startswith("targets.platform.envelope.peer_cert")
        assert "expires within 30 days" in warnings[0]

    def test_certs_list_exits_1_on_expired(self, tmp_path: Path) -> None:
        """`certs list` shows EXPIRED and fails when a certificate the config uses has expired."""
        path = _config(tmp_path, -1)
        done = subprocess.run([sys.executable, "-m", "gateway", "-c", str(path), "certs", "list"],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 1 and "EXPIRED" in done.stdout


def _cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "-c", str(path), *args], capture_output=True, text=True,
                          check=False, timeout=120)


def _with_case_source(tmp_path: Path, peer: Issued, ca_cert: Path) -> Path:
    """The target config of :func:`_config` plus a platform_cases source whose answers ``peer`` signs."""
    path = _config(tmp_path, 365)
    with path.open("a", encoding="utf-8") as f:
        f.write(f'\n[sources.cases]\ntype = "platform_cases"\nurl = "http://127.0.0.1:9/api/v1/sanctions/cases"\n'
                f'token_file = "sandbox.token"\npeer_cert = "{peer.cert_path}"\ntrusted_cas = ["{ca_cert}"]\n'
                f'mapping = "{MAPPINGS}/platform-sanction-case.toml"\n\n'
                f'[targets.department]\ntype = "file_drop"\ndirectory = "outbox"\n'
                f'datasets = {{ sanction_case = "{MAPPINGS}/department-sanction-case.toml" }}\n'
                f'personal_ids = "full"\nexternal = false\n')
    return path


class TestSourceCredentials:
    def test_a_sources_peer_certificate_and_token_are_listed(self, tmp_path: Path) -> None:
        """A platform source's peer certificate, its CA and its token are in the inventory, and one expiring in 5
        days is warned about."""
        ca = make_ca(tmp_path / "feed", "rsa")
        soon = ca.issue("feed", not_after=NOW + dt.timedelta(days=5))
        config = load_config(_with_case_source(tmp_path, soon, ca.root.cert_path))
        items = {c.where: c for c in inventory(config)}
        assert {"sources.cases.peer_cert", "sources.cases.trusted_cas[0]", "sources.cases.token_file"} <= set(items)
        assert items["sources.cases.peer_cert"].status(NOW) == "expires within 7 days"
        assert [w for w in expiry_warnings(config) if w.startswith("sources.cases.peer_cert")]

    def test_certs_list_flags_a_not_yet_valid_source_certificate(self, tmp_path: Path) -> None:
        """A certificate valid only from tomorrow is NOT YET VALID, not ok, and `certs list` exits 1."""
        ca = make_ca(tmp_path / "feed", "rsa")
        later = ca.issue("feed", not_before=NOW + dt.timedelta(days=1))
        done = _cli(_with_case_source(tmp_path, later, ca.root.cert_path), "certs", "list")
        assert done.returncode == 1, done.stdout + done.stderr
        line = next(line for line in done.stdout.splitlines() if line.startswith("sources.cases.peer_cert"))
        assert "NOT YET VALID" in line

    def test_a_password_in_a_url_is_listed_not_shown(self, tmp_path: Path) -> None:
        """A password written into store.url is one of the credentials `certs list` names, without its value."""
        path = _config(tmp_path, 365)
        path.write_text(path.read_text(encoding="utf-8").replace(
            "sqlite:///spool/gateway.db", "postgresql://gw:pw-77c1@127.0.0.1:9/gw"), encoding="utf-8")
        items = {c.where: c for c in inventory(load_config(path))}
        assert items["store.url"].kind == "password" and "pw-77c1" not in repr(items["store.url"])

    def test_not_yet_valid_status(self) -> None:
        """Before its not-before date a certificate is NOT YET VALID, whatever its expiry."""
        cert = Credential("x", "certificate", "CN=x", NOW + dt.timedelta(days=300), "", NOW + dt.timedelta(hours=1))
        assert cert.status(NOW) == "NOT YET VALID"


class TestCheckLoadsKeys:
    def test_wrong_passphrase_fails_check(self, tmp_path: Path) -> None:
        """`check` reads an encrypted key with its passphrase: a wrong one is a configuration error (exit 2)."""
        ours = make_ca(tmp_path / "ours", "ec").issue("gateway", passphrase=b"right horse")
        (tmp_path / "pass").write_text("wrong horse\n", encoding="utf-8")
        path = _envelope_config(tmp_path, ours.key_path, ours.cert_path, 'passphrase_file = "pass"\n')
        done = _cli(path, "check")
        assert done.returncode == 2, done.stdout
        assert "targets.platform.envelope.key" in done.stderr and "passphrase" in done.stderr

    @pytest.mark.parametrize("kind", ["rsa", "sm2"])
    def test_key_of_another_certificate_fails_check(self, tmp_path: Path, kind: str) -> None:
        """A key that is not the certificate's is refused by `check`, for RSA/EC and SM2 keys alike."""
        ca = make_ca(tmp_path / "ours", kind)
        one, other = ca.issue("gateway"), ca.issue("other")
        done = _cli(_envelope_config(tmp_path, other.key_path, one.cert_path), "check")
        assert done.returncode == 2, done.stdout
        assert "targets.platform.envelope.key" in done.stderr and "does not match" in done.stderr

    def test_matching_key_passes(self, tmp_path: Path) -> None:
        """The right passphrase and a matching pair pass (the check is not refusing everything)."""
        ours = make_ca(tmp_path / "ours", "ec").issue("gateway", passphrase=b"right horse")
        (tmp_path / "pass").write_text("right horse\n", encoding="utf-8")
        done = _cli(_envelope_config(tmp_path, ours.key_path, ours.cert_path, 'passphrase_file = "pass"\n'), "check")
        assert done.returncode == 0, done.stderr

    def test_inbound_channel_key_of_another_certificate_fails_check(self, tmp_path: Path) -> None:
        """An inbound channel's key is paired with its certificate too."""
        pki = make_pki(tmp_path / "pki", "rsa")
        stray = pki.ca.issue("stray")
        path = write_inbound_config(tmp_path, "sqlite:///spool/gateway.db", pki)
        path.write_text(path.read_text(encoding="utf-8").replace(str(pki.gateway.key_path), str(stray.key_path)),
                        encoding="utf-8")
        done = _cli(path, "check")
        assert done.returncode == 2, done.stdout
        assert "inbound.channels.platform.key" in done.stderr and "does not match" in done.stderr


class TestFileModes:
    def test_certs_init_writes_keys_0600(self, tmp_path: Path) -> None:
        """Every private key `certs init` writes, the CA's included, is readable by its owner only."""
        for directory in init_dev_pki(tmp_path, ["rsa", "sm2"]):
            for name in ("ca", "gateway", "platform"):
                assert stat.S_IMODE((directory / f"{name}.key").stat().st_mode) == 0o600, directory / name

    def test_check_warns_about_readable_keys_and_tokens(self, tmp_path: Path) -> None:
        """`check` names a key and a token file the group or others can read (and still passes)."""
        ours = make_ca(tmp_path / "ours", "rsa").issue("gateway")
        path = _envelope_config(tmp_path, ours.key_path, ours.cert_path)
        ours.key_path.chmod(0o640)
        (tmp_path / "sandbox.token").chmod(0o644)
        done = _cli(path, "check")
        assert done.returncode == 0, done.stderr
        warnings = [line for line in done.stdout.splitlines() if "warning" in line]
        assert any("targets.platform.envelope.key" in w and "group" in w for w in warnings), done.stdout
        assert any("targets.platform.token_file" in w and "others" in w for w in warnings), done.stdout
        ours.key_path.chmod(0o600)
        (tmp_path / "sandbox.token").chmod(0o600)
        assert "warning" not in _cli(path, "check").stdout
