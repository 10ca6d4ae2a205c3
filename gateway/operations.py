"""Operations shared by the CLI and the admin API: the status report, quarantine replay, ID masking.

Both the local ``credit-gateway status`` and ``GET /api/v1/status`` build their text here, so a remote
``status --admin-url`` prints exactly what a local one does. Everything the admin API returns passes
:func:`mask_personal`: personal ID fields (canonical names, the columns inbound mappings read them from and the
names outbound mappings write them to) are masked, and any 18-character ID number in any text too.
"""

from __future__ import annotations

import datetime as dt
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.adapter import SourceBatch, SourceRow
from gateway.certs import expiry_warnings
from gateway.clock import age, china_today
from gateway.config import Config
from gateway.domain.calendar import WorkCalendar
from gateway.domain.identifiers import mask_id
from gateway.domain.sanctions import sanctions_report
from gateway.domain.timeliness import timeliness_report
from gateway.jobs import repair_screen
from gateway.logs import redact
from gateway.mapping import InboundMapping, OutboundMapping
from gateway.mapping.model import REPLACED
from gateway.store import Store
from gateway.stored import Reject

# ---------------------------------------------------------------- text tables and ages

def cell(value: Any) -> str:
    if isinstance(value, float) and value > 1_000_000_000:  # an epoch timestamp
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, float):
        return f"{value:.1f}"
    return "-" if value is None else str(value)


