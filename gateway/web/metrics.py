"""``GET /metrics``: the gateway's state in the Prometheus text format (prometheus-client, behind this module only).

Every value is read on the scrape from the store and this instance's heartbeat (the same sources as ``status
--json`` and ``health``), so a scrape never disagrees with ``status`` and the daemon keeps no second set of
counters that a restart would reset. Counters count over the store's whole history.

::

    cg_source_rows_read_total{source}                      rows read at intake
    cg_source_rows_quarantined_total{source}               rows quarantined at intake
    cg_quarantine_entries{source,stage,state,reason}       quarantine entries by reason (its code, else field:NAME)
    cg_target_records{target,state}                        records by outbox state: delivered, rejected, dead, withheld
    cg_target_backlog{target}                              records waiting
    cg_target_oldest_pending_seconds{target}               age of the oldest waiting record (0: none)
    cg_target_batches_failed_total{target}                 delivery attempts that failed (retried or dead)
    cg_target_circuit_state{target}                        0 closed, 1 half-open, 2 open (this instance's heartbeat)
    cg_dead_letters{target}                                records given up on
    cg_days_left{kind,what}                                per certificate, and for the working-day calendar
    cg_store_size_bytes                                    the store on disk
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.store import Store

CIRCUIT_STATES = {"closed": 0, "half-open": 1, "open": 2}
RECORD_STATES = ("delivered", "rejected", "dead", "withheld")


class Snapshot:
    """One scrape's metric families, built from what the store says (a prometheus-client collector)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


async def render_metrics(store: Store, instance: str) -> tuple[bytes, str]:
    """The exposition body and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(await _families(store, instance)))
    return generate_latest(registry), CONTENT_TYPE_LATEST


async def _families(store: Store, instance: str) -> list[Metric]:
    beat = {b["instance"]: b for b in await store.reports.heartbeats()}.get(instance)
    state: dict[str, Any] = beat["state"] if beat else {}
    targets = await store.reports.target_status()
    return [*_source_families(await store.reports.source_counts()),
            _quarantine_family(await store.reports.quarantine_reasons()),
            *_target_families(targets, await store.reports.failed_attempts(), state.get("targets") or {}),
            _expiry_family(state.get("expiries") or []),
            _gauge("cg_store_size_bytes", "the store on disk", [], [([], float(await store.reports.size_bytes()))])]


def _source_families(counts: dict[str, dict[str, int]]) -> list[Metric]:
    read = CounterMetricFamily("cg_source_rows_read", "rows read at intake", labels=["source"])
    quarantined = CounterMetricFamily("cg_source_rows_quarantined", "rows quarantined at intake", labels=["source"])
    for source, c in sorted(counts.items()):
        read.add_metric([source], c["read"])
        quarantined.add_metric([source], c["quarantined"])
    return [read, quarantined]


def _quarantine_family(reasons: list[dict[str, Any]]) -> Metric:
    return _gauge("cg_quarantine_entries", "quarantine entries by reason (its code, else field:NAME)",
                  ["source", "stage", "state", "reason"],
                  [([r["source"], r["stage"], r["state"], r["reason"]], r["entries"]) for r in reasons])


def _target_families(targets: list[dict[str, Any]], failed: dict[str, int],
                     circuits: dict[str, Any]) -> list[Metric]:
    names = sorted({t["target"] for t in targets} | set(failed) | set(circuits))
    by_name = {t["target"]: t for t in targets}

    def row(name: str) -> dict[str, Any]:
        return by_name.get(name, {})  # a target that has had no records has no status row

    batches = CounterMetricFamily("cg_target_batches_failed", "delivery attempts that failed (retried or dead)",
                                  labels=["target"])
    for name in names:
        batches.add_metric([name], failed.get(name, 0))
    return [
        _gauge("cg_target_records", "records by outbox state", ["target", "state"],
               [([n, st], row(n).get(st, 0)) for n in names for st in RECORD_STATES]),
        _gauge("cg_target_backlog", "records waiting", ["target"], [([n], row(n).get("backlog", 0)) for n in names]),
        _gauge("cg_target_oldest_pending_seconds", "age of the oldest waiting record (0: none)", ["target"],
               [([n], row(n).get("oldest_pending_s") or 0.0) for n in names]),
        batches,
        _gauge("cg_target_circuit_state", "0 closed, 1 half-open, 2 open", ["target"],
               [([n], CIRCUIT_STATES.get(str((circuits.get(n) or {}).get("circuit")), 0)) for n in names]),
        _gauge("cg_dead_letters", "records given up on", ["target"], [([n], row(n).get("dead", 0)) for n in names]),
    ]


def _expiry_family(expiries: list[dict[str, Any]]) -> Metric:
    return _gauge("cg_days_left", "days left per certificate and for the working-day calendar", ["kind", "what"],
                  [([e["kind"], e["what"]], e["days_left"]) for e in expiries])


def _gauge(name: str, text: str, labels: list[str], samples: list[tuple[list[str], float]]) -> Metric:
    family = GaugeMetricFamily(name, text, labels=labels)
    for values, value in samples:
        family.add_metric(values, float(value))
    return family
