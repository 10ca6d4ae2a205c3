"""Evidence files: a delivered batch's sent bytes and signed receipt, checked offline by us and by openssl."""

from __future__ import annotations

import stat
import subprocess
import zipfile
from pathlib import Path

import orjson
import pytest

from gateway.config import load_config
from gateway.sealing.evidence import EvidenceError, target_evidence, verify_evidence
from gateway.store import open_store
from tests.sealing.test_sealed_delivery import _run


async def _evidence(tmp_path: Path, profile: str, kind: str) -> Path:
    sandbox, batches, done = await _run(tmp_path, profile, kind, rows=10)
    await sandbox.aclose()
    assert done
    config = load_config(tmp_path / "credit-gateway.toml")
    store = await open_store(config.store_url())
    try:
        batch = await store.reports.show_batch(batches[0]["id"])
    finally:
        await store.aclose()
    assert batch is not None
    path = tmp_path / "evidence.zip"
    path.write_bytes(target_evidence(batch, config.targets["platform"].sealing))
    return path


def _ca(tmp_path: Path) -> bytes:
    return next((tmp_path / "pki").glob("*ca*.crt")).read_bytes()


def _rewrite(path: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    parts[name] = data
    with zipfile.ZipFile(path, "w") as z:
        for n, d in parts.items():
            z.writestr(n, d)


@pytest.mark.parametrize(("profile", "kind"), [("cms", "rsa"), ("sm", "sm2")])
class TestEvidence:
    async def test_evidence_verifies(self, tmp_path: Path, profile: str, kind: str) -> None:
        """Every check passes on a delivered batch's evidence, signature included."""
        verdict = verify_evidence(await _evidence(tmp_path, profile, kind), [_ca(tmp_path)])
        assert verdict.ok, verdict.checks
        assert {name for name, _, _ in verdict.checks} >= {"receipt signature", "receipt digest equals the body sent"}

    async def test_tampered_body_fails(self, tmp_path: Path, profile: str, kind: str) -> None:
        """Changing one byte of what was sent breaks the receipt's digest check."""
        path = await _evidence(tmp_path, profile, kind)
        with zipfile.ZipFile(path) as z:
            sent = bytearray(z.read("sent.bin"))
        sent[len(sent) // 2] ^= 0x01
        _rewrite(path, "sent.bin", bytes(sent))
        verdict = verify_evidence(path, [_ca(tmp_path)])
        assert not verdict.ok
        assert [n for n, ok, _ in verdict.checks if not ok] == ["receipt digest equals the body sent"]

    async def test_tampered_receipt_fails_signature(self, tmp_path: Path, profile: str, kind: str) -> None:
        """Editing the receipt (and its copy in the answer) breaks its signature."""
        path = await _evidence(tmp_path, profile, kind)
        with zipfile.ZipFile(path) as z:
            receipt = z.read("receipt.json").replace(b'"successSize":', b'"successSize":1')
        _rewrite(path, "receipt.json", receipt)
        verdict = verify_evidence(path, [_ca(tmp_path)])
        assert not dict((n, ok) for n, ok, _ in verdict.checks)["receipt signature"]


def _failed(path: Path, ca: bytes, signer: str = "") -> list[str]:
    return [name for name, ok, _ in verify_evidence(path, [ca], signer).checks if not ok]


def _manifest(path: Path, **changes: object) -> None:
    with zipfile.ZipFile(path) as z:
        manifest = orjson.loads(z.read("manifest.json"))
    _rewrite(path, "manifest.json", orjson.dumps({**manifest, **changes}))


class TestSigner:
    async def test_receipt_resigned_by_our_own_key_fails_without_signer(self, tmp_path: Path) -> None:
        """A receipt re-signed (with openssl) by another holder of the same CA, here the gateway's own key, is refused
        by default: the evidence file names the platform's certificate."""
        path = await _evidence(tmp_path, "cms", "rsa")
        with zipfile.ZipFile(path) as z:
            z.extract("receipt.json", tmp_path)
        forged = subprocess.run(  # noqa: ASYNC221 - a test waiting on a real binary
            ["openssl", "cms", "-sign", "-binary", "-in", "receipt.json", "-signer", str(tmp_path / "pki/gateway.crt"),
             "-inkey", str(tmp_path / "pki/gateway.key"), "-outform", "DER", "-out", "receipt.sig", "-md", "sha256"],
            cwd=tmp_path, capture_output=True, text=True, check=False)
        assert forged.returncode == 0, forged.stderr
        _rewrite(path, "receipt.sig", (tmp_path / "receipt.sig").read_bytes())
        assert _failed(path, _ca(tmp_path)) == ["receipt signer"]
        gateway_subject = "CN=gateway,O=credit-gateway development,C=CN"
        assert _failed(path, _ca(tmp_path), gateway_subject) == []  # the signature itself is sound

    async def test_renamed_expected_signer_still_needs_its_certificate(self, tmp_path: Path) -> None:
        """A platform certificate with the same subject but another key (a second 'CN=platform' from the CA) is
        not the one the evidence file names."""
        path = await _evidence(tmp_path, "cms", "rsa")
        with zipfile.ZipFile(path) as z:
            signer = orjson.loads(z.read("manifest.json"))["receiptSigner"]
        _manifest(path, receiptSigner={**signer, "sha256": ["00" * 32]})
        assert _failed(path, _ca(tmp_path)) == ["receipt signer"]

    async def test_no_recorded_signer_needs_the_signer_option(self, tmp_path: Path) -> None:
        """Evidence that names no signer verifies only with --signer."""
        path = await _evidence(tmp_path, "cms", "rsa")
        with zipfile.ZipFile(path) as z:
            manifest = orjson.loads(z.read("manifest.json"))
        del manifest["receiptSigner"]
        _rewrite(path, "manifest.json", orjson.dumps(manifest))
        assert _failed(path, _ca(tmp_path)) == ["receipt signer"]
        assert _failed(path, _ca(tmp_path), "CN=platform,O=credit-gateway development,C=CN") == []


class TestManifest:
    @pytest.mark.parametrize(("change", "failed"), [
        ({"records": 0}, "manifest record count"),
        ({"records": 10_000}, "manifest record count"),
        ({"receiptId": "r-forged"}, "manifest names the receipt"),
        ({"batchId": "b-other"}, "receipt names this batch"),
    ])
    async def test_edited_manifest_fails(self, tmp_path: Path, change: dict[str, object], failed: str) -> None:
        """The manifest's record count, receipt id and batch id must be the receipt's."""
        path = await _evidence(tmp_path, "cms", "rsa")
        assert _failed(path, _ca(tmp_path)) == []
        _manifest(path, **change)
        assert failed in _failed(path, _ca(tmp_path))


class TestOpenssl:
    async def test_openssl_verifies_the_receipt_signature(self, tmp_path: Path) -> None:
        """openssl cms -verify accepts the receipt signature over receipt.json with the CA alone."""
        path = await _evidence(tmp_path, "cms", "rsa")
        out = tmp_path / "x"
        with zipfile.ZipFile(path) as z:
            z.extractall(out)
        ca = next((tmp_path / "pki").glob("*ca*.crt"))
        result = subprocess.run(  # noqa: ASYNC221 - a test waiting on a real binary
            ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", "receipt.sig", "-content", "receipt.json",
             "-CAfile", str(ca), "-purpose", "any", "-out", "/dev/null"],
            cwd=out, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr

    def test_not_a_zip_is_a_clear_error(self, tmp_path: Path) -> None:
        """A file that is not an evidence archive is refused with its name."""
        bad = tmp_path / "bad.zip"
        bad.write_bytes(b"not a zip")
        with pytest.raises(EvidenceError, match=r"bad\.zip"):
            verify_evidence(bad)


class TestCommands:
    async def test_spool_evidence_then_verify(self, tmp_path: Path) -> None:
        """`spool evidence` writes the file; `verify` passes with the CA and fails (exit 1) without it."""
        import sys

        sandbox, batches, done = await _run(tmp_path, "cms", "rsa", rows=10)
        await sandbox.aclose()
        assert done
        cli = [sys.executable, "-m", "gateway"]
        out = tmp_path / "e.zip"
        written = subprocess.run([*cli, "-c", str(tmp_path / "credit-gateway.toml"), "spool", "evidence",  # noqa: ASYNC221
                                  batches[0]["id"], "-o", str(out)], capture_output=True, text=True, check=False)
        assert written.returncode == 0 and out.exists(), written.stderr
        assert stat.S_IMODE(out.stat().st_mode) == 0o600  # every record of the batch is in it
        ca = next((tmp_path / "pki").glob("*ca*.crt"))
        good = subprocess.run([*cli, "verify", str(out), "--trusted-ca", str(ca)],  # noqa: ASYNC221
                              capture_output=True, text=True, check=False)
        assert good.returncode == 0 and "verified" in good.stdout
        bare = subprocess.run([*cli, "verify", str(out)], capture_output=True, text=True, check=False)  # noqa: ASYNC221
        assert bare.returncode == 1 and "FAIL receipt signature" in bare.stdout
