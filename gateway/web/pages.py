"""The dashboard's pages: each reads its figures (gateway.figures, the store's reports) and returns the page body.

A page gets the request's query and the language and returns HTML made with gateway.web.html, which escapes
every value. Figures pass :func:`gateway.operations.mask_personal` before they are drawn (and the dashboard runs
the whole page through :func:`gateway.logs.redact` once more), so no ID number reaches the browser unmasked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any

from gateway import figures
from gateway.clock import CHINA, age, china_today
from gateway.config import Config
from gateway.domain.timeliness import AT_RISK, LATE, ON_TIME, PENDING
from gateway.errors import GatewayError
from gateway.figures import Month, china_text
from gateway.jobs import conflicts, list_status
from gateway.monthly import dataset_label
from gateway.operations import mask_personal
from gateway.store import Store
from gateway.web.html import bar_chart, esc, link, percent, t, table

LIST_TIMEOUT_S = 10.0  # the list page opens the target adapters; a slow target shows as an error, not a hang


class Pages:
    """The page builders over one store and configuration; ``personal``: the names ID numbers appear under."""

    def __init__(self, config: Config, store: Store, personal: frozenset[str], *, adapters_open: bool = False) -> None:
        self.config, self.store, self.personal = config, store, personal
        self.adapters_open = adapters_open  # served by a running daemon: its target adapters are open

    def mask(self, value: Any) -> Any:
        return mask_personal(value, self.personal)

    # ------------------------------------------------------------ overview

    async def overview(self, query: Mapping[str, str], lang: str) -> str:
        today = china_today()
        data = self.mask(await figures.overview(self.store, today))
        rows = [[r["target"], r["backlog"], r["today"], r["month"], age(r["oldest_pending_s"]), r["circuit"] or "-",
                 r["dead"], r["last_error"] or ""] for r in data["targets"]]
        out = [f'<h2>{esc(t("targets", lang))}</h2>',
               table([t(k, lang) for k in ("target", "backlog", "today", "month", "oldest", "circuit", "dead",
                                            "last_error")], rows, css="targets")]
        sources = [[r["source"], china_text(r["last_poll"]), r["rows"], r["quarantined"]] for r in data["sources"]]
        out += [f'<h2>{esc(t("sources", lang))}</h2>',
                table([t(k, lang) for k in ("source", "last_poll", "rows", "quarantined")], sources, css="sources")]
        per_day: dict[str, int] = {}
        for days in data["per_day"].values():
            for day, n in days.items():
                per_day[str(day)] = per_day.get(str(day), 0) + n
        month = Month.of(today)
        points = [(d.strftime("%d"), float(per_day.get(d.isoformat(), 0))) for d in month.days() if d <= today]
        out.append(bar_chart(points, title=t("per_day", lang)))
        beats = [[b["instance"], b["pid"], b["state"], china_text(b["beat_at"])] for b in data["instances"]]
        out += [f'<h2>{esc(t("instances", lang))}</h2>',
                table([t("instance", lang), "pid", t("state", lang), t("time", lang)], beats, css="instances")]
        return "".join(out)

    # ------------------------------------------------------------ timeliness

    async def timeliness(self, query: Mapping[str, str], lang: str) -> str:
        today = china_today()
        try:
            month = Month.parse(query["month"]) if query.get("month") else Month.of(today)
        except ValueError:
            month = Month.of(today)
        ledger = figures.LedgerRows(self.store.reports)  # the ledger is read once for the seven months
        report = await figures.month_timeliness(self.store, self.config, month, today, rows=ledger)
        rows, late = [], []
        for g in report.groups:
            c = g.counts
            rows.append([dataset_label(g.dataset), g.department, sum(c.values()), c[ON_TIME], c[LATE], c[AT_RISK],
                         c[PENDING], percent(figures.rate(c))])
            late += [[dataset_label(g.dataset), g.department, link("/dashboard/record", key,
                                                                   {"dataset": g.dataset, "key": key})]
                     for key in self.mask(g.late_keys)]
        form = (f'<form class="filters" method="get"><input type="month" name="month" id="month" value="{month}">'
                f'<button type="submit">{esc(t("show", lang))}</button></form>')
        trend = await self._rate_trend(month, today, ledger)
        return "".join([
            form, table([t(k, lang) for k in ("dataset", "department", "records", "on_time", "late", "at_risk",
                                              "pending", "rate")], self.mask(rows), css="timeliness"),
            bar_chart(trend, title=t("rate_per_month", lang), percent_axis=True),
            f'<h2>{esc(t("late_records", lang))}</h2>',
            table([t("dataset", lang), t("department", lang), t("key", lang)], late, css="late", raw=(2,))])

    async def _rate_trend(self, month: Month, today: dt.date, ledger: figures.LedgerRows) -> list[tuple[str, float]]:
        """The on-time rate of the six months up to ``month`` (months without judged records left out)."""
        points = []
        first = month.first
        for back in range(5, -1, -1):
            m = Month(first.year + (first.month - 1 - back) // 12, (first.month - 1 - back) % 12 + 1)
            report = await figures.month_timeliness(self.store, self.config, m, today, rows=ledger)
            totals = {k: sum(g.counts[k] for g in report.groups) for k in (ON_TIME, LATE)}
            if (value := figures.rate(totals)) is not None:
                points.append((str(m), value))
        return points

    # ------------------------------------------------------------ quarantine

    async def quarantine(self, query: Mapping[str, str], lang: str) -> str:
        groups = self.mask(await figures.quarantine_reasons(self.store))
        rows = []
        for g in groups:
            samples = "<br>".join(f'{esc(s["source_key"])} · {esc(s["record_key"])}: {esc(s["message"])}'
                                  for s in g["samples"])
            stage = t(f"stage_{g['stage']}", lang)
            rows.append([stage, dataset_label(g["dataset"]), g["field"], g["reason"], g["count"], samples])
        return table([t(k, lang) for k in ("stage", "dataset", "field", "reason", "count", "samples")], rows,
                     css="quarantine", raw=(5,))

    # ------------------------------------------------------------ credit lists

    async def lists(self, query: Mapping[str, str], lang: str) -> str:
        try:
            views = await asyncio.wait_for(list_status(self.config, self.store, adapters_open=self.adapters_open),
                                           LIST_TIMEOUT_S)
        except (TimeoutError, GatewayError) as exc:
            return f'<p class="error">{esc(exc or "timeout")}</p>'
        rows = []
        for v in views:
            ends = "; ".join(f"{x.target}: {t('in_sync', lang) if x.in_sync else x.error or t('differs', lang)}"
                             f" ({x.rows}, {x.digest[:12]})" for x in v.targets)
            rows.append([v.list_code, v.list_type, v.platform_version, v.platform_digest[:16], v.platform_count,
                         v.applied_version, v.ledger_digest[:16], v.ledger_count, v.held, ends])
        found = self.mask([[c.red_key, c.black_key, c.subject] for c in await conflicts(self.store)])
        return "".join([
            table([t("list_code", lang), t("kind", lang), f'{t("platform", lang)} {t("version", lang)}',
                   f'{t("platform", lang)} {t("digest", lang)}', t("platform", lang), f'{t("ledger", lang)} '
                   f'{t("version", lang)}', f'{t("ledger", lang)} {t("digest", lang)}', t("ledger", lang),
                   t("conflicts", lang), t("targets", lang)], self.mask(rows), css="lists"),
            f'<h2>{esc(t("conflicts", lang))}</h2>',
            table([t("red", lang), t("black", lang), t("subject", lang)], found, css="conflicts")])

    # ------------------------------------------------------------ joint sanctions

    async def sanctions(self, query: Mapping[str, str], lang: str) -> str:
        report, results = await figures.sanctions(self.store, self.config, china_today())
        counts = report.counts()
        summary = table([t(k, lang) for k in ("open", "answered", "overdue")],
                        [[counts["open"], counts["answered"], counts["overdue"]]], css="sanction-counts")
        rows = [[c.case_id, c.subject, c.measure, t(c.state, lang), c.received_on.isoformat(),
                 c.due.isoformat() if c.due else "", f"{c.feedback_delivered}/{c.feedback_collected}"]
                for c in report.cases]
        by_result = table([t("reason", lang), t("count", lang)], [[k, v] for k, v in results.items()],
                          css="feedback-results")
        return "".join([summary, table([t(k, lang) for k in ("case", "subject", "measure", "state", "received",
                                                              "due", "feedback")], self.mask(rows), css="cases"),
                        f'<h2>{esc(t("feedback", lang))}</h2>', by_result])

    # ------------------------------------------------------------ certificates and calendar

    async def certificates(self, query: Mapping[str, str], lang: str) -> str:
        today = china_today()
        creds = figures.credentials(self.config, dt.datetime.now(CHINA))
        rows = [[c["where"], c["kind"], c["subject"], c["not_after"], c["days_left"], c["status"]] for c in creds]
        cover = figures.calendar_cover(self.config, today)
        return "".join([
            table([t(k, lang) for k in ("where", "kind", "subject", "not_after", "days_left", "state")],
                  self.mask(rows), css="certificates"),
            f'<h2>{esc(t("calendar", lang))}</h2>',
            table([t("calendar", lang), t("not_after", lang), t("days_left", lang)],
                  [[cover["coverage"], cover["covered_until"], cover["days_left"]]], css="calendar")])

    # ------------------------------------------------------------ sync log

    async def log(self, query: Mapping[str, str], lang: str) -> str:
        since = _day_start(query.get("from"))
        until = _day_start(query.get("to"), 1)
        events = await self.store.reports.find_events(
            target=query.get("target") or None, dataset=query.get("dataset") or None, key=query.get("key") or None,
            since=since, until=until, limit=500)
        rows = [[china_text(e["at"]), e["kind"], e["target"], e["dataset"],
                 link("/dashboard/record", e["record_key"], {"dataset": e["dataset"], "key": e["record_key"]})
                 if e["record_key"] else "", e["detail"]] for e in self.mask(events)]
        batches = await self.store.reports.list_batches(query.get("target") or None, limit=50)
        if query.get("dataset"):
            batches = [b for b in batches if b["dataset"] == query["dataset"]]
        brows = [[china_text(b["created_at"]), b["id"], b["target"], b["dataset"], b["state"], b["record_count"],
                  b["attempts"], b["last_error"] or ""] for b in self.mask(batches)]
        inputs = "".join(f'<label>{esc(t(name, lang))} <input name="{name}" '
                         f'id="f-{name}" type="{"date" if name in ("from", "to") else "text"}" '
                         f'value="{esc(query.get(name, ""))}"></label> '
                         for name in ("target", "dataset", "key", "from", "to"))
        form = (f'<form class="filters" method="get">{inputs}<button type="submit">{esc(t("show", lang))}</button>'
                '</form>')
        return "".join([form, table([t(k, lang) for k in ("time", "event", "target", "dataset", "key", "detail")],
                                    rows, css="events", raw=(4,)),
                        f'<h2>{esc(t("batches", lang))}</h2>',
                        table([t("time", lang), t("batch", lang), t("target", lang), t("dataset", lang),
                               t("state", lang), t("records", lang), t("attempts", lang), t("last_error", lang)], brows,
                              css="batches")])

    # ------------------------------------------------------------ a record's lineage

    async def record(self, query: Mapping[str, str], lang: str) -> str:
        dataset, key = query.get("dataset", ""), query.get("key", "")
        form = (f'<form class="filters" method="get"><input name="dataset" id="r-dataset" value="{esc(dataset)}">'
                f'<input name="key" id="r-key" size="50" value="{esc(key)}"><button type="submit">'
                f'{esc(t("show", lang))}</button></form>')
        if not (dataset and key):
            return form
        history = await self.store.history.record_history(dataset, key, list(self.config.targets))
        origin = await self.store.reports.record_origin(dataset, key)
        if history is None or origin is None:
            return form + f'<p class="error">{esc(t("not_found", lang))}</p>'
        history, origin = self.mask(history), self.mask(origin)
        fields = [[name, value] for name, value in history["payload"].items()]
        reasons = "; ".join(f"{q['stage']} {q['target']} {q['state']}: "
                            + ", ".join(str(r.get("message", "")) for r in q["reasons"]) for q in origin["quarantine"])
        rows = [[d.version, d.target, d.state, d.receipt_id, china_text(d.received_at or d.at), d.reason]
                for d in await self._deliveries(history)]
        changes = [[c["version"], c["operation"], c.get("reason") or "", china_text(c["at"])]
                   for c in history["changes"]]
        return "".join([
            form, f'<h2>{esc(t("origin", lang))}</h2>',
            table([t("source", lang), t("source_key", lang), t("decision_date", lang), t("quarantine", lang)],
                  [[origin["source"], origin["source_key"], origin["decision_date"], reasons]], css="origin"),
            f'<h2>{esc(t("payload", lang))}</h2>', table([t("field", lang), t("value", lang)], fields, css="payload"),
            f'<h2>{esc(t("versions", lang))}</h2>',
            table([t("version", lang), t("operation", lang), t("reason", lang), t("time", lang)], changes,
                  css="changes"),
            table([t("version", lang), t("target", lang), t("state", lang), t("receipt", lang), t("time", lang),
                   t("detail", lang)], self.mask(rows), css="deliveries")])

    async def _deliveries(self, history: dict[str, Any]) -> list[Any]:
        """The record's deliveries as History returned them (mask_personal leaves the Delivery objects alone)."""
        return sorted(history["deliveries"], key=lambda d: (d.version, d.target))


def _day_start(text: str | None, plus_days: int = 0) -> float | None:
    """Midnight (China time) of an ISO date, plus some days; None for no or a bad date."""
    try:
        day = dt.date.fromisoformat(text or "")
    except ValueError:
        return None
    return dt.datetime.combine(day + dt.timedelta(days=plus_days), dt.time(), CHINA).timestamp()
