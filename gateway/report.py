"""What the CLI, the admin API's text answers and the demo print: aligned tables and one printer per report.

Printers write through :func:`out`, which redacts ID numbers and secrets like the logs do. They read finished
report objects (built by gateway.jobs, gateway.domain and the store) and never compute anything themselves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import orjson

from gateway.clock import china_today
from gateway.config import Config
from gateway.domain.calendar import WorkCalendar
from gateway.domain.sanctions import SanctionsReport, sanctions_report
from gateway.domain.timeliness import TimelinessReport
from gateway.jobs import Conflict, ListView, Repair
from gateway.logs import redact
from gateway.operations import cell, status_lines, table_lines
from gateway.store import Store
from gateway.store.confirmations import SETTLED, Change, Delivery


def out(line: str = "") -> None:
    print(redact(line), flush=True)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print rows as an aligned text table."""
    for line in table_lines(rows, columns):
        out(line)


async def print_status(store: Store, calendar: WorkCalendar | None = None, sanctions_due_days: int = 10) -> None:
    for line in await status_lines(store, calendar, sanctions_due_days):
        out(line)


def print_timeliness(report: TimelinessReport) -> None:
    out(f"due 7 working days after the decision date; as of {report.today}; first delivery to "
        f"{report.target or 'any target'}; at risk: due within {report.at_risk_days} working day(s)")
    table([{"dataset": g.dataset, "department": g.department or "-", "on time": g.counts["on_time"],
            "late": g.counts["late"], "at risk": g.counts["at_risk"], "pending": g.counts["pending"],
            "no calendar": g.counts["uncovered"]} for g in report.groups],
          ["dataset", "department", "on time", "late", "at risk", "pending", "no calendar"])
    for g in (g for g in report.groups if g.late_keys):
        more = " …" if g.counts["late"] > len(g.late_keys) else ""
        out(f"late {g.dataset} {g.department or '-'}: {', '.join(g.late_keys)}{more}")
    for message in report.uncovered:
        out(f"no calendar: {message}")


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "-"


def print_lists_status(views: Sequence[ListView], entries: Sequence[Any], as_json: bool) -> None:
    held = sum(1 for e in entries if e.held)
    if as_json:
        out(orjson.dumps({"lists": [v.as_json() for v in views], "conflicts": held},
                         option=orjson.OPT_INDENT_2).decode())
        return
    rows: list[dict[str, Any]] = []
    for v in views:
        rows.append({"list": v.list_code, "type": v.list_type, "end": "platform", "version": v.platform_version,
                     "entries": v.platform_count, "digest": _short(v.platform_digest), "state": "announced"})
        same = "= platform" if v.ledger_digest == v.platform_digest else "≠ platform"
        rows.append({"list": v.list_code, "type": v.list_type, "end": "ledger", "version": v.applied_version,
                     "entries": v.ledger_count, "digest": _short(v.ledger_digest),
                     "state": same + (f", {v.held} held" if v.held else "")})
        for t in v.targets:
            rows.append({"list": v.list_code, "type": v.list_type, "end": f"target {t.target}", "version": "-",
                         "entries": t.rows, "digest": _short(t.digest), "state": _target_state(t)})
    table(rows, ["list", "type", "end", "version", "entries", "digest", "state"])
    out(f"red/black conflicts held back: {held}")
    out("digests: platform and ledger over the listed subjects (membership); a target's over the rows it holds, "
        "each row as the gateway would send it (content)")


def _target_state(t: Any) -> str:
    if t.error:
        return f"error: {t.error}"
    if t.in_sync:  # a content digest (rows as the target holds them), so it is compared with what it should be
        state = "= ledger (content digest as expected)"
    else:
        parts = [f"{n} {name}" for name, n in (("changed", len(t.changed)), ("missing", len(t.missing)),
                                                ("stale", len(t.stale)), ("unknown", len(t.unknown))) if n]
        state = "drift: " + ", ".join(parts) + f" (expected {_short(t.expected_digest)})"
    return state + (f", {t.queued} queued" if t.queued else "")


def print_repairs(repairs: Sequence[Repair], as_json: bool, dry_run: bool) -> None:
    if as_json:
        out(orjson.dumps([r.__dict__ for r in repairs], option=orjson.OPT_INDENT_2).decode())
        return
    verb = "would re-send" if dry_run else "re-sent"
    table([{"target": r.target, "list": r.list_code or "-", verb: r.requeued, "discarded": r.discarded,
            "error": r.error or ""} for r in repairs], ["target", "list", verb, "discarded", "error"])