def _width(text: str) -> int:
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)  # CJK characters take two columns


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def table_lines(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """Rows as an aligned text table."""
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([_width(c)] + [_width(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(_pad(c, w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(_pad(v, w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return lines


# ---------------------------------------------------------------- status

async def status_lines(store: Store, calendar: WorkCalendar | None = None, sanctions_due_days: int = 10
                       ) -> list[str]:
    """What ``credit-gateway status`` prints (without the certificate warnings)."""
    calendar = calendar or WorkCalendar()
    counts = await store.reports.counts()
    ledger = ", ".join(f"{k} {v}" for k, v in sorted(counts["ledger"].items())) or "empty"
    quarantine = ", ".join(f"{k} {v}" for k, v in sorted(counts["quarantine"].items())) or "none"
    lines = [f"rows read {counts['rows_read']}; ledger: {ledger}; open quarantine: {quarantine}"]
    if (lists := await lists_line(store)) is not None:
        lines.append(lists)
    lines += (await timeliness_report(store.reports, calendar, today=china_today())).status_lines()
    lines += (await sanctions_report(store.history, calendar, today=china_today(),
                                     due_working_days=sanctions_due_days)).status_lines()
    lines += await audit_lines(store)
    rows = [{**r, "oldest pending": age(r["oldest_pending_s"]), "last success": r["last_success"]}
            for r in await store.reports.target_status()]
    lines += table_lines(rows, ["target", "backlog", "oldest pending", "delivered", "rejected", "dead", "withheld",
                                "open_batches", "retrying", "last success"])
    for beat in await store.reports.heartbeats():
        lines.append(f"instance {beat['instance']} pid {beat['pid']}: {beat['state'].get('state')}, "
                     f"last heartbeat {age(time.time() - beat['beat_at'])} ago")
        lines += [f"  target {name}: {line}" for name, line, _blocked in target_errors(beat)]
    return lines


async def audit_lines(store: Store) -> list[str]:
    """A status line per source with late commits found or an audit: what the look-back window found, the last
    audit, and what all audits recovered (gateway.pipeline.audit)."""
    audits, found = await store.audits.latest(), await store.audits.found()
    lines = []
    for name in sorted(audits.keys() | found.keys()):
        line = f"source {name}: look-back found {found.get(name, {}).get('late', 0)} late row(s)"
        if (a := audits.get(name)) is not None:
            line += (f"; audited {age(time.time() - a.at)} ago, {a.rows} rows in {a.ranges} ranges, "
                     f"{a.differing} differing, {a.reread} re-read, {a.recovered} recovered "
                     f"({a.recovered_total} by all audits)")
        lines.append(line)
    return lines


def target_errors(beat: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, text, blocked) per target of a heartbeat with an error: one that keeps new batches from being made
    (blocked: a sealing failure), or the last failed attempt."""
    out = []
    for name, state in (beat["state"].get("targets") or {}).items():
        if not isinstance(state, dict):
            continue
        if state.get("blocked"):
            out.append((str(name), f"new batches held back: {state['blocked']}", True))
        elif state.get("last_error"):
            out.append((str(name), f"last error: {state['last_error']}", False))
    return out


async def status_json(store: Store, config: Config) -> dict[str, Any]:
    """What ``credit-gateway status --json`` prints."""
    status: dict[str, Any] = {"targets": await store.reports.target_status(), "counts": await store.reports.counts(),
                              "instances": await store.reports.heartbeats()}
    status["timeliness"] = (await timeliness_report(
        store.reports, WorkCalendar.from_settings(config.calendar), today=china_today())).as_json()
    status["certificates"] = expiry_warnings(config)
    status["store_bytes"] = await store.reports.size_bytes()
    status["sanctions"] = (await sanctions_report(
        store.history, WorkCalendar.from_settings(config.calendar), today=china_today(),
        due_working_days=config.sanctions.feedback_due_working_days)).counts()
    entries = await store.lists.list_entries()
    status["lists"] = {"entries": sum(1 for e in entries if e.active), "conflicts": sum(1 for e in entries if e.held)}
    status["audits"] = {name: asdict(a) for name, a in (await store.audits.latest()).items()}
    status["late_commits"] = await store.audits.found()  # per source: found by the look-back, by the audits
    return status


async def lists_line(store: Store) -> str | None:
    """One status line for credit lists: lists, listed entries, conflicts (None without lists)."""
    entries = await store.lists.list_entries()
    if not entries:
        return None
    codes = {e.list_code for e in entries}
    listed = sum(1 for e in entries if e.active)
    held = sum(1 for e in entries if e.held)
    return f"credit lists: {len(codes)} list(s), {listed} entries listed, {held} red/black conflict(s) held back"


# ---------------------------------------------------------------- quarantine replay

@dataclass
class ReplayResult:
    fixed: int = 0  # mapping rejects that map now and were queued
    still: int = 0  # still failing (or their source is gone)
    requeued: int = 0  # target rejects queued again
    notes: list[str] | None = None

    def summary(self) -> str:
        return (f"replayed: {self.fixed} row(s) now valid and queued, {self.still} still failing, "
                f"{self.requeued} target rejection(s) queued again")


def replay_mapping(config: Config, source: str, dataset: str) -> InboundMapping | None:
    """The mapping a quarantined row of ``source`` is mapped with now: a source's, or an inbound channel's."""
    src = config.sources.get(source)
    if src is not None:
        return src.mappings.get(dataset)
    if config.inbound is not None and source.startswith("inbound."):
        channel = config.inbound.channels.get(source.removeprefix("inbound."))
        if channel is not None and channel.dataset == dataset:
            return channel.mapping
    return None


def undecodable(entry: Mapping[str, Any]) -> str | None:
    """Why a quarantined row cannot be replayed from its stored copy: its bytes were not text at the source, so
    what was kept holds replacement characters (U+FFFD) in place of the real text. None when it can be."""
    columns = sorted(c for c, v in (entry.get("raw") or {}).items() if isinstance(v, str) and REPLACED in v)
    if not columns:
        return None
    said = [r["message"] for r in entry.get("reasons") or [] if r.get("field") in columns]
    return (f"column(s) {', '.join(columns)} were not valid text at the source"
            f"{' (' + '; '.join(said) + ')' if said else ''}, and the copy kept has replacement characters "
            "(U+FFFD) in their place. Correct the row in the department's database (a changed row is read again), "
            "or give the source its real `encoding`; the entry then resolves by itself")


async def replay_entries(store: Store, config: Config, entries: Sequence[dict[str, Any]]) -> ReplayResult:
    """Mapping rejects are mapped again with today's mapping; target rejects are sent again."""
    target_entries = [e for e in entries if e["stage"] != "mapping"]
    result = ReplayResult(requeued=await store.reports.requeue_rejected(target_entries) if target_entries else 0,
                          notes=[])
    routes = config.routes()
    for e in (e for e in entries if e["stage"] == "mapping"):
        refusal = undecodable(e)
        if refusal:
            result.notes = [*(result.notes or []), f"entry {e['id']}: not replayed: {refusal}"]
            result.still += 1
            continue
        mapping = replay_mapping(config, e["source"], e["dataset"])
        if mapping is None:
            result.notes = [*(result.notes or []), f"entry {e['id']}: source {e['source']} / dataset "
                                                   f"{e['dataset']} is no longer configured"]
            result.still += 1
            continue
        secret = await store.key_secret() if mapping.dataset.pseudonymised_key else None
        mapped = mapping.map_row(e["raw"], china_today(), e["source"], e["source_key"], secret=secret)
        rejects = [] if mapped.record else [Reject(e["source"], e["source_key"], e["dataset"], mapped.key,
                                                   mapped.problems, e["raw"])]
        accepted = [mapped.record.entry()] if mapped.record else []
        if config.publicity.enabled:  # a repair replayed before its minimum period is refused again
            accepted, rejects = await repair_screen(store, config.publicity)(
                accepted, rejects, SourceBatch([SourceRow(e["source_key"], e["raw"])], None, False), china_today())
        await store.intake.commit_intake(e["source"], accepted, rejects, None, routes, 0)
        if accepted:
            result.fixed += 1
        else:
            result.still += 1
    return result


# ---------------------------------------------------------------- masking personal ID numbers

def personal_keys(config: Config) -> frozenset[str]:
    """Every name a personal ID number can appear under: canonical fields, source columns, target fields."""
    keys: set[str] = set()
    mappings: list[Any] = [m for s in config.sources.values() for m in s.mappings.values()]
    mappings += [m for t in config.targets.values() for m in t.mappings.values()]
    mappings += [c.mapping for c in config.inbound.channels.values()] if config.inbound else []
    for mapping in mappings:
        keys |= personal_names(mapping)
    return frozenset(keys)


def personal_names(mapping: InboundMapping | OutboundMapping) -> frozenset[str]:
    """The names a personal ID number has in one mapping: its canonical fields and the source columns or target
    fields the file maps them from or to."""
    personal = mapping.dataset.personal_id_fields
    return personal | _mapped_names(Path(mapping.path), personal, inbound=isinstance(mapping, InboundMapping))


def _mapped_names(path: Path, personal: frozenset[str], *, inbound: bool) -> set[str]:
    try:
        fields = tomllib.loads(path.read_text(encoding="utf-8")).get("fields", {})
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return set()
    if inbound:  # [fields.id_no] from = "zjhm": the source column
        return {str(raw["from"]) for name, raw in fields.items() if name in personal and isinstance(raw, dict)
                and isinstance(raw.get("from"), str)}
    return {str(name) for name, raw in fields.items() if isinstance(raw, dict) and raw.get("from") in personal}


def mask_personal(value: Any, keys: frozenset[str], key: str = "") -> Any:
    """``value`` with personal ID fields masked and ID numbers in any text masked. A number counts too: a partner
    may send an ID number as a JSON number, and the quarantine keeps the row as it came."""
    if isinstance(value, dict):
        return {str(k): mask_personal(v, keys, str(k)) for k, v in value.items()}  # str: orjson takes no subclasses
    if isinstance(value, list | tuple):
        return [mask_personal(v, keys, key) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        if key in keys:
            return mask_id(text)
        return value if (masked := redact(text)) == text else masked
    if isinstance(value, str):
        return mask_id(value.strip()) if key in keys and value.strip() else redact(value)
    return value
