"""Sealed transfers end to end: the gateway seals batches per target, the sandbox opens them and signs
receipts, the gateway refuses receipts it cannot verify; for the cms and sm profiles."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.sandbox.server import Sandbox, SandboxConfig
from gateway.sealing.base import Credentials
from gateway.sealing.signatures import verify_detached
from gateway.sealing.target import load_sealing, receipt_bytes
from gateway.store import open_store
from tests.conftest import TOKEN
from tests.support.helpers import make_department_db, write_config
from tests.support.pki import CA, Issued, make_ca

NOW = dt.datetime.now(dt.UTC)


def _envelope_toml(profile: str, ours: Issued, peer: Issued, ca: CA) -> str:
    return (f'\n[targets.platform.envelope]\nprofile = "{profile}"\nkey = "{ours.key_path}"\n'
            f'cert = "{ours.cert_path}"\npeer_cert = "{peer.cert_path}"\ntrusted_cas = ["{ca.root.cert_path}"]\n')


def _sandbox_sealing(profile: str, platform: Issued, gateway: Issued, ca: CA) -> Any:
    raw = {"profile": profile, "key": str(platform.key_path), "cert": str(platform.cert_path),
           "peer_cert": str(gateway.cert_path), "trusted_cas": [str(ca.root.cert_path)]}
    sealing, problems = load_sealing(raw, "sandbox.envelope", Path("/"))
    assert problems == []
    return sealing


async def _run(tmp_path: Path, profile: str, kind: str, *, platform_cert: Issued | None = None,
               rows: int = 40, receipt_signer: str = "", timeout_s: float = 60) -> tuple[Sandbox, Any, bool]:
    ca = make_ca(tmp_path / "pki", kind)
    gateway, platform = ca.issue("gateway"), ca.issue("platform")
    signer = ca.issue(receipt_signer) if receipt_signer else None
    sample = make_department_db(tmp_path, penalties=rows)
    sandbox = Sandbox(SandboxConfig(
        token=TOKEN, db_path=str(tmp_path / "sandbox.db"), sealing=_sandbox_sealing(profile, platform, gateway, ca),
        receipt_credentials=Credentials(signer.key_pem, signer.cert_pem) if signer else None))
    await sandbox.start()
    path = write_config(tmp_path, url=sandbox.upload_url, db=sample.path, token=TOKEN, max_attempts=3,
                        failure_threshold=100)
    with path.open("a", encoding="utf-8") as f:
        f.write(_envelope_toml(profile, gateway, platform_cert or platform, ca))
    config = load_config(path)
    store = await open_store(config.store_url())
    try:
        async with Gateway(config, store) as gw:
            done = await gw.run_until_idle(timeout_s=timeout_s)
        receipts = await store.reports.list_batches("platform", limit=1000)
    finally:
        await store.aclose()
    return sandbox, receipts, done


@pytest.mark.parametrize(("profile", "kind"), [("cms", "rsa"), ("sm", "sm2")])
class TestSealedDelivery:
    async def test_everything_arrives_and_receipts_verify(self, tmp_path: Path, profile: str, kind: str) -> None:
        """Sealed batches are opened by the platform and every record is held exactly once."""
        sandbox, batches, done = await _run(tmp_path, profile, kind)
        try:
            held = sandbox.held("XZCF")
            assert done and len(held) >= 30 and set(sandbox.applied_counts("XZCF").values()) == {1}
            assert {b["state"] for b in batches} == {"done"}
        finally:
            await sandbox.aclose()

    async def test_stored_receipt_signature_checks_offline(self, tmp_path: Path, profile: str, kind: str) -> None:
        """The receipt kept in the store carries the platform's signature over its canonical bytes."""
        sandbox, _batches, _done = await _run(tmp_path, profile, kind, rows=10)
        await sandbox.aclose()
        import sqlite3

        conn = sqlite3.connect(tmp_path / "spool" / "gateway.db")
        body = orjson.loads(conn.execute("SELECT body FROM cg_receipts LIMIT 1").fetchone()[0])
        conn.close()
        ca_pem = (tmp_path / "pki").glob("*ca*.crt")
        opened = verify_detached(receipt_bytes(body["receipt"]), base64.b64decode(body["receiptSignature"]),
                                 tuple(p.read_bytes() for p in ca_pem))
        assert "platform" in opened.signer_subject


