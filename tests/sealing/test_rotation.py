"""Key rotation with an overlap: the platform's retired certificate is honoured until ``overlap_until`` and
refused after it; our previous key still opens what a peer sealed to our old certificate during the overlap."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from gateway.certs import RETIRED, expiry_warnings, inventory
from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.sandbox.server import Sandbox, SandboxConfig
from gateway.sealing import get_profile
from gateway.sealing.base import Credentials, EnvelopeError, Peer, SignatureError
from gateway.sealing.target import load_sealing
from gateway.store import open_store
from tests.conftest import TOKEN
from tests.support.helpers import make_department_db, write_config
from tests.support.pki import CA, Issued, make_ca

NOW = dt.datetime.now(dt.UTC)
FUTURE = (NOW + dt.timedelta(days=30)).isoformat()
PAST = (NOW - dt.timedelta(days=1)).isoformat()


def _sealing(profile: str, ours: Issued, peer: Issued, ca: CA, **extra: Any) -> Any:
    raw = {"profile": profile, "key": str(ours.key_path), "cert": str(ours.cert_path),
           "peer_cert": str(peer.cert_path), "trusted_cas": [str(ca.root.cert_path)], **extra}
    sealing, problems = load_sealing(raw, "t.envelope", Path("/"))
    assert problems == [], problems
    return sealing


async def _deliver(tmp_path: Path, profile: str, kind: str, overlap_until: str) -> tuple[Sandbox, list[Any], Any]:
    """The platform has rotated: it opens with its new key but still signs receipts with the old one."""
    ca = make_ca(tmp_path / "pki", kind)
    gateway = ca.issue("gateway")
    old = ca.issue("platform-old", common_name="platform")
    new = ca.issue("platform-new", common_name="platform")
    sample = make_department_db(tmp_path, penalties=12)
    sandbox = Sandbox(SandboxConfig(token=TOKEN, db_path=str(tmp_path / "sandbox.db"),
                                    sealing=_sealing(profile, new, gateway, ca),
                                    receipt_credentials=Credentials(old.key_pem, old.cert_pem)))
    await sandbox.start()
    path = write_config(tmp_path, url=sandbox.upload_url, db=sample.path, token=TOKEN, max_attempts=2)
    with path.open("a", encoding="utf-8") as f:
        f.write(f'\n[targets.platform.envelope]\nprofile = "{profile}"\nkey = "{gateway.key_path}"\n'
                f'cert = "{gateway.cert_path}"\npeer_cert = "{new.cert_path}"\ntrusted_cas = ["{ca.root.cert_path}"]\n'
                f'previous_peer_certs = ["{old.cert_path}"]\noverlap_until = "{overlap_until}"\n')
    config = load_config(path)
    store = await open_store(config.store_url())
    try:
        async with Gateway(config, store) as gw:
            await gw.run_until_idle(timeout_s=30)
        batches = await store.reports.list_batches("platform", limit=100)
    finally:
        await store.aclose()
    return sandbox, batches, config


@pytest.mark.parametrize(("profile", "kind"), [("cms", "rsa"), ("sm", "sm2")])
class TestPeerRotation:
    async def test_retired_certificate_honoured_during_the_overlap(self, tmp_path: Path, profile: str,
                                                                   kind: str) -> None:
        """Receipts signed with the platform's retired certificate are accepted until overlap_until."""
        sandbox, batches, _config = await _deliver(tmp_path, profile, kind, FUTURE)
        try:
            assert batches and {b["state"] for b in batches} == {"done"}
            assert len(sandbox.held("XZCF")) >= 8
        finally:
            await sandbox.aclose()

    async def test_retired_certificate_refused_after_the_overlap(self, tmp_path: Path, profile: str,
                                                                 kind: str) -> None:
        """After overlap_until the same receipts are refused, naming the retired certificate and the end."""
        sandbox, batches, _config = await _deliver(tmp_path, profile, kind, PAST)
        try:
            assert batches and not any(b["state"] == "done" for b in batches)
            errors = [b["last_error"] or "" for b in batches]
            assert all("retired certificate" in e and "overlap ended" in e for e in errors), errors
        finally:
            await sandbox.aclose()


class TestOurRotation:
    @pytest.mark.parametrize(("profile", "kind"), [("cms", "rsa"), ("sm", "sm2")])
    def test_previous_key_opens_during_the_overlap_only(self, tmp_path: Path, profile: str, kind: str) -> None:
        """A peer that still seals to our old certificate is read with the previous key until the overlap ends."""
        ca = make_ca(tmp_path / "pki", kind)
        old, new = ca.issue("ours-old", common_name="gateway"), ca.issue("ours-new", common_name="gateway")
        peer = ca.issue("peer")
        sealed = get_profile(profile).seal(b'{"batch": 1}', Credentials(peer.key_pem, peer.cert_pem),
                                           Peer(old.cert_pem, (ca.root.cert_pem,)))
        extra = {"previous_key": str(old.key_path), "previous_cert": str(old.cert_path)}
        during = _sealing(profile, new, peer, ca, overlap_until=FUTURE, **extra)
        assert during.open(sealed).body == b'{"batch": 1}'
        after = _sealing(profile, new, peer, ca, overlap_until=PAST, **extra)
        with pytest.raises(EnvelopeError):
            after.open(sealed)
        assert len(during.our_keys()) == 2 and len(after.our_keys()) == 1

    def test_current_key_needs_no_overlap(self, tmp_path: Path) -> None:
        """What is sealed to our current certificate opens with no rotation configured at all."""
        ca = make_ca(tmp_path / "pki", "rsa")
        ours, peer = ca.issue("ours"), ca.issue("peer")
        sealed = get_profile("cms").seal(b"x", Credentials(peer.key_pem, peer.cert_pem),
                                         Peer(ours.cert_pem, (ca.root.cert_pem,)))
        assert _sealing("cms", ours, peer, ca).open(sealed).signer_subject.startswith("CN=peer,")

    def test_signed_by_a_stranger_is_still_refused(self, tmp_path: Path) -> None:
        """Rotation does not widen who may sign: a valid certificate of another subject is refused."""
        ca = make_ca(tmp_path / "pki", "rsa")
        ours, peer, stranger = ca.issue("ours"), ca.issue("peer"), ca.issue("stranger")
        sealed = get_profile("cms").seal(b"x", Credentials(stranger.key_pem, stranger.cert_pem),
                                         Peer(ours.cert_pem, (ca.root.cert_pem,)))
        with pytest.raises((SignatureError, EnvelopeError), match="stranger"):
            _sealing("cms", ours, peer, ca, previous_peer_certs=[str(stranger.cert_path)],
                     overlap_until=FUTURE).open(sealed)


