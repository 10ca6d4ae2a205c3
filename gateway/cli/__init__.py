"""``credit-gateway``: the command line for ops.

Every command that reads the store takes ``--config`` (default ``$CG_CONFIG`` or ``./credit-gateway.toml``).
Exit codes: 0 ok, 1 the thing checked is unhealthy or not found, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.cli import health as cli_health
from gateway.errors import ConfigError, GatewayError
from gateway.logs import redact
from gateway.startup import default_sigterm

DEFAULT_CONFIG = "credit-gateway.toml"


def _config_arg(p: argparse.ArgumentParser, top: bool = False) -> None:
    """``-c FILE`` before or after the sub-command; the sub-command's only overrides when given."""
    default = os.environ.get("CG_CONFIG", DEFAULT_CONFIG) if top else argparse.SUPPRESS
    p.add_argument("--config", "-c", default=default,
                   help="configuration file (default: $CG_CONFIG or ./credit-gateway.toml)")


def _admin_args(p: argparse.ArgumentParser) -> None:
    """``--admin-url``: ask a running gateway's admin API instead of opening the store."""
    p.add_argument("--admin-url", default=argparse.SUPPRESS,
                   help="use the admin API at this URL (default: $CG_ADMIN_URL; none = the local store)")
    p.add_argument("--token-file", default=argparse.SUPPRESS, help="admin token file (default: $CG_ADMIN_TOKEN)")
    p.add_argument("--admin-ca", default=argparse.SUPPRESS, help="CA certificate to trust for an https admin URL")
    p.add_argument("--admin-cert", default=argparse.SUPPRESS,
                   help="our client certificate for an admin API with mutual TLS (default: $CG_ADMIN_CERT)")
    p.add_argument("--admin-key", default=argparse.SUPPRESS,
                   help="the client certificate's private key (default: $CG_ADMIN_KEY)")


def _top_parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(prog="credit-gateway", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--version", action="version", version=f"credit-gateway {_version()}",
                        help="print the installed version and exit")
    _config_arg(parser, top=True)
    return parser, parser.add_subparsers(dest="command", required=True)


