"""``credit-gateway adapters``: the source and sink adapters installed (entry points ``credit_gateway.sources``
and ``credit_gateway.sinks``), ours and third parties' alike; ``adapters describe NAME`` prints an adapter's
settings (name, default, help) from its ``Settings`` dataclass, as a config's ``[sources.X]`` or
``[targets.X]`` table takes them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from gateway.adapter import SINK_GROUP, SOURCE_GROUP, installed, load_adapter
from gateway.report import out, table
from gateway.settings import describe

ROLES = {"source": SOURCE_GROUP, "sink": SINK_GROUP}


def add_parser(sub: Any) -> None:
    """The ``adapters`` sub-command (registered by :mod:`gateway.cli`); it reads no configuration."""
    p = sub.add_parser("adapters", help="installed source and sink adapters; `describe NAME` prints its settings")
    s = p.add_subparsers(dest="adapters_command")
    s.add_parser("list", help="every installed adapter with its role and entry point (the default)")
    d = s.add_parser("describe", help="an adapter's settings: name, default, help")
    d.add_argument("name")
    d.add_argument("--role", choices=sorted(ROLES), help="only the source or the sink of that name")


def cmd_adapters(args: argparse.Namespace) -> int:
    if getattr(args, "adapters_command", None) == "describe":
        return describe_adapter(args.name, args.role)
    table([{"role": role, "type": name, "entry point": ep.value}
           for role, group in ROLES.items() for name, ep in sorted(installed(group).items())],
          ["role", "type", "entry point"])
    return 0


def describe_adapter(name: str, role: str | None = None) -> int:
    """Print the settings of every adapter named ``name`` (a source and a sink may share it); 1 if none."""
    roles = [r for r in ROLES if role in (None, r) and name in installed(ROLES[r])]
    if not roles:
        known = sorted({n for r in ROLES if role in (None, r) for n in installed(ROLES[r])})
        print(f"unknown adapter {name!r}; installed: {', '.join(known) or 'none'}", file=sys.stderr)
        return 1
    for i, r in enumerate(roles):
        out(("\n" if i else "") + f"{r} {name} ({installed(ROLES[r])[name].value})")
        factory, problem = load_adapter(ROLES[r], name, f"{r}s.{name}")
        settings = getattr(factory, "Settings", None)
        if problem is not None or not dataclasses.is_dataclass(settings):
            out(f"  {problem.message if problem else 'declares no Settings dataclass'}")
            continue
        assert isinstance(settings, type)
        table([{"setting": d.name, "type": d.type, "default": d.default, "help": d.help} for d in describe(settings)],
              ["setting", "type", "default", "help"])
    return 0