class TestRotationConfig:
    @pytest.fixture
    def pki(self, tmp_path: Path) -> tuple[CA, Issued, Issued]:
        ca = make_ca(tmp_path / "pki", "rsa")
        return ca, ca.issue("ours"), ca.issue("peer")

    def _problems(self, pki: tuple[CA, Issued, Issued], **extra: Any) -> dict[str, str]:
        ca, ours, peer = pki
        raw = {"profile": "cms", "key": str(ours.key_path), "cert": str(ours.cert_path),
               "peer_cert": str(peer.cert_path), "trusted_cas": [str(ca.root.cert_path)], **extra}
        sealing, problems = load_sealing(raw, "targets.p.envelope", Path("/"))
        assert (sealing is None) == bool(problems)
        return {p.path: p.message for p in problems}

    def test_previous_credentials_need_an_overlap_end(self, pki: tuple[CA, Issued, Issued]) -> None:
        found = self._problems(pki, previous_peer_certs=[str(pki[2].cert_path)])
        assert "until when" in found["targets.p.envelope.overlap_until"]

    def test_previous_key_without_certificate(self, pki: tuple[CA, Issued, Issued]) -> None:
        found = self._problems(pki, previous_key=str(pki[1].key_path), overlap_until=FUTURE)
        assert "go together" in found["targets.p.envelope.previous_key"]

    def test_bad_overlap_date(self, pki: tuple[CA, Issued, Issued]) -> None:
        found = self._problems(pki, previous_peer_certs=[str(pki[2].cert_path)], overlap_until="next tuesday")
        assert "ISO date" in found["targets.p.envelope.overlap_until"]

    def test_unreadable_previous_certificate(self, pki: tuple[CA, Issued, Issued], tmp_path: Path) -> None:
        found = self._problems(pki, previous_peer_certs=["/nonexistent/old.crt"], overlap_until=FUTURE)
        assert "/nonexistent/old.crt" in found["targets.p.envelope.previous_peer_certs[0]"]
        junk = tmp_path / "junk.crt"
        junk.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        found = self._problems(pki, previous_peer_certs=[str(junk)], overlap_until=FUTURE)
        assert "X.509" in found["targets.p.envelope.previous_peer_certs[0]"]

    def test_toml_date_accepted(self, pki: tuple[CA, Issued, Issued]) -> None:
        """overlap_until may be written as a bare TOML date."""
        ca, ours, peer = pki
        raw = {"profile": "cms", "key": str(ours.key_path), "cert": str(ours.cert_path),
               "peer_cert": str(peer.cert_path), "trusted_cas": [str(ca.root.cert_path)],
               "previous_peer_certs": [str(peer.cert_path)], "overlap_until": dt.date(2099, 1, 31)}
        sealing, problems = load_sealing(raw, "t", Path("/"))
        assert problems == [] and sealing.overlap_until == dt.datetime(2099, 1, 31, tzinfo=dt.UTC)


class TestInventory:
    async def test_certs_list_names_retired_credentials(self, tmp_path: Path) -> None:
        """certs list shows the retired certificate with the end of its overlap; it raises no expiry warning."""
        ca = make_ca(tmp_path / "pki", "rsa")
        gateway = ca.issue("gateway")
        old = ca.issue("old", common_name="platform", not_after=NOW + dt.timedelta(days=3))
        new = ca.issue("new", common_name="platform")
        sample = make_department_db(tmp_path, penalties=1)
        path = write_config(tmp_path, url="http://127.0.0.1:9/api/v1/upload", db=sample.path, token=TOKEN)
        with path.open("a", encoding="utf-8") as f:
            f.write(f'\n[targets.platform.envelope]\nprofile = "cms"\nkey = "{gateway.key_path}"\n'
                    f'cert = "{gateway.cert_path}"\npeer_cert = "{new.cert_path}"\n'
                    f'trusted_cas = ["{ca.root.cert_path}"]\nprevious_peer_certs = ["{old.cert_path}"]\n'
                    f'overlap_until = 2099-01-31\n')
        config = load_config(path)
        items = {c.where: c for c in inventory(config)}
        retired = items["targets.platform.envelope.previous_peer_certs[0]"]
        assert retired.detail.startswith(RETIRED) and "2099-01-31" in retired.detail
        assert not any("previous_peer_certs" in w for w in expiry_warnings(config))
