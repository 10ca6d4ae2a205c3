"""``credit-gateway report monthly`` (the DRC's monthly report) and ``credit-gateway dashboard`` (the admin
listener alone, serving the dashboard and the API over the store while no daemon runs)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from gateway.cli.ops import read_config
from gateway.clock import china_today
from gateway.config import Config
from gateway.errors import ConfigError, Problem
from gateway.figures import Month
from gateway.monthly import MonthlyReport, monthly_report
from gateway.report import out
from gateway.store import open_store
from gateway.web.admin import AdminServer
from gateway.xlsx import write_xlsx


def _month(text: str) -> Month:
    try:
        return Month.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parsers(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("report", help="reports for the development-and-reform commission (DRC)")
    rsub = p.add_subparsers(dest="report", required=True)
    m = rsub.add_parser("monthly", help="the monthly report: timeliness, quarantine, deliveries, lists, "
                                        "sanctions, certificates (Excel with charts, CSV or JSON)")
    config_arg(m)
    m.add_argument("--month", type=_month, help="YYYY-MM (default: this month in China time)")
    m.add_argument("--xlsx", type=Path, metavar="FILE", help="write an Excel workbook")
    m.add_argument("--csv", type=Path, metavar="DIR", help="write one CSV file per sheet into DIR")
    m.add_argument("--json", action="store_true", help="print the report as JSON")
    m.add_argument("--today", type=dt.date.fromisoformat,
                   help="judge deadlines as of this date (default: today in China)")
    p = sub.add_parser("dashboard", help="serve the read-only dashboard and the admin API ([admin]) over the store")
    config_arg(p)


async def build_monthly(config: Config, month: Month | None, today: dt.date | None = None) -> MonthlyReport:
    store = await open_store(config.store_url())
    try:
        return await monthly_report(store, config, month or Month.of(china_today()), today)
    finally:
        await store.aclose()


async def cmd_report(args: argparse.Namespace) -> int:
    if not (args.xlsx or args.csv or args.json):
        raise ConfigError([Problem("report monthly", "give --xlsx FILE, --csv DIR or --json")], str(args.config))
    report = await build_monthly(read_config(args), args.month, args.today)
    if args.xlsx:
        write_xlsx(report, args.xlsx)
        out(f"monthly report {report.month}: {args.xlsx} ({len(report.sheets)} sheets)")
    if args.csv:
        paths = report.write_csv(args.csv)
        out(f"monthly report {report.month}: {len(paths)} CSV files in {args.csv}")
    if args.json:
        out(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode())
    return 0


async def cmd_dashboard(args: argparse.Namespace) -> int:
    config = read_config(args)
    if config.admin is None:
        raise ConfigError([Problem("admin", "the dashboard needs an [admin] section with a read token")],
                          str(args.config))
    store = await open_store(config.store_url())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with AdminServer(config, config.admin, store) as server:
            out(f"dashboard on {server.url}/dashboard (log in with a read token; stop with Ctrl-C)")
            await stop.wait()
    finally:
        await store.aclose()
    return 0
