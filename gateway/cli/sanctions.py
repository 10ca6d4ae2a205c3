"""``credit-gateway sanctions``: the joint-sanction cases and where each one is in the loop."""

from __future__ import annotations

import argparse

import orjson

from gateway.cli.ops import read_config
from gateway.report import out, print_sanctions, report_for
from gateway.store import open_store


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


