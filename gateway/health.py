"""Whether a gateway is ready, with every reason it is not: what ``credit-gateway health`` and ``/healthz`` answer.

Read from the store only (the instance's heartbeat, the outbox), so the answer needs no configuration beyond
``[gateway]`` and ``[store]``: the daemon writes what only it knows into its heartbeat every ``heartbeat_s``
(each source's failed polls in a row, each target's circuit, the days left per certificate and for the
working-day calendar). Unready when:

* the store cannot be written (a row is written and rolled back);
* the instance never ran, has stopped, its heartbeat is stale, or its process is gone (same host);
* a source failed its last ``unhealthy_after_failed_polls`` polls;
* a target's circuit is open, or new batches are held back (sealing fails);
* a target has dead letters, or (``max_pending_age_s``) a record waiting too long;
* a certificate or the calendar is within ``alert_days`` of its end.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from gateway.clock import age
from gateway.errors import GatewayError
from gateway.store import Store

WARN_DAYS = (60, 30, 7)  # the warnings of a certificate's or the calendar's end (gateway.certs)
EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class HealthLimits:
    max_heartbeat_age_s: float = 60.0
    max_pending_age_s: float = 0.0  # 0: the age of pending records does not count
    alert_days: float = 30.0  # a certificate or the calendar this close to its end fails health


async def health_problems(store: Store, instance: str, limits: HealthLimits) -> list[str]:
    """Every reason the instance is not ready; [] when it is."""
    problems = await _store_problems(store)
    beat = {b["instance"]: b for b in await store.reports.heartbeats()}.get(instance)
    if beat is None:
        problems.append(f"instance {instance} has never run")
    else:
        problems += _process_problems(beat, instance, limits.max_heartbeat_age_s)
        problems += _state_problems(beat["state"], limits.alert_days)
    for row in await store.reports.target_status():
        if row["dead"]:
            problems.append(f"target {row['target']}: {row['dead']} dead letter(s) (credit-gateway spool list "
                            f"--state dead)")
        if limits.max_pending_age_s and (row["oldest_pending_s"] or 0) > limits.max_pending_age_s:
            problems.append(f"target {row['target']}: oldest pending record is {age(row['oldest_pending_s'])} old")
    return problems


async def _store_problems(store: Store) -> list[str]:
    try:
        await store.reports.probe_write()
    except GatewayError as exc:  # the store translates its library's errors (StoreError)
        return [f"store cannot be written: {str(exc).splitlines()[0]}"]
    return []


def _process_problems(beat: dict[str, Any], instance: str, max_age_s: float) -> list[str]:
    state = beat["state"].get("state")
    since = age(time.time() - beat["beat_at"])
    if state != "running":
        return [f"instance {instance} is {state}, last heartbeat {since} ago"]
    if beat["state"].get("host") == socket.gethostname() and not _alive(int(beat["pid"])):
        return [f"instance {instance}: its process (pid {beat['pid']}) is gone, last heartbeat {since} ago"]
    if time.time() - beat["beat_at"] > max_age_s:
        return [f"instance {instance} is running, but its last heartbeat was {since} ago"]
    return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def expiry_status(days_left: float) -> str:
    """ok | expires within 60/30/7 days | EXPIRED, for a certificate or the calendar."""
    if days_left < 0:
        return EXPIRED
    return next((f"expires within {limit} days" for limit in sorted(WARN_DAYS) if days_left <= limit), "ok")


def _state_problems(state: dict[str, Any], alert_days: float) -> list[str]:
    """What the running daemon reported about its sources, targets and expiries."""
    problems = []
    for name, src in (state.get("sources") or {}).items():
        if src.get("failed_polls", 0) >= src.get("unhealthy_after", 1):
            problems.append(f"source {name}: its last {src['failed_polls']} polls failed: {src.get('last_error')}")
    for name, tgt in (state.get("targets") or {}).items():
        if tgt.get("blocked"):
            problems.append(f"target {name}: new batches held back: {tgt['blocked']}")
        elif tgt.get("circuit") == "open":
            problems.append(f"target {name}: circuit open after failed deliveries: {tgt.get('last_error')}")
    for item in state.get("expiries") or []:
        if item["days_left"] <= alert_days:
            status = expiry_status(item["days_left"])
            problems.append(f"{item['what']} {'ends' if status == 'ok' else status + ': ends'} {item['until']} "
                            f"({max(0.0, item['days_left']):.0f} days left)")
    return problems
