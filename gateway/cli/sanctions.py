"""``credit-gateway sanctions``: the joint-sanction cases and where each one is in the loop."""

from __future__ import annotations

import argparse
import datetime as dt

import orjson

from gateway.cli.ops import out, read_config, table
from gateway.config import Config
from gateway.domain.calendar import WorkCalendar
from gateway.domain.sanctions import SanctionsReport, sanctions_report
from gateway.pipeline.engine import china_today
from gateway.store.composed import Store
from gateway.store.database import open_store


async def report_for(store: Store, config: Config, today: dt.date | None = None) -> SanctionsReport:
    """The report as of ``today`` (default: today in China) with the config's calendar and due days."""
    return await sanctions_report(store, WorkCalendar.from_settings(config.calendar), today=today or china_today(),
                                  due_working_days=config.sanctions.feedback_due_working_days)


async def cmd_sanctions(args: argparse.Namespace) -> int:
    config = read_config(args)
    store = await open_store(config.store_url())
    try:
        report = await report_for(store, config, args.today)
    finally:
        await store.aclose()
    if args.json:
        out(orjson.dumps(report.as_json(args.state), option=orjson.OPT_INDENT_2).decode())
    else:
        print_sanctions(report, args.state)
    return 0


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
