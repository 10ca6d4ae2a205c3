"""End to end: a sample department database → the gateway (real config, store, SQL source, sink) → the sandbox.

The sandbox is the real aiohttp platform simulator on 127.0.0.1; faults are injected with
:class:`gateway.sandbox.server.Faults`. Each test runs on a SQLite store and on a PostgreSQL store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.clock import china_today
from gateway.config import Config, load_config
from gateway.daemon import Gateway
from gateway.errors import ConfigError, StoreError
from gateway.pipeline.delivery import TargetWorker
from gateway.sandbox.platform import simulated_reject
from gateway.sandbox.server import Faults, Sandbox
from gateway.store import Store, open_store
from gateway.testing import RaisingSink
from gateway.testing.department_db import SampleResult, apply_changes
from tests.conftest import TOKEN
from tests.support.helpers import (
    attempts,
    batches,
    make_department_db,
    outbox,
    read_rows,
    receipts,
    to_record,
    wait_for,
    write_config,
)

TARGET = "platform"
TABLE = "XZCF"


def configure(tmp_path: Path, sandbox: Sandbox, sample: SampleResult, **settings: Any) -> Config:
    return load_config(write_config(tmp_path, url=sandbox.upload_url, db=sample.path, token=TOKEN, **settings))


def broken_ids(sample: SampleResult) -> set[int]:
    """Rows the gateway must quarantine: those sampledata broke on purpose.

    A "future_date" row dated tomorrow (UTC) is already today in China, whose calendar the gateway uses.
    """
    today = china_today().strftime("%Y/%m/%d")
    rows = {r["id"]: r for r in read_rows(sample.path)}
    return {i for i, kind in sample.invalid.get("xzcf", {}).items()
            if kind != "future_date" or rows[i]["jdrq"] > today}


def expected_keys(sample: SampleResult) -> dict[str, dict[str, Any]]:
    """record key → source row, for every row the gateway should deliver."""
    bad = broken_ids(sample)
    return {to_record(r).key: r for r in read_rows(sample.path) if r["id"] not in bad}


async def settle(worker: TargetWorker) -> int:
    """One worker step, then wait until every send it started has finished; returns how many started."""
    started = await worker.step()
    await wait_for(lambda: not worker.inflight, what="the worker's sends to finish")
    return started


async def poll_all(gw: Gateway) -> None:
    for intake in gw.intakes.values():
        await intake.poll()


def assert_applied_once(sandbox: Sandbox, keys: Sequence[str]) -> None:
    counts = sandbox.applied_counts(TABLE)
    assert set(counts) == set(keys)
    assert set(counts.values()) == {1}


async def status(store: Store) -> dict[str, Any]:
    return {row["target"]: row for row in await store.reports.target_status()}[TARGET]


async def assert_consistent(store: Store) -> None:
    """Leased rows belong to open batches of the right size; finished batches hold no leased rows."""
    rows = await outbox(store)
    by_batch = Counter(r["batch_id"] for r in rows if r["state"] == "leased")
    states = {b["id"]: b for b in await batches(store)}
    assert all(states[bid]["state"] == "open" for bid in by_batch), by_batch
    for bid, batch in states.items():
        if batch["state"] == "open":
            assert by_batch[bid] == batch["record_count"]
    done = {b["id"] for b in states.values() if b["state"] == "done"}
    assert {r["batch_id"] for r in await receipts(store)} == done


class TestHappyPath:
    async def test_every_valid_row_arrives_once(self, tmp_path: Path, sandbox: Sandbox, store: Store) -> None:
        """Valid rows are delivered once each, invalid ones quarantined with reasons, each batch has a receipt."""
        sample = make_department_db(tmp_path, penalties=150, invalid_fraction=0.1)
        config = configure(tmp_path, sandbox, sample)
        async with Gateway(config, store) as gw:
            assert await gw.run_until_idle(timeout_s=60)
        keys = expected_keys(sample)
        assert_applied_once(sandbox, list(keys))
        assert {k: v[0] for k, v in sandbox.held(TABLE).items()} == dict.fromkeys(keys, 1)
        quarantined = await store.reports.list_quarantine("open", "mapping", limit=1000)
        assert {q["source_key"] for q in quarantined} == {str(i) for i in broken_ids(sample)}
        assert all(q["reasons"] and q["reasons"][0]["message"] for q in quarantined)
        done = [b for b in await batches(store) if b["state"] == "done"]
        stored = {r["batch_id"]: r for r in await receipts(store)}
        assert set(stored) == {b["id"] for b in done}
        assert sum(r["accepted"] for r in stored.values()) == len(keys)
        assert all(r["receipt_id"].startswith("r-") for r in stored.values())
        assert all(orjson.loads(r["body"])["receipt"]["batchId"] == bid for bid, r in stored.items())
        st = await status(store)
        assert (st["delivered"], st["backlog"], st["dead"], st["rejected"]) == (len(keys), 0, 0, 0)


class TestPartialRejection:
    async def test_refused_records_are_quarantined_and_the_rest_delivered(
            self, tmp_path: Path, sandbox: Sandbox, store: Store) -> None:
        """Records the platform refuses (7099) are quarantined at stage target; the rest are delivered."""
        faults = Faults(reject_rate=0.05, seed=11)
        sandbox.set_faults(faults)
        sample = make_department_db(tmp_path, penalties=200)
        async with Gateway(configure(tmp_path, sandbox, sample), store) as gw:
            assert await gw.run_until_idle(timeout_s=60)
        keys = set(expected_keys(sample))
        refused = {k for k in keys if simulated_reject(k, 1, faults.reject_rate, faults.seed)}
        assert refused, "the seed must make the platform refuse some records"
        entries = await store.reports.list_quarantine("open", "target", limit=1000)
        assert {e["record_key"] for e in entries} == refused
        assert {(r["code"], r["message"]) for e in entries for r in e["reasons"]} == {("7099", "模拟拒收")}
        assert all(e["target"] == TARGET and e["raw"]["decision_no"] for e in entries)
        assert set(sandbox.held(TABLE)) == keys - refused
        st = await status(store)
        assert (st["delivered"], st["rejected"], st["backlog"]) == (len(keys - refused), len(refused), 0)


class TestRetries:
    async def test_failed_requests_are_retried(self, tmp_path: Path, sandbox: Sandbox, store: Store) -> None:
        """With half the requests failing (503 + Retry-After) every record still arrives exactly once."""
        sandbox.set_faults(Faults(error_rate=0.5, retry_after_s=0.2, seed=4))
        sample = make_department_db(tmp_path, penalties=100)
        async with Gateway(configure(tmp_path, sandbox, sample, batch_size=50), store) as gw:
            assert await gw.run_until_idle(timeout_s=60)
        assert sandbox.stats()["faults_injected"]["error"] > 0
        assert_applied_once(sandbox, list(expected_keys(sample)))
        assert any(a["outcome"] == "retry" for a in await attempts(store))

    async def test_dropped_answers_do_not_apply_twice(self, tmp_path: Path, sandbox: Sandbox, store: Store) -> None:
        """Batches committed by the platform whose answer was lost are resent and applied once."""
        sandbox.set_faults(Faults(drop_rate=0.3, seed=2))
        sample = make_department_db(tmp_path, penalties=150)
        async with Gateway(configure(tmp_path, sandbox, sample), store) as gw:
            assert await gw.run_until_idle(timeout_s=60)
        stats = sandbox.stats()
        assert stats["faults_injected"]["drop"] > 0
        assert stats["replayed"] > 0
        assert_applied_once(sandbox, list(expected_keys(sample)))
        assert (await status(store))["delivered"] == len(expected_keys(sample))

    @pytest.mark.parametrize(("hang_s", "timeout_s", "error"), [
        pytest.param(2.0, 0.3, "no answer within 0.3s", id="gateway-gives-up-first"),
        pytest.param(0.1, 5.0, "ServerDisconnectedError", id="platform-hangs-up-first"),
    ])
    async def test_hanging_platform_is_retried(self, tmp_path: Path, sandbox: Sandbox, store: Store,
                                               hang_s: float, timeout_s: float, error: str) -> None:
        """Requests the platform never answers end (our timeout or its hang-up) and are retried."""
        sandbox.set_faults(Faults(timeout_rate=0.5, timeout_s=hang_s, seed=5))
        sample = make_department_db(tmp_path, penalties=100)
        config = configure(tmp_path, sandbox, sample, timeout_s=timeout_s, batch_size=10)
        async with Gateway(config, store) as gw:
            assert await gw.run_until_idle(timeout_s=60)
        assert sandbox.stats()["faults_injected"]["timeout"] > 0
        assert any(error in (a["detail"] or "") for a in await attempts(store))
        assert_applied_once(sandbox, list(expected_keys(sample)))


class TestBackoff:
    async def test_failure_without_retry_after_is_recorded(self, tmp_path: Path, sandbox: Sandbox,
                                                          store: Store) -> None:
        """A failed send without Retry-After is recorded as a retry, due after an exponential backoff."""
        sandbox.set_faults(Faults(error_rate=1.0))
        sample = make_department_db(tmp_path, penalties=10)
        async with Gateway(configure(tmp_path, sandbox, sample, initial_s=0.05, max_s=0.2), store) as gw:
            await poll_all(gw)
            assert await settle(gw.workers[TARGET]) == 1
        batch, = await batches(store)
        assert [a["outcome"] for a in await attempts(store, batch["id"])] == ["retry"]
        assert (batch["state"], batch["attempts"]) == ("open", 1)
        assert "HTTP 503" in batch["last_error"]
        assert batch["next_attempt_at"] > batch["created_at"]

    async def test_store_failure_between_steps_does_not_end_the_worker(
            self, tmp_path: Path, sandbox: Sandbox, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        """A store error while the worker works out how long to idle is logged; the worker goes on."""
        sample = make_department_db(tmp_path, penalties=3)
        calls = 0
        real = store.outbox.next_due_at

        async def failing(target: str) -> float | None:
            nonlocal calls
            calls += 1
            if calls <= 2:
                raise StoreError("simulated store failure")
            return await real(target)

        async with Gateway(configure(tmp_path, sandbox, sample), store) as gw:
            worker, stop = gw.workers[TARGET], asyncio.Event()
            monkeypatch.setattr(store.outbox, "next_due_at", failing)
            task = asyncio.create_task(worker.run(stop))
            try:
                await wait_for(lambda: calls >= 3 or task.done(), what="a third idle computation")
                assert not task.done()
            finally:
                stop.set()
                await task


class ManualClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TestCircuitBreaker:
    async def test_open_circuit_stops_sending_then_recovers(self, tmp_path: Path, sandbox: Sandbox,
                                                            store: Store) -> None:
        """After failure_threshold failures nothing is sent until reset_s passes; then one trial, then all."""
        sandbox.set_faults(Faults(error_rate=1.0))
        sample = make_department_db(tmp_path, penalties=60)
        config = configure(tmp_path, sandbox, sample, batch_size=10, max_in_flight=1, failure_threshold=3,
                           reset_s=30.0)
        async with Gateway(config, store) as gw:
            worker = gw.workers[TARGET]
            clock = ManualClock()
            worker.circuit.clock = clock
            await poll_all(gw)
            for _ in range(3):
                assert await settle(worker) == 1
            assert worker.circuit.state == "open"
            sent = sandbox.stats()["requests"]
            assert sent == 3
            await store.reports.retry_now()
            for _ in range(5):
                assert await settle(worker) == 0
            clock.now += 29.0
            assert await settle(worker) == 0
            assert sandbox.stats()["requests"] == sent
            sandbox.set_faults(Faults())
            clock.now += 1.0
            assert worker.circuit.state == "half-open"
            assert await settle(worker) == 1
            assert worker.circuit.state == "closed"
            assert await gw.run_until_idle(timeout_s=60)
        assert_applied_once(sandbox, list(expected_keys(sample)))


class TestDeadLetters:
    async def test_dead_batches_are_replayed_after_the_fault_clears(self, tmp_path: Path, sandbox: Sandbox,
                                                                    store: Store) -> None:
        """Batches out of attempts go dead; replay_dead then gets every record delivered exactly once."""
        sandbox.set_faults(Faults(error_rate=1.0))
        sample = make_department_db(tmp_path, penalties=40)
        config = configure(tmp_path, sandbox, sample, batch_size=10, max_attempts=2)
        keys = list(expected_keys(sample))
        async with Gateway(config, store) as gw:
            assert await gw.run_until_idle(timeout_s=60)
            dead = [b for b in await batches(store) if b["state"] == "dead"]
            assert len(dead) == 4 and {b["attempts"] for b in dead} == {2}
            assert ((await status(store))["dead"], sandbox.held(TABLE)) == (40, {})
            sandbox.set_faults(Faults())
            assert await store.reports.replay_dead() == 40
            assert await gw.run_until_idle(timeout_s=60)
        assert_applied_once(sandbox, keys)
        st = await status(store)
        assert (st["dead"], st["delivered"], st["backlog"]) == (0, 40, 0)

    async def test_permanent_refusal_dead_letters_at_once(self, tmp_path: Path, sandbox: Sandbox,
                                                          store: Store) -> None:
        """A refusal that can never succeed (401, wrong token) dead-letters each batch after one attempt."""
        sample = make_department_db(tmp_path, penalties=30)
        config = load_config(write_config(tmp_path, url=sandbox.upload_url, db=sample.path, token="wrong-token",
                                          batch_size=10))
        async with Gateway(config, store) as gw:
            assert await gw.run_until_idle(timeout_s=30)
        dead = await batches(store)
        assert [(b["state"], b["attempts"]) for b in dead] == [("dead", 1)] * 3
        assert all("HTTP 401" in b["last_error"] for b in dead)
        assert sandbox.held(TABLE) == {}
        assert (await status(store))["dead"] == 30


class TestPerKeyOrder:
    async def test_new_version_waits_for_the_failing_old_one(self, tmp_path: Path, sandbox: Sandbox,
                                                             store: Store) -> None:
        """A row edited while its v1 batch keeps failing reaches the platform as v1 then v2, never v2 first."""
        sandbox.set_faults(Faults(error_rate=1.0))
        sample = make_department_db(tmp_path, penalties=20)
        config = configure(tmp_path, sandbox, sample, batch_size=50)
        async with Gateway(config, store) as gw:
            worker = gw.workers[TARGET]
            await poll_all(gw)
            assert await settle(worker) == 1
            first, = await batches(store)
            apply_changes(sample.path, table="xzcf", ids=[7], change="edit")
            row = read_rows(sample.path, "xzcf", [7])[0]
            key = to_record(row).key
            await poll_all(gw)
            await store.reports.retry_now()
            assert await settle(worker) == 1  # only the v1 batch is retried; v2 is held back
            assert [(r["version"], r["state"]) for r in await outbox(store, key)] == [(1, "leased"), (2, "pending")]
            sandbox.set_faults(Faults())
            assert await gw.run_until_idle(timeout_s=60)
        held = sandbox.held(TABLE)
        assert held[key][0] == 2 and held[key][2]["CF_NR"] == row["cfnr"]
        counts = sandbox.applied_counts(TABLE)
        assert counts[key] == 2  # v1 applied, then v2 (v2 first would have made v1 stale)
        assert {k: n for k, n in counts.items() if k != key} == dict.fromkeys(set(counts) - {key}, 1)
        rows = {r["version"]: r for r in await outbox(store, key)}
        by_id = {b["id"]: b for b in await batches(store)}
        assert rows[1]["batch_id"] == first["id"]
        assert by_id[rows[2]["batch_id"]]["created_at"] >= by_id[first["id"]]["completed_at"]


class TestPersonalIds:
    @pytest.mark.parametrize("policy", ["mask", "omit"])
    async def test_ids_never_leave_in_full(self, tmp_path: Path, sandbox: Sandbox, store: Store,
                                           policy: str) -> None:
        """Personal ID numbers reach an external platform masked (no birth date) or not at all."""
        sample = make_department_db(tmp_path, penalties=60, natural=0.5)
        async with Gateway(configure(tmp_path, sandbox, sample, personal_ids=policy), store) as gw:
            assert await gw.run_until_idle(timeout_s=60)
        rows = expected_keys(sample)
        held = sandbox.held(TABLE)
        people = [k for k, (_, _, data) in held.items() if data["CF_XDR_LB"] == "自然人"]
        assert people, "the sample must contain natural persons"
        for key, (_, _, data) in held.items():
            source = rows[key]
            for column, field in (("zjhm", "CF_XDR_ZJHM"), ("fddbr_zjhm", "CF_FR_ZJHM")):
                number = source[column]
                if not number:
                    continue
                assert number not in orjson.dumps(data).decode()
                if policy == "omit":
                    assert field not in data
                else:
                    assert data[field] == number[:6] + "*" * 8 + number[14:]
                    assert re.fullmatch(r"\d{6}\*{8}\d{3}[\dX]", data[field])

    def test_full_ids_refused_on_an_external_target(self, tmp_path: Path) -> None:
        """personal_ids = "full" on an external target is a ConfigError at targets.NAME.personal_ids."""
        sample = make_department_db(tmp_path, penalties=1)
        path = write_config(tmp_path, url="http://127.0.0.1:9/api/v1/upload", db=sample.path, token=TOKEN,
                            personal_ids="full", external="true")
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert f"targets.{TARGET}.personal_ids" in [p.path for p in caught.value.problems]
        internal = write_config(tmp_path, url="http://127.0.0.1:9/api/v1/upload", db=sample.path, token=TOKEN,
                                personal_ids="full", external="false", name="internal.toml")
        assert load_config(internal).targets[TARGET].personal_ids == "full"


class TestShutdown:
    async def test_stopping_leaves_a_consistent_store(self, tmp_path: Path, sandbox: Sandbox, store: Store) -> None:
        """Setting ``stopping`` ends run(); nothing is half-recorded and a restart delivers the rest once."""
        sandbox.set_faults(Faults(delay_s=0.2))
        sample = make_department_db(tmp_path, penalties=120)
        config = configure(tmp_path, sandbox, sample, batch_size=10)
        async with Gateway(config, store) as gw:
            task = asyncio.create_task(gw.run())
            worker = gw.workers[TARGET]
            await wait_for(lambda: bool(worker.inflight), what="a batch in flight")
            gw.stopping.set()
            await asyncio.wait_for(task, timeout=config.daemon.shutdown_grace_s + 5)
            assert worker.inflight == {}
        await assert_consistent(store)
        assert (await store.reports.heartbeats())[0]["state"]["state"] == "stopped"
        sandbox.set_faults(Faults())
        async with Gateway(config, store) as again:
            assert await again.run_until_idle(timeout_s=60)
        assert_applied_once(sandbox, list(expected_keys(sample)))


class TestUntranslatedAdapterError:
    async def test_batch_stays_open_for_retry(self, tmp_path: Path, sandbox: Sandbox, store: Store) -> None:
        """An adapter raising RuntimeError leaves its batch open for a retry; the worker keeps going."""
        sample = make_department_db(tmp_path, penalties=20)
        config = configure(tmp_path, sandbox, sample, batch_size=50)
        target = config.targets[TARGET]
        sink = RaisingSink(target.adapter, failures=1)
        config = dataclasses.replace(config, targets={TARGET: dataclasses.replace(target, adapter=sink)})
        async with Gateway(config, store) as gw:
            await poll_all(gw)
            assert await settle(gw.workers[TARGET]) == 1
            batch, = await batches(store)
            assert (batch["state"], batch["attempts"]) == ("open", 1)
            assert "untranslated RuntimeError" in batch["last_error"]
            assert sandbox.stats()["requests"] == 0
            assert await gw.run_until_idle(timeout_s=30)
        assert sink.calls == 2
        assert_applied_once(sandbox, list(expected_keys(sample)))
        batch, = await batches(store)
        assert (batch["state"], batch["attempts"]) == ("done", 2)


class TestTwoInstances:
    async def test_two_gateways_on_one_store_send_each_batch_once(
            self, tmp_path: Path, sandbox: Sandbox, store: Store, store_url: str) -> None:
        """Two gateway instances sharing one store never send the same batch both at once."""
        sandbox.set_faults(Faults(delay_s=0.2))
        sample = make_department_db(tmp_path, penalties=80)
        config = configure(tmp_path, sandbox, sample, batch_size=10)
        other_config = configure(tmp_path, sandbox, sample, batch_size=10)  # its own adapters
        other_store = await open_store(store_url)
        try:
            async with Gateway(config, store) as first, Gateway(other_config, other_store) as second:
                await poll_all(first)
                done = await asyncio.gather(first.run_until_idle(timeout_s=60), second.run_until_idle(timeout_s=60))
        finally:
            await other_store.aclose()
        assert list(done) == [True, True]
        assert_applied_once(sandbox, list(expected_keys(sample)))
        assert sandbox.stats()["replayed"] == 0
        assert {b["attempts"] for b in await batches(store)} == {1}
