"""``credit-gateway lists``: versions and digests of the credit lists at every end, drift repair, conflicts."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from gateway.cli.ops import read_config
from gateway.config import load_config
from gateway.jobs import conflicts, list_status, reconcile
from gateway.report import print_conflicts, print_lists_status, print_repairs
from gateway.store import open_store


def add_parser(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("lists", help="credit lists: versions and digests per end, drift repair, red/black conflicts")
    config_arg(p)
    s = p.add_subparsers(dest="lists_command", required=True)
    st = s.add_parser("status", help="per list: version and digest at the platform, in the ledger, at each target")
    st.add_argument("--json", action="store_true")
    rc = s.add_parser("reconcile", help="compare every target with the ledger; re-send only what differs")
    rc.add_argument("--dry-run", action="store_true", help="report the difference, change nothing")
    rc.add_argument("--json", action="store_true")
    cf = s.add_parser("conflicts", help="red-list entries held back because their subject is on a black list")
    cf.add_argument("--json", action="store_true")


async def cmd_lists(args: argparse.Namespace) -> int:
    # reconcile queues records for the targets: it needs every mapping; status and conflicts only read
    config = load_config(args.config) if args.lists_command == "reconcile" else read_config(args)
    store = await open_store(config.store_url())
    try:
        if args.lists_command == "status":
            views = await list_status(config, store)
            print_lists_status(views, await store.lists.list_entries(), args.json)
            return 0 if all(t.in_sync for v in views for t in v.targets) else 1
        if args.lists_command == "reconcile":
            repairs = await reconcile(config, store, dry_run=args.dry_run)
            print_repairs(repairs, args.json, args.dry_run)
            return 1 if any(r.error for r in repairs) else 0
        print_conflicts(await conflicts(store), args.json)
        return 0
    finally:
        await store.aclose()