def print_conflicts(found: Sequence[Conflict], as_json: bool) -> None:
    if as_json:
        out(orjson.dumps([c.__dict__ for c in found], option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        out("no red/black conflicts")
        return
    for c in found:
        out(f"subject {c.subject}: red entry held back from every target")
        out(f"  red    {c.red_key}: {_entry(c.red)}")
        out(f"  black  {c.black_key}: {_entry(c.black)}")
        if c.delivered:
            out("  already delivered before the conflict: " + ", ".join(f"{t} v{v}" for t, v in c.delivered.items()))


def _entry(payload: Any) -> str:
    return "; ".join(f"{k}={v}" for k, v in payload.items())


def print_json(value: Any) -> None:
    out(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=_default).decode())


def _default(value: Any) -> Any:
    if isinstance(value, Delivery | Change):
        return value.as_json()
    raise TypeError(type(value).__name__)


def print_history(history: dict[str, Any]) -> None:
    out(f"{history['dataset']} {history['record_key']}")
    out(f"ledger     version {history['version']}, {history['operation']}"
        + (f" ({history['payload']['withdraw_reason']})" if history["payload"].get("withdraw_reason") else "")
        + f", updated {cell(history['updated_at'])}")
    period = history["publicity"]
    if period:
        out(f"publicity  decision {period['decision_date']}; minimum until {period['min_end'] or '-'}"
            f" ({period['min_rule'] or 'no rule'}); maximum until {period['max_end'] or '-'}"
            f" ({period['max_rule'] or 'no rule'})")
    kinds = {c["version"]: c for c in history["changes"]}
    rows = []
    for d in history["deliveries"]:
        change = kinds.get(d.version, {})
        rows.append({"version": d.version, "operation": change.get("operation", "upsert"),
                     "reason": change.get("reason") or "", "target": d.target, "state": d.state,
                     "receipt": d.receipt_id or "", "at": d.received_at or d.at, "detail": d.reason})
    sent = {d.version for d in history["deliveries"]}
    for version in sorted((set(kinds) | {history["version"]}) - sent):
        change = kinds.get(version, {})
        rows.append({"version": version, "operation": change.get("operation", history["operation"]),
                     "reason": change.get("reason") or "", "target": "-", "state": "not sent",
                     "at": change.get("at"), "detail": "no target held the record" if change else ""})
    table(sorted(rows, key=lambda r: (r["version"], r["target"])),
          ["version", "operation", "reason", "target", "state", "receipt", "at", "detail"])


def print_changes(changes: list[Change]) -> None:
    rows = [{"id": c.id, "dataset": c.dataset, "key": c.record_key, "version": c.version, "operation": c.operation,
             "reason": c.reason, "origin": c.origin, "at": c.at, "confirmed": c.summary(),
             "waiting": ", ".join(f"{d.target} {d.state}" for d in c.deliveries
                                  if d.state not in SETTLED)} for c in changes]
    table(rows, ["id", "dataset", "key", "version", "operation", "reason", "origin", "at", "confirmed", "waiting"])
    out(f"{len(changes)} change(s); {sum(1 for c in changes if c.unconfirmed)} not confirmed by every target")


async def report_for(store: Store, config: Config, today: dt.date | None = None) -> SanctionsReport:
    """The report as of ``today`` (default: today in China) with the config's calendar and due days."""
    return await sanctions_report(store.history, WorkCalendar.from_settings(config.calendar),
                                  today=today or china_today(),
                                  due_working_days=config.sanctions.feedback_due_working_days)


def print_sanctions(report: SanctionsReport, state: str | None = None) -> None:
    counts = report.counts()
    out(f"as of {report.today}; feedback due {report.due_working_days} working days after receipt; "
        + ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in counts.items()))
    table([{"case": c.case_id, "state": c.state, "subject": c.subject, "measure": c.measure,
            "received": c.received_on.isoformat(), "due": c.due.isoformat() if c.due else "-",
            "pushed (receipt)": c.pushed.receipt_id if c.pushed else "-",
            "feedback": f"{c.feedback_delivered}/{c.feedback_collected}"
                        + (f" ({c.feedback_rejected} refused)" if c.feedback_rejected else ""),
            "answered (receipt)": (c.answered.receipt_id + (" late" if c.answered_late else "")) if c.answered else "-"}
           for c in report.only(state)],
          ["case", "state", "subject", "measure", "received", "due", "pushed (receipt)", "feedback",
           "answered (receipt)"])
    for message in report.uncovered:
        out(f"no calendar: {message}")
