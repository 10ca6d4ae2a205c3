"""Credentials: the development PKI, the inventory of what a config uses, and expiry warnings."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.certs import Credential, expiry_warnings, init_dev_pki, inventory
from gateway.config import load_config
from gateway.sealing.base import EnvelopeError
from gateway.testing import config_text
from tests.support.helpers import MAPPINGS, make_department_db, write_config
from tests.support.pki import make_ca

NOW = dt.datetime.now(dt.UTC)


def _config(tmp_path: Path, peer_days: float) -> Path:
    ca = make_ca(tmp_path / "pki", "rsa")
    ours = ca.issue("gateway")
    peer = ca.issue("platform", not_before=NOW - dt.timedelta(days=300), not_after=NOW + dt.timedelta(days=peer_days))
    sample = make_department_db(tmp_path, penalties=5)
    path = write_config(tmp_path, url="http://127.0.0.1:9/api/v1/upload", db=sample.path, token="t")
    with path.open("a", encoding="utf-8") as f:
        f.write(f'\n[targets.platform.envelope]\nprofile = "cms"\nkey = "{ours.key_path}"\ncert = "{ours.cert_path}"\n'
                f'peer_cert = "{peer.cert_path}"\ntrusted_cas = ["{ca.root.cert_path}"]\n')
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
