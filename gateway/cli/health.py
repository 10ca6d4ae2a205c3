"""``credit-gateway health``: readiness for a probe (gateway.health), quick to start.

It imports only the instance reader, the store and gateway.health (no adapters, mappings or sealing), and the
CLI builds just its parser when it is the command, so a probe answers in a fraction of a second.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from gateway.health import HealthLimits, health_problems
from gateway.instance import load_instance
from gateway.logs import redact
from gateway.store import open_store


def add_parser(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("health", help="exit 0 if the daemon is ready (alive and delivering), 1 with each reason "
                                      "if not")
    config_arg(p)
    p.add_argument("--max-heartbeat-age", type=float, default=60.0, help="seconds (default: 60)")
    p.add_argument("--max-pending-age", type=float, default=0.0, help="seconds; 0 = do not check (default)")
    p.add_argument("--alert-days", type=float, default=30.0,
                   help="fail when a certificate or the working-day calendar ends within this many days (default: 30)")


async def cmd_health(args: argparse.Namespace) -> int:
    instance, url = load_instance(args.config)  # the instance and the store only: nothing else can fail it
    store = await open_store(url)
    try:
        limits = HealthLimits(args.max_heartbeat_age, args.max_pending_age, args.alert_days)
        problems = await health_problems(store, instance, limits)
    finally:
        await store.aclose()
    for p in problems:
        print(redact(f"unhealthy: {p}"), flush=True)
    if not problems:
        print("healthy", flush=True)
    return 1 if problems else 0