class TestRefusals:
    async def test_receipt_from_another_signer_is_not_proof(self, tmp_path: Path) -> None:
        """Receipts signed by another certificate of the same CA are refused: no batch counts as delivered."""
        sandbox, batches, _done = await _run(tmp_path, "cms", "rsa", rows=10, receipt_signer="impostor")
        stats = sandbox.stats()
        await sandbox.aclose()
        assert stats["batches"] >= 1  # the platform did apply them...
        assert batches and all(b["state"] == "dead" for b in batches)  # ...but without proof, they are not done
        assert all("not by the peer" in (b["last_error"] or "") for b in batches)

    async def test_expired_peer_certificate_refuses_the_transfer(self, tmp_path: Path) -> None:
        """An expired platform certificate stops sealing: nothing is sent, the error names the certificate."""
        ca = make_ca(tmp_path / "pki2", "rsa")
        old = ca.issue("old-platform", not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=1))
        sandbox, batches, done = await _run(tmp_path, "cms", "rsa", platform_cert=old, rows=10, timeout_s=3)
        stats = sandbox.stats()
        await sandbox.aclose()
        assert not done and batches == [] and stats["batches"] == 0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _unsealable(tmp_path: Path, case: str) -> str:
    """An envelope table that cannot seal: the peer certificate expired or not yet valid, or a wrong passphrase."""
    ca = make_ca(tmp_path / "pki", "rsa")
    gateway = ca.issue("gateway", passphrase=b"right" if case == "passphrase" else None)
    peer = ca.issue("platform", not_after=NOW - dt.timedelta(days=1)) if case == "expired" else \
        ca.issue("platform", not_before=NOW + dt.timedelta(days=1)) if case == "not yet valid" else ca.issue("platform")
    (tmp_path / "pass").write_text("wrong\n", encoding="utf-8")
    return _envelope_toml("cms", gateway, peer, ca) + ('passphrase_file = "pass"\n' if case == "passphrase" else "")


class TestUnsealable:
    @pytest.mark.parametrize(("case", "says"), [("expired", "expired"), ("not yet valid", "not yet valid"),
                                                ("passphrase", "passphrase")])
    async def test_backs_off_like_a_failed_send(self, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                case: str, says: str) -> None:
        """A target whose batches cannot be sealed tries once per backoff step (1 s, then 2 s: no jitter), logs
        once per try, sends nothing, and shows the error in the heartbeat, `status` and `health`."""
        from gateway.health import HealthLimits, health_problems
        from gateway.operations import status_lines
        from tests.pipeline.test_delivery import settle

        sample = make_department_db(tmp_path, penalties=10)
        path = write_config(tmp_path, url="http://127.0.0.1:9/api/v1/upload", db=sample.path, token=TOKEN,
                            initial_s=1.0, max_s=60.0, jitter_s=0.0, failure_threshold=100)
        with path.open("a", encoding="utf-8") as f:
            f.write(_unsealable(tmp_path, case))
        config = load_config(path)
        store = await open_store(config.store_url())
        try:
            async with Gateway(config, store) as gw:
                worker, clock = gw.workers["platform"], _Clock()
                worker.clock = clock
                await gw.intakes["department_penalties"].poll()
                caplog.set_level("ERROR", logger="gateway.engine")

                def tries() -> int:
                    return sum(1 for r in caplog.records if r.name == "gateway.engine")

                for _ in range(20):
                    await settle(worker)
                assert tries() == 1
                for step, expected in ((0.99, 1), (0.01, 2), (1.99, 2), (0.01, 3)):
                    clock.now += step
                    for _ in range(5):
                        await settle(worker)
                    assert tries() == expected, (step, expected)
                assert worker.blocked is not None and says in worker.blocked.lower()
                assert await store.reports.list_batches("platform") == []  # nothing leased, nothing sent
                await gw.beat()
                shown = "\n".join(await status_lines(store))
                assert "target platform: new batches held back:" in shown and says in shown.lower()
                unhealthy = await health_problems(store, config.gateway.instance, HealthLimits())
                assert [p for p in unhealthy if p.startswith("target platform: new batches held back")]
        finally:
            await store.aclose()
