"""``credit-gateway records`` and ``credit-gateway publicity``: the rules of publication, for ops and the DRC.

``records show DATASET KEY`` prints every version of one record with its operation and, per target, pending /
delivered (receipt id and time) / rejected (the target's code and reason); ``records changes`` lists every
revocation, objection and withdrawal (repair, end of publicity) with "confirmed k of n targets";
``publicity`` lists the withdrawals coming up at the end of publicity periods and the ones made.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from typing import Any

from gateway.cli.ops import read_config
from gateway.clock import china_today
from gateway.operations import mask_personal, personal_keys
from gateway.report import out, print_changes, print_history, print_json, table
from gateway.store import open_store

ConfigArg = Callable[[argparse.ArgumentParser], None]


def add_parsers(sub: Any, config_arg: ConfigArg) -> None:
    """The ``records`` and ``publicity`` sub-commands (registered by :mod:`gateway.cli`)."""
    p = sub.add_parser("records", help="a record's versions and deliveries; revocations, objections, withdrawals")
    config_arg(p)
    rs = p.add_subparsers(dest="records_command", required=True)
    show = rs.add_parser("show", help="every version of a record, per target: pending / delivered / rejected")
    show.add_argument("dataset")
    show.add_argument("key", help="the record key (文书号|机关代码), as `quarantine list` and the logs show it")
    show.add_argument("--json", action="store_true")
    ch = rs.add_parser("changes", help="revocations, objections and withdrawals with the targets that confirmed")
    ch.add_argument("--operation", choices=["revoke", "object", "withdraw"])
    ch.add_argument("--dataset")
    ch.add_argument("--unconfirmed", action="store_true", help="only those some target has not confirmed yet")
    ch.add_argument("--limit", type=int, default=100)
    ch.add_argument("--json", action="store_true")
    p = sub.add_parser("publicity", help="withdrawals at the end of publicity periods: coming up and made")
    config_arg(p)
    p.add_argument("--due-within", type=int, default=30, metavar="DAYS", help="upcoming within DAYS (default 30)")
    p.add_argument("--today", type=dt.date.fromisoformat, help="as of this date (default: today in China)")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")






# ---------------------------------------------------------------- records


async def cmd_records(args: argparse.Namespace) -> int:
    config = read_config(args)
    store = await open_store(config.store_url())
    try:
        if args.records_command == "show":
            history = await store.history.record_history(args.dataset, args.key, list(config.targets))
            if history is None:
                out(f"no {args.dataset} record {args.key!r} in the ledger")
                return 1
            print_json(mask_personal(history, personal_keys(config))) if args.json else print_history(history)
            return 0
        changes = await store.history.list_changes(list(config.targets), operation=args.operation,
                                     dataset=args.dataset, unconfirmed=args.unconfirmed, limit=args.limit)
    finally:
        await store.aclose()
    print_json(changes) if args.json else print_changes(changes)
    return 0






# ---------------------------------------------------------------- publicity


async def cmd_publicity(args: argparse.Namespace) -> int:
    config = read_config(args)
    store = await open_store(config.store_url())
    try:
        report = await store.publicity.report(list(config.targets), config.publicity.datasets,
                                              args.today or china_today(), args.due_within, args.limit)
    finally:
        await store.aclose()
    if args.json:
        print_json(report)
        return 0
    if not config.publicity.enabled:
        out("publication rules are off ([publicity] enabled = false)")
    out(f"as of {report['today']}: {len(report['upcoming'])} withdrawal(s) due within {report['due_within_days']} "
        f"day(s) or overdue; {len(report['withdrawn'])} made")
    if report["undated"]:
        more = " or more" if report["undated_more"] else ""
        out(f"{report['undated']}{more} record(s) have no publicity period yet (the daemon's publicity job "
            "computes them)")
    if report["upcoming"]:
        out("coming up (a withdraw to every public target that holds the record):")
        table(report["upcoming"], ["state", "dataset", "record_key", "decision_date", "max_end", "max_rule"])
    if report["withdrawn"]:
        out("made (公示期满):")
        table([{**r, "confirmed": f"{r['confirmed']} of {len(r['targets'])}",
                "targets": ", ".join(f"{t} {st}" for t, st in sorted(r["targets"].items()))}
               for r in report["withdrawn"]],
              ["dataset", "record_key", "max_end", "withdrawn_version", "withdrawn_at", "confirmed", "targets"])
    return 0