def _version() -> str:
    try:
        return importlib.metadata.version("credit-gateway")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _health_parser() -> argparse.ArgumentParser:
    """The parser of `health` alone: a probe's run imports nothing else (gateway.cli.health)."""
    parser, sub = _top_parser()
    cli_health.add_parser(sub, _config_arg)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from gateway.cli import adapters as cli_adapters
    from gateway.cli import datasets as cli_datasets
    from gateway.cli import inbound as cli_inbound
    from gateway.cli import lists as cli_lists
    from gateway.cli import monthly as cli_monthly
    from gateway.cli import rules as cli_rules
    from gateway.cli import sources as cli_sources

    parser, sub = _top_parser()

    p = sub.add_parser("check", help="check the configuration and mappings; list every problem")
    _config_arg(p)
    p.add_argument("--connect", action="store_true", help="also connect to sources and check their columns")

    p = sub.add_parser("run", help="run the daemon (stop with SIGTERM or SIGINT)")
    _config_arg(p)
    p.add_argument("--until-idle", action="store_true", help="drain sources, deliver everything, then exit")
    p.add_argument("--timeout", type=float, default=3600.0, help="with --until-idle: give up after this (s)")

    p = sub.add_parser("status", help="backlog per target, oldest pending age, last success, dead letters")
    _config_arg(p)
    _admin_args(p)
    p.add_argument("--json", action="store_true")

    cli_health.add_parser(sub, _config_arg)

    p = sub.add_parser("certs", help="credentials: make a development PKI, list what the config uses")
    csub = p.add_subparsers(dest="certs_command", required=True)
    ci = csub.add_parser("init", help="development CA, gateway and sandbox-peer keys/certificates per key type")
    ci.add_argument("--dir", default="certs", help="where to write them (default: certs/)")
    ci.add_argument("--kinds", default="rsa,ec,sm2", help="comma-separated key types: rsa, ec, sm2")
    cl = csub.add_parser("list", help="every key, certificate and token the config uses, with expiry")
    _config_arg(cl)

    p = sub.add_parser("verify", help="check an evidence file offline: digests, results, receipt signature")
    p.add_argument("file")
    p.add_argument("--trusted-ca", action="append", default=[], help="CA certificate (PEM) to check the signature")
    p.add_argument("--signer", default="", help="expected signer subject, e.g. 'CN=platform'")

    p = sub.add_parser("timeliness", help="on-time, late and at-risk records (due 7 working days after decision)")
    _config_arg(p)
    p.add_argument("--dataset", help="only this dataset (license, penalty)")
    p.add_argument("--target", help="count deliveries to this target only (default: the first to any target)")
    p.add_argument("--at-risk-days", type=int, default=2, help="undelivered and due within this many working days")
    p.add_argument("--today", type=dt.date.fromisoformat, help="report as of this date (default: today in China)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("sanctions", help="joint-sanction cases: received, pushed, feedback collected and delivered")
    _config_arg(p)
    p.add_argument("--state", choices=["open", "answered", "overdue", "revoked", "no_calendar"])
    p.add_argument("--today", type=dt.date.fromisoformat, help="report as of this date (default: today in China)")
    p.add_argument("--json", action="store_true")

    _spool_parser(sub)
    _quarantine_parser(sub)
    cli_lists.add_parser(sub, _config_arg)
    cli_inbound.add_parser(sub, _config_arg)
    cli_rules.add_parsers(sub, _config_arg)
    cli_adapters.add_parser(sub)
    cli_datasets.add_parser(sub, _config_arg)
    cli_monthly.add_parsers(sub, _config_arg)
    cli_sources.add_parser(sub, _config_arg)

    p = sub.add_parser("mapping", help="try a mapping file on sample rows")
    msub = p.add_subparsers(dest="mapping_command", required=True)
    t = msub.add_parser("test", help="map the rows of a CSV file and print the result or the errors per row")
    t.add_argument("file")
    t.add_argument("--sample", required=True, help="CSV file with a header row")
    t.add_argument("--encoding", default="utf-8", help="CSV encoding (utf-8, gbk, gb18030)")
    t.add_argument("--today", type=dt.date.fromisoformat, help="validate as of this date (YYYY-MM-DD)")

    p = sub.add_parser("sandbox", help="run the built-in credit-platform sandbox")
    from gateway.sandbox.server import build_arg_parser

    build_arg_parser(p)

    p = sub.add_parser("demo", help="run the end-to-end demo on a sample department database")
    p.add_argument("--dir", default="demo-run", help="working directory for the demo (recreated)")
    p.add_argument("--licences", type=int, default=1500)
    p.add_argument("--penalties", type=int, default=1500)
    return parser


def _remote_leaf(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A spool or quarantine command that takes ``-c`` and the admin flags after its name too
    (``quarantine list --admin-url URL``), as well as before it (``quarantine --admin-url URL list``)."""
    p: argparse.ArgumentParser = sub.add_parser(name, **kwargs)
    _config_arg(p)
    _admin_args(p)
    return p


def _spool_parser(sub: Any) -> None:
    p = sub.add_parser("spool", help="batches in the spool: list, show, retry, replay dead letters")
    _config_arg(p)
    _admin_args(p)
    s = p.add_subparsers(dest="spool_command", required=True)
    ls = _remote_leaf(s, "list")
    ls.add_argument("--target")
    ls.add_argument("--state", choices=["open", "done", "dead", "replayed"])
    ls.add_argument("--limit", type=int, default=50)
    show = _remote_leaf(s, "show")
    show.add_argument("batch")
    show.add_argument("--body", action="store_true", help="print the request body too")
    ev = _remote_leaf(s, "evidence", help="write a batch's evidence (what was sent, the signed receipt) to a file")
    ev.add_argument("batch")
    ev.add_argument("-o", "--output", required=True, help="the evidence file to write (a ZIP archive)")
    for name, text in (("retry", "make open batches due now"), ("replay", "queue dead-lettered records again")):
        r = _remote_leaf(s, name, help=text)
        g = r.add_mutually_exclusive_group(required=True)
        g.add_argument("batch", nargs="?")
        g.add_argument("--target")
        g.add_argument("--all", action="store_true")


def _quarantine_parser(sub: Any) -> None:
    p = sub.add_parser("quarantine", help="rejected rows with reasons: list, show, replay, resolve")
    _config_arg(p)
    _admin_args(p)
    s = p.add_subparsers(dest="quarantine_command", required=True)
    ls = _remote_leaf(s, "list")
    ls.add_argument("--stage", choices=["mapping", "target"])
    ls.add_argument("--state", default="open", choices=["open", "resolved"])
    ls.add_argument("--limit", type=int, default=100)
    show = _remote_leaf(s, "show")
    show.add_argument("id", type=int)
    for name, text in (("replay", "map again with the current mapping (or resend to the target)"),
                       ("resolve", "close entries without replaying them")):
        r = _remote_leaf(s, name, help=text)
        g = r.add_mutually_exclusive_group(required=True)
        g.add_argument("ids", nargs="*", type=int, default=[])
        g.add_argument("--all", action="store_true")


# command → (module of gateway.cli, function), imported when the command runs: `health` imports little
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("ops", "cmd_check"),
    "run": ("ops", "cmd_run"),
    "status": ("ops", "cmd_status"),
    "health": ("health", "cmd_health"),
    "timeliness": ("ops", "cmd_timeliness"),
    "sanctions": ("sanctions", "cmd_sanctions"),
    "verify": ("ops", "cmd_verify"),
    "certs": ("ops", "cmd_certs"),
    "spool": ("ops", "cmd_spool"),
    "quarantine": ("ops", "cmd_quarantine"),
    "records": ("rules", "cmd_records"),
    "publicity": ("rules", "cmd_publicity"),
    "mapping": ("ops", "cmd_mapping"),
    "sandbox": ("ops", "cmd_sandbox"),
    "demo": ("ops", "cmd_demo"),
    "lists": ("lists", "cmd_lists"),
    "inbound": ("inbound", "cmd_inbound"),
    "adapters": ("adapters", "cmd_adapters"),
    "datasets": ("datasets", "cmd_datasets"),
    "report": ("monthly", "cmd_report"),
    "dashboard": ("monthly", "cmd_dashboard"),
    "sources": ("sources", "cmd_sources"),
}


def command(name: str) -> Callable[[argparse.Namespace], Any]:
    module, function = COMMANDS[name]
    found: Callable[[argparse.Namespace], Any] = getattr(importlib.import_module(f"gateway.cli.{module}"), function)
    return found


def command_words(argv: Sequence[str]) -> list[str]:
    """The command words of ``argv`` (the command, its sub-command, …), without the options and ``-c FILE``."""
    found, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in ("-c", "--config"):
            skip = True
        elif not word.startswith("-"):
            found.append(word)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = _health_parser() if command_words(words)[:1] == ["health"] else build_parser()
    args = parser.parse_args(words)
    if args.command != "run":
        default_sigterm()  # only the daemon treats a SIGTERM during its start-up as a clean stop
    try:
        result = command(args.command)(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except ConfigError as exc:
        print(redact(f"configuration error: {exc}"), file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(redact(f"error: {exc}"), file=sys.stderr)  # e.g. a store URL with its password
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `credit-gateway status | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def config_path(args: argparse.Namespace) -> Path:
    return Path(args.config)


if __name__ == "__main__":
    sys.exit(main())
