"""Delivery: :class:`TargetWorker` keeps one target supplied -- due retries first, then new batches leased from
the outbox, at most ``max_in_flight`` at once, behind a :class:`Circuit` breaker, with exponential backoff
(:func:`backoff_s`). Sealing failures back off like failed sends. The signed receipt is checked and stored with
the batch; records end delivered, rejected (quarantined), retried or dead-lettered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import tenacity

from gateway.adapter import BatchEncoding, OutgoingBatch
from gateway.clock import china_today
from gateway.domain.publicity import PublicitySettings
from gateway.errors import AwaitingAnswer, GatewayError, PermanentError, RetryableError
from gateway.mapping import OutboundMapping
from gateway.pipeline.calls import bounded
from gateway.pipeline.config import RetrySettings, TargetConfig
from gateway.pipeline.encode import Derive, EncodePlan, Route, encode_stored
from gateway.pipeline.workers import MapPool
from gateway.store import Store
from gateway.store.outbox import Batch, Candidates, EncodedBatch, LeaseLost
from gateway.stored import LeasedRecord

log = logging.getLogger("gateway.engine")  # one logger name for intake and delivery (ops filter on it)


# ---------------------------------------------------------------- delivery

class Circuit:
    """Per-target circuit breaker: closed → open after N failures → half-open after reset_s → closed."""

    def __init__(self, failure_threshold: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold, self.reset_s, self.clock = failure_threshold, reset_s, clock
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.reset_s else "open"

    def capacity(self, max_in_flight: int) -> int:
        return {"closed": max_in_flight, "half-open": 1, "open": 0}[self.state]

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold or self.state == "half-open":
            self.opened_at = self.clock()

    def reopens_in(self) -> float:
        return 0.0 if self.opened_at is None else max(0.0, self.reset_s - (self.clock() - self.opened_at))


def backoff_s(retry: RetrySettings, attempt: int) -> float:
    """Exponential backoff with jitter (tenacity's strategy) for the given attempt number (1-based)."""
    wait = tenacity.wait_exponential_jitter(multiplier=retry.initial_s, max=retry.max_s, exp_base=retry.multiplier,
                                            jitter=retry.jitter_s)
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(wait(state))


@dataclass
class DeliveryStats:
    batches: int = 0
    delivered: int = 0
    rejected: int = 0
    retries: int = 0
    dead: int = 0


class TargetWorker:
    """Keeps one target supplied with batches, retries due ones, and records every answer."""

    def __init__(self, cfg: TargetConfig, store: Store, sem: asyncio.Semaphore, timeout_s: float,
                 idle_s: float = 1.0, instance: str = "gateway", pool: MapPool | None = None) -> None:
        self.cfg, self.store, self.sem, self.timeout_s, self.idle_s = cfg, store, sem, timeout_s, idle_s
        # A batch being sent is claimed for longer than a send can take, so no other instance sends it too.
        self.claimant = f"{instance}:{os.getpid()}"
        self.claim_s = timeout_s + 30.0
        self.circuit = Circuit(cfg.circuit.failure_threshold, cfg.circuit.reset_s)
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self.stats = DeliveryStats()
        self._wake = asyncio.Event()
        self._personal = {ds: m.dataset.personal_id_fields for ds, m in cfg.mappings.items()}
        self.mappings: dict[str, OutboundMapping] = dict(cfg.mappings)  # replaced when a file is reloaded
        self.derive: Derive | None = None
        # A public target's publicity rules: records whose publicity has ended are not sent (gateway.pipeline.encode)
        self.publicity: PublicitySettings | None = None
        self.today: Callable[[], dt.date] = china_today
        self.pool = pool  # large batches are encoded in its worker processes
        self._route = Route(cfg.omit_fields, cfg.personal_ids)
        self._plan_id = uuid.uuid4().hex
        # While batches of a dataset are being encoded, the next read starts after the rows they hold.
        self._encoding: dict[str, int] = {}
        self._read_to: dict[str, int] = {}
        # A batch that cannot be made (sealing refused: an expired peer certificate, a wrong passphrase) holds new
        # batches back like a failed send: no new lease before ``_held_until`` (on ``clock``), which grows with
        # ``_make_failures``. ``blocked`` is that error, ``last_error`` the last of any kind (heartbeat, status).
        self.clock: Callable[[], float] = time.monotonic
        self._held_until = 0.0
        self._make_failures = 0
        self.blocked: str | None = None
        self.last_error: str | None = None

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Until ``stopping`` is set: start what can be started, then wait for a wake-up or the idle tick."""
        while not stopping.is_set():
            self._wake.clear()
            try:
                started = await self.step()
                wait = 0.0 if started else await self._idle_wait()
            except GatewayError as exc:  # the store failed: this worker goes on after the idle tick
                log.error("delivery step failed", extra={"target": self.cfg.name, "error": str(exc)})
                started, wait = 0, self.idle_s
            if not started:
                await _wait_any(self._wake, stopping, wait)

    async def _idle_wait(self) -> float:
        """Until the next due retry, the circuit's trial, the end of a hold, or the idle tick, whichever is first."""
        wait = self.idle_s
        if (held := self._held_until - self.clock()) > 0:
            wait = min(wait, held)
        reopen = self.circuit.reopens_in()
        if reopen > 0:  # nothing can be sent before the circuit lets a trial batch through
            return min(wait, reopen)
        due = await self.store.outbox.next_due_at(self.cfg.name)
        if due is not None and len(self.inflight) < self.cfg.max_in_flight:
            wait = min(wait, max(0.01, due - time.time()))
        return wait

    async def step(self) -> int:
        """Start due retries and new batches up to the free capacity; returns how many were started."""
        free = self.circuit.capacity(self.cfg.max_in_flight) - len(self.inflight)
        started = 0
        if free <= 0:
            return 0
        for due in await self.store.outbox.claim_due(self.cfg.name, free, self.claimant, self.claim_s):
            if due.id not in self.inflight:
                self._start(due)
                started += 1
        waiting = list(self.mappings) if self.clock() >= self._held_until else []
        while started < free and waiting:  # round robin: one dataset's backlog does not hold up another's
            for dataset in list(waiting):
                if started >= free:
                    break
                found = await self.store.outbox.read_candidates(self.cfg.name, dataset, self.cfg.batch_size,
                                                         after=self._read_to.get(dataset, 0))
                if not found.rows and not found.stale:
                    waiting.remove(dataset)
                    continue
                self._lease(dataset, found)
                started += 1
        return started

    def _lease(self, dataset: str, found: Candidates) -> None:
        """Encode, lease and send one batch of rows read from the outbox, as a task of its own: while it
        encodes, the next batch is read after its rows and encoded alongside."""
        batch_id = f"b-{uuid.uuid4().hex}"
        self._encoding[dataset] = self._encoding.get(dataset, 0) + 1
        self._read_to[dataset] = found.last_id
        task = asyncio.create_task(self._lease_and_send(dataset, found, batch_id),
                                   name=f"lease {self.cfg.name} {batch_id}")
        self.inflight[batch_id] = task
        task.add_done_callback(functools.partial(self._finished, batch_id))

    async def _lease_and_send(self, dataset: str, found: Candidates, batch_id: str) -> None:
        try:
            encoded = await self.encode_batch(dataset, found, batch_id) if found.rows else None
            batch = await self.store.outbox.lease_encoded(self.cfg.name, dataset, found, encoded,
                                                   claimant=self.claimant, claim_s=self.claim_s)
            if encoded is not None and encoded.withheld:
                log.info("records withheld: their publicity period has ended", extra={
                    "target": self.cfg.name, "dataset": dataset, "records": len(encoded.withheld)})
        except LeaseLost:  # another sender took some of the rows: they are read again
            log.info("batch not leased: another sender took some of its rows first",
                     extra={"target": self.cfg.name, "dataset": dataset, "batch": batch_id})
            return
        except GatewayError as exc:  # e.g. sealing refused: the rows stay queued, new batches wait
            self._not_made(dataset, f"{type(exc).__name__}: {exc}")
            return
        except Exception as exc:  # an encoder or adapter bug (or a lost worker process): the rows stay queued
            if self._not_made(dataset, f"untranslated {type(exc).__name__}: {exc}"):
                log.exception("could not encode a batch", extra={"target": self.cfg.name, "dataset": dataset})
            return
        finally:
            self._encoding[dataset] -= 1
            if not self._encoding[dataset]:
                self._read_to.pop(dataset, None)
        self._make_failures, self.blocked = 0, None
        del found, encoded  # a send holds only its batch: the rows read and their records are let go
        if batch is not None:
            await self._send(batch)

    def _not_made(self, dataset: str, error: str) -> bool:
        """A batch could not be made: back off like a failed send (the circuit counts it, and no new batch is
        leased until the hold ends), logged once per backoff step; False when a hold was already running."""
        now = self.clock()
        if now < self._held_until:  # a batch started alongside failed the same way
            return False
        self._make_failures += 1
        self.circuit.failure()
        delay = backoff_s(self.cfg.retry, self._make_failures)
        self._held_until = now + delay
        self.blocked = self.last_error = error
        log.error("could not make a batch: new batches wait", extra={
            "target": self.cfg.name, "dataset": dataset, "error": error, "failures": self._make_failures,
            "retry_in_s": round(delay, 2), "circuit": self.circuit.state})
        return True

    async def drain_inflight(self, grace_s: float) -> None:
        """Wait for in-flight sends (graceful shutdown); cancel what is still running after ``grace_s``."""
        tasks = list(self.inflight.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _start(self, batch: Batch) -> None:
        task = asyncio.create_task(self._send(batch), name=f"send {self.cfg.name} {batch.id}")
        self.inflight[batch.id] = task
        task.add_done_callback(functools.partial(self._finished, batch.id))

    def _finished(self, batch_id: str, _task: asyncio.Task[None]) -> None:
        self.inflight.pop(batch_id, None)
        self._wake.set()

    # ------------------------------------------------------------ encode

    async def encode_batch(self, dataset: str, found: Candidates, batch_id: str) -> EncodedBatch:
        """Encode and seal rows read from the outbox: in a worker process when the batch is large enough and the
        adapter has a picklable encoder (gateway.pipeline.encode), else here."""
        plan = self._plan(dataset)
        today = self.today()
        if plan.picklable and self.pool is not None and self.pool.offloads(len(found.rows)):
            done = await self.pool.encode(plan, batch_id, found.rows, self.mappings[dataset], today)
        else:
            done = encode_stored(plan, self.mappings[dataset], batch_id, found.rows, today)
        rows = {row[0]: row for row in found.rows}
        # after encoding only the ids of the included rows matter; refused ones are quarantined with their payload
        included = [LeasedRecord(i, rows[i][1], rows[i][2], rows[i][3], {}) for i in done.included]
        failed = [(LeasedRecord(i, rows[i][1], rows[i][2], rows[i][3], _parsed(rows[i][4])), reason)
                  for i, reason in done.failed]
        return EncodedBatch(batch_id, done.body, included, failed, done.stored, done.withheld)

    def _plan(self, dataset: str) -> EncodePlan:
        """How this dataset's batches are encoded; picklable (for a worker process) when the adapter can give
        its encoder as a picklable function."""
        body = self.cfg.adapter.batch_encoder() if isinstance(self.cfg.adapter, BatchEncoding) else None
        mapping = self.mappings[dataset]
        return EncodePlan(f"{self._plan_id}|{dataset}|{mapping.version}", self.cfg.name, dataset, self._route,
                          mapping.path, mapping.version, self._personal[dataset], self.derive,
                          body or self.cfg.adapter.encode, self.cfg.sealing, picklable=body is not None,
                          publicity=self.publicity)

    # ------------------------------------------------------------ send

    async def _send(self, batch: Batch) -> None:
        started = time.monotonic()
        outgoing = OutgoingBatch(batch.id, batch.dataset, batch.body, batch.record_count,
                                 self.cfg.sealing.content_type)
        try:
            receipt = await bounded(self.cfg.adapter.deliver(outgoing), self.sem, self.timeout_s,
                                    f"target {self.cfg.name}")
        except AwaitingAnswer as exc:
            await self._awaiting(batch, exc, started)
        except RetryableError as exc:
            await self._failed(batch, str(exc), exc.retry_after_s, started, permanent=False)
        except PermanentError as exc:
            await self._failed(batch, str(exc), None, started, permanent=True)
        except GatewayError as exc:
            await self._failed(batch, f"{type(exc).__name__}: {exc}", None, started, permanent=False)
        except Exception as exc:  # an adapter bug: keep the batch, log loudly, try again later
            log.exception("adapter raised an untranslated exception", extra={"target": self.cfg.name})
            await self._failed(batch, f"untranslated {type(exc).__name__}: {exc}", None, started, permanent=False)
        else:
            try:
                self.cfg.sealing.verify_receipt(receipt.raw)
            except GatewayError as exc:  # not proof of delivery: try again (the peer applies a batch once)
                await self._failed(batch, f"receipt refused: {exc}", None, started, permanent=False)
                return
            try:
                await self._delivered(batch, receipt, started)
            except GatewayError as exc:  # the store failed: the batch stays open and is sent again later
                log.error("could not record a delivery", extra={"target": self.cfg.name, "batch": batch.id,
                                                               "error": str(exc)})
                self.circuit.failure()

    async def _delivered(self, batch: Batch, receipt: Any, started: float) -> None:
        outcomes = list(receipt.results)
        ms = (time.monotonic() - started) * 1000
        result = await self.store.outbox.complete_batch(batch, outcomes, dict(receipt.raw), receipt.receipt_id, ms)
        self.circuit.success()
        self.last_error = None
        st = self.stats
        st.batches, st.delivered, st.rejected = st.batches + 1, st.delivered + result.delivered, \
            st.rejected + result.rejected
        log.info("batch delivered", extra={"target": self.cfg.name, "batch": batch.id, "dataset": batch.dataset,
                                           "delivered": result.delivered, "rejected": result.rejected,
                                           "requeued": result.requeued, "ms": round(ms, 1)})
        for out in outcomes:
            if out.status == "rejected":
                log.warning("record rejected by target", extra={
                    "target": self.cfg.name, "key": out.key, "version": out.version,
                    "code": out.code, "reason": out.message})

    async def _awaiting(self, batch: Batch, exc: AwaitingAnswer, started: float) -> None:
        """The peer has the batch and has not answered yet: ask again later; only max_age_s ends the wait."""
        dead = time.time() - batch.created_at >= self.cfg.retry.max_age_s
        delay = exc.retry_after_s if exc.retry_after_s is not None else backoff_s(self.cfg.retry, 1)
        try:
            await self.store.outbox.fail_attempt(batch, f"awaiting answer: {exc}", time.time() + delay, dead,
                                                 (time.monotonic() - started) * 1000)
        except GatewayError as err:  # the store failed: the batch stays open; its claim expires, then ask again
            log.error("could not record a pending batch", extra={"target": self.cfg.name, "batch": batch.id,
                                                                 "error": str(err)})
            return
        if dead:
            self.stats.dead += 1
            log.error("batch dead-lettered: never answered", extra={"target": self.cfg.name, "batch": batch.id,
                                                                   "error": str(exc)})

    async def _failed(self, batch: Batch, error: str, retry_after: float | None, started: float,
                      permanent: bool) -> None:
        self.circuit.failure()
        self.last_error = error
        attempt = batch.attempts + 1
        age = time.time() - batch.created_at
        dead = permanent or attempt >= self.cfg.retry.max_attempts or age >= self.cfg.retry.max_age_s
        delay = retry_after if retry_after is not None else backoff_s(self.cfg.retry, attempt)
        ms = (time.monotonic() - started) * 1000
        try:
            await self.store.outbox.fail_attempt(batch, error, time.time() + delay, dead, ms)
        except GatewayError as exc:  # the store failed too: the batch stays open; its claim expires, then retry
            log.error("could not record a failed attempt", extra={"target": self.cfg.name, "batch": batch.id,
                                                                 "error": str(exc)})
            return
        if dead:
            self.stats.dead += 1
            log.error("batch dead-lettered", extra={"target": self.cfg.name, "batch": batch.id,
                                                    "attempts": attempt, "error": error})
        else:
            self.stats.retries += 1
            log.warning("batch will be retried", extra={"target": self.cfg.name, "batch": batch.id,
                                                        "attempt": attempt, "retry_in_s": round(delay, 2),
                                                        "error": error, "circuit": self.circuit.state})


async def _wait_any(wake: asyncio.Event, stopping: asyncio.Event, timeout_s: float) -> None:
    waiters = [asyncio.create_task(wake.wait()), asyncio.create_task(stopping.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def _parsed(stored: bytes) -> dict[str, Any]:
    """A stored payload for the quarantine, even when it is not readable JSON."""
    try:
        value = orjson.loads(stored)
    except orjson.JSONDecodeError:
        return {"stored": stored[:2000].decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"stored": value}
