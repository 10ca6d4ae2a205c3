"""``credit-gateway lists``: versions and digests of the credit lists at every end, drift repair, conflicts."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from gateway.cli.ops import out, read_config, table
from gateway.config import load_config
from gateway.domain.lists import Conflict, ListView, Repair, conflicts, list_status, reconcile
from gateway.store.database import open_store


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
            print_status(views, await store.list_entries(), args.json)
            return 0 if all(t.in_sync for v in views for t in v.targets) else 1
        if args.lists_command == "reconcile":
            repairs = await reconcile(config, store, dry_run=args.dry_run)
            _print_repairs(repairs, args.json, args.dry_run)
            return 1 if any(r.error for r in repairs) else 0
        print_conflicts(await conflicts(store), args.json)
        return 0
    finally:
        await store.aclose()


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "-"


def print_status(views: Sequence[ListView], entries: Sequence[Any], as_json: bool) -> None:
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


def _print_repairs(repairs: Sequence[Repair], as_json: bool, dry_run: bool) -> None:
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
