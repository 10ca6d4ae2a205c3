"""``credit-gateway sources audit``: compare sources with the ledger now and take in the rows the polls missed."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

import orjson

from gateway.adapter import Auditing
from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.errors import ConfigError, Problem
from gateway.pipeline.audit import audit_source
from gateway.report import out, table
from gateway.store import open_store
from gateway.store.audits import AuditResult


def add_parser(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("sources", help="sources: audit them for rows the polls missed")
    config_arg(p)
    s = p.add_subparsers(dest="sources_command", required=True)
    a = s.add_parser("audit", help="compare each source with the ledger by key range; take in what differs")
    a.add_argument("--source", help="only this source")
    a.add_argument("--json", action="store_true")


async def cmd_sources(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # the audit maps and queues what it recovers: it needs every mapping
    names = [args.source] if args.source else [n for n, s in config.sources.items() if isinstance(s.adapter, Auditing)]
    if args.source and args.source not in config.sources:
        raise ConfigError([Problem("--source", f"no source {args.source!r}; sources: {', '.join(config.sources)}")],
                          str(args.config))
    store = await open_store(config.store_url())
    try:
        async with Gateway(config, store) as gw:
            results = [await audit_source(gw.intakes[name]) for name in names]
    finally:
        await store.aclose()
    _print(results, args.json)
    return 0


def _print(results: list[AuditResult], as_json: bool) -> None:
    if as_json:
        out(orjson.dumps([dataclasses.asdict(r) for r in results], option=orjson.OPT_INDENT_2).decode())
        return
    table([{"source": r.source, "rows": r.rows, "ranges": r.ranges, "differing": r.differing, "re-read": r.reread,
            "recovered": r.recovered, "s": r.duration_s} for r in results],
          ["source", "rows", "ranges", "differing", "re-read", "recovered", "s"])
