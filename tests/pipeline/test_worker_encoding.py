"""Batches encoded in a mapping worker process are the batches the daemon would encode itself.

Large batches go to the worker (pipeline.workers → pipeline.encode.encode_rows) as the rows the ledger stored; the
body, its compressed form and digest come back. These tests run the real process pool against the in-process
path, on a real store and the sandbox.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import pickle
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from sqlalchemy import update

from gateway.clock import china_today
from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.domain.publicity import PublicitySettings, stamped
from gateway.mapping import OutboundMapping
from gateway.pipeline.encode import Encoded, EncodePlan
from gateway.sandbox.server import Sandbox, SandboxConfig
from gateway.sealing.base import Credentials
from gateway.store import Store, open_store
from gateway.store import schema as s
from gateway.store.outbox import EncodedBatch
from gateway.stored import RAW_BODY, Candidate, body_digest, pack_body, unpack_body
from tests.conftest import TOKEN
from tests.sealing.test_sealed_delivery import _envelope_toml, _sandbox_sealing
from tests.support.helpers import batches, make_department_db, outbox, write_config
from tests.support.pki import make_ca

TARGET = "platform"


async def _both_ways(gw: Gateway, store: Store, rows: int) -> tuple[EncodedBatch, EncodedBatch]:
    """The same candidate rows encoded in the worker process and in the daemon, under one batch id."""
    worker = gw.workers[TARGET]
    found = await store.outbox.read_candidates(TARGET, "penalty", rows)
    assert len(found.rows) >= gw.pool.min_rows  # large enough to go to the worker
    assert worker.pool is gw.pool and gw.pool.offloads(len(found.rows))
    in_worker = await worker.encode_batch("penalty", found, "b-same")
    worker.pool = None
    here = await worker.encode_batch("penalty", found, "b-same")
    worker.pool = gw.pool
    return in_worker, here


class TestWorkerEncoding:
    async def test_a_worker_encodes_the_body_the_daemon_would(self, tmp_path: Path, sandbox: Sandbox,
                                                            store: Store) -> None:
        """Same bytes (masked IDs, computed 公示截止期, mapped fields), stored form and digest made by the worker;
        a record whose stored payload is unreadable is left out with the same reason on both paths."""
        sample = make_department_db(tmp_path, penalties=300, invalid_fraction=0.0)
        config = load_config(write_config(tmp_path, url=sandbox.upload_url, db=sample.path, token=TOKEN,
                                          batch_size=300, source_batch_size=300))
        async with Gateway(config, store) as gw:
            for intake in gw.intakes.values():
                await intake.poll()
            broken = (await outbox(store))[7]
            async with store.db.tx() as conn:
                await conn.execute(update(s.records).where(s.records.c.id == broken["record_id"])
                                   .values(payload="{not json"))
            in_worker, here = await _both_ways(gw, store, 300)
        assert in_worker.body == here.body  # the same bytes
        body = orjson.loads(in_worker.body)
        assert body["batchId"] == "b-same" and len(body["records"]) == len(in_worker.included) == 299
        assert all(r["data"].get("CF_GSJZQ") for r in body["records"])  # the computed 公示截止期 is there
        ids = [r["data"]["CF_XDR_ZJHM"] for r in body["records"] if len(r["data"].get("CF_XDR_ZJHM") or "") == 18]
        assert ids and all("*" in i for i in ids)  # personal ID numbers masked (personal_ids = "mask")
        assert [r.outbox_id for r in in_worker.included] == [r.outbox_id for r in here.included]
        assert in_worker.stored is not None and in_worker.stored == here.stored
        packed, digest = in_worker.stored
        assert unpack_body(packed) == here.body and digest == body_digest(here.body)
        assert len(packed) < len(here.body) / 2 and pack_body(here.body) == packed
        assert [(r.outbox_id, reason) for r, reason in in_worker.failed] == \
               [(r.outbox_id, reason) for r, reason in here.failed]
        assert [r.record_key for r, _ in in_worker.failed] == [broken["record_key"]]
        assert "cannot encode for platform" in in_worker.failed[0][1]

    async def test_the_worker_withholds_what_the_daemon_would(self, tmp_path: Path, sandbox: Sandbox,
                                                              store: Store) -> None:
        """A public target: records past their publicity end (decided 1,200 days ago) are withheld on both paths,
        the same rows, and the bodies are the same bytes."""
        sample = make_department_db(tmp_path, penalties=300, invalid_fraction=0.0)
        old = (china_today() - dt.timedelta(days=1200)).strftime("%Y/%m/%d")
        with contextlib.closing(sqlite3.connect(sample.path)) as conn, conn:
            aged = conn.execute("UPDATE xzcf SET jdrq = ?, cfyxq = ?, gsjzq = '' WHERE id % 40 = 0 AND zt = '0'",
                                (old, old)).rowcount
        path = write_config(tmp_path, url=sandbox.upload_url, db=sample.path, token=TOKEN, batch_size=300,
                            source_batch_size=300)
        path.write_text(path.read_text("utf-8").replace("external = false\n", "external = false\npublic = true\n"),
                        encoding="utf-8")  # an unsealed link to a public-facing platform
        config = load_config(path)
        assert config.targets[TARGET].public
        async with Gateway(config, store) as gw:
            for intake in gw.intakes.values():
                await intake.poll()
            in_worker, here = await _both_ways(gw, store, 300)
        assert aged >= 3 and len(in_worker.withheld) == aged and list(in_worker.withheld) == list(here.withheld)
        assert [r.outbox_id for r in in_worker.included] == [r.outbox_id for r in here.included]
        assert len(in_worker.included) == 300 - aged and in_worker.body == here.body

    async def test_everything_arrives_through_the_worker(self, tmp_path: Path, sandbox: Sandbox,
                                                         store: Store) -> None:
        """A run whose batches are all encoded in the worker delivers every record once, in order per key."""
        sample = make_department_db(tmp_path, penalties=900, invalid_fraction=0.0)
        config = load_config(write_config(tmp_path, url=sandbox.upload_url, db=sample.path, token=TOKEN,
                                          batch_size=250, source_batch_size=300, max_in_flight=3))
        sent_to_worker: list[int] = []
        async with Gateway(config, store) as gw:
            encode = gw.pool.encode

            async def counted(plan: EncodePlan, batch_id: str, rows: Sequence[Candidate],
                              mapping: OutboundMapping, today: dt.date) -> Encoded:
                sent_to_worker.append(len(rows))
                return await encode(plan, batch_id, rows, mapping, today)

            gw.pool.encode = counted  # type: ignore[method-assign]
            assert await gw.run_until_idle(timeout_s=120)
            stats = gw.workers[TARGET].stats
        assert stats.delivered == 900 and sent_to_worker and all(n >= gw.pool.min_rows for n in sent_to_worker)
        assert set(sandbox.applied_counts("XZCF").values()) == {1} and len(sandbox.held("XZCF")) == 900
        assert {r["state"] for r in await outbox(store)} == {"delivered"}


class TestSealedThroughTheWorker:
    async def test_the_worker_seals_what_it_encoded(self, tmp_path: Path) -> None:
        """With an envelope the worker seals the body it encoded; the platform opens it and signs the receipt."""
        ca = make_ca(tmp_path / "pki", "rsa")
        ours, peer = ca.issue("gateway"), ca.issue("platform")
        sample = make_department_db(tmp_path, penalties=260, invalid_fraction=0.0)
        sandbox = Sandbox(SandboxConfig(token=TOKEN, db_path=str(tmp_path / "sandbox.db"),
                                        sealing=_sandbox_sealing("cms", peer, ours, ca),
                                        receipt_credentials=Credentials(peer.key_pem, peer.cert_pem)))
        await sandbox.start()
        try:
            path = write_config(tmp_path, url=sandbox.upload_url, db=sample.path, token=TOKEN, batch_size=260,
                                source_batch_size=300)
            with path.open("a", encoding="utf-8") as f:
                f.write(_envelope_toml("cms", ours, peer, ca))
            config = load_config(path)
            store = await open_store(config.store_url())
            try:
                sealed_in_worker: list[bool] = []
                async with Gateway(config, store) as gw:
                    encode = gw.pool.encode

                    async def watched(plan: EncodePlan, batch_id: str, rows: Sequence[Candidate],
                                      mapping: OutboundMapping, today: dt.date) -> Encoded:
                        done = await encode(plan, batch_id, rows, mapping, today)
                        sealed_in_worker.append(not done.body.startswith(b"{"))
                        return done

                    gw.pool.encode = watched  # type: ignore[method-assign]
                    assert await gw.run_until_idle(timeout_s=120)
                    stats = gw.workers[TARGET].stats
                stored = await batches(store)
            finally:
                await store.aclose()
            assert stats.batches == 1 and stats.delivered == 260 and sealed_in_worker == [True]
            assert [b["state"] for b in stored] == ["done"]
            assert stored[0]["body"].startswith(RAW_BODY)  # ciphertext, kept as it is
            assert len(sandbox.held("XZCF")) == 260
        finally:
            await sandbox.aclose()


class TestPlanPickling:
    def test_publicity_settings_cross_without_their_cache(self) -> None:
        """The remembered end dates stay behind: the copy equals the settings and computes the same stamp."""
        settings = PublicitySettings()
        payload = {"decision_date": "2024-03-01", "penalty_types": "罚款", "fine_amount": 1.0}
        first = stamped(settings, "penalty", payload)
        assert settings._ends  # something is remembered
        copy = pickle.loads(pickle.dumps(settings))
        assert copy == settings and not copy._ends
        assert stamped(copy, "penalty", payload) == first
        assert len(pickle.dumps(settings)) < 2000

    def test_a_worker_keeps_inbound_and_outbound_files_compiled_side_by_side(self) -> None:
        """Mapping a page and encoding a batch in turn does not compile either file again."""
        from gateway.mapping import InboundMapping, OutboundMapping, load_mapping
        from gateway.pipeline import workers as cpu
        from tests.support.helpers import MAPPINGS

        inbound, outbound = (str(MAPPINGS / name) for name in ("department-penalty.toml", "platform-2019-penalty.toml"))
        versions = {path: load_mapping(path).version for path in (inbound, outbound)}
        cpu._COMPILED.clear()
        first_in = cpu._compiled(inbound, versions[inbound], InboundMapping)
        first_out = cpu._compiled(outbound, versions[outbound], OutboundMapping)
        assert cpu._compiled(inbound, versions[inbound], InboundMapping) is first_in
        assert cpu._compiled(outbound, versions[outbound], OutboundMapping) is first_out
        with pytest.raises(cpu.MappingMoved, match="changed since the daemon compiled it"):
            cpu._compiled(inbound, versions[inbound] + 1, InboundMapping)  # the daemon holds another version


class TestFileChangedUnderTheDaemon:
    async def test_a_broken_or_edited_file_on_disk_leaves_the_daemons_version_in_force(
            self, tmp_path: Path, sandbox: Sandbox, store: Store) -> None:
        """The worker compiles a mapping by path; when the file no longer is the version the daemon compiled
        (edited, or broken by an edit the daemon refuses), pages are mapped and batches encoded in the daemon
        with the version it holds, with the same results."""
        import shutil

        from gateway.clock import china_today
        from gateway.pipeline.workers import map_rows
        from tests.support.helpers import MAPPINGS, SOURCE, read_rows

        mappings = tmp_path / "mappings"
        shutil.copytree(MAPPINGS, mappings)
        sample = make_department_db(tmp_path, penalties=300, invalid_fraction=0.0)
        path = write_config(tmp_path, url=sandbox.upload_url, db=sample.path, token=TOKEN, batch_size=300,
                            source_batch_size=300)
        path.write_text(path.read_text(encoding="utf-8").replace(MAPPINGS.as_posix(), mappings.as_posix()),
                        encoding="utf-8")
        config = load_config(path)
        async with Gateway(config, store) as gw:
            for intake in gw.intakes.values():
                await intake.poll()
            worker = gw.workers[TARGET]
            found = await store.outbox.read_candidates(TARGET, "penalty", 300)
            worker.pool = None
            expected = await worker.encode_batch("penalty", found, "b-same")
            worker.pool = gw.pool
            inbound = gw.intakes[SOURCE].mappings["penalty"]
            rows = [(str(r["id"]), {k: v for k, v in r.items() if k != "id"}, ())
                    for r in read_rows(sample.path)][:250]
            expected_pages = map_rows(inbound, SOURCE, rows, china_today())
            for damage in ("[mapping\nbroken", None):
                for name in ("platform-2019-penalty.toml", "department-penalty.toml"):
                    file = mappings / name
                    file.write_text(damage if damage else file.read_text(encoding="utf-8") + "\n# edited\n",
                                    encoding="utf-8")
                got = await worker.encode_batch("penalty", found, "b-same")
                assert (got.body, got.stored) == (expected.body, expected.stored)
                assert await gw.pool.map(inbound, SOURCE, rows, china_today()) == expected_pages
                for name in ("platform-2019-penalty.toml", "department-penalty.toml"):
                    shutil.copy(MAPPINGS / name, mappings / name)
