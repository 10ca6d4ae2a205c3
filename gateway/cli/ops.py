"""The implementations behind ``credit-gateway`` sub-commands (parsing lives in :mod:`gateway.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from gateway.adapter import Advising, Auditing, ColumnListing
from gateway.certs import (
    RETIRED,
    UNUSABLE,
    expiry_warnings,
    exposed_files,
    init_dev_pki,
    inventory,
    key_problems,
)
from gateway.cli.remote import AdminClient, client_cert_files, read_token
from gateway.clock import age, china_today
from gateway.config import Config, load_config
from gateway.daemon import Gateway, serve
from gateway.domain.calendar import WorkCalendar
from gateway.domain.subject_keys import KeySecret
from gateway.domain.timeliness import timeliness_report
from gateway.errors import ConfigError, GatewayError, Problem
from gateway.files import write_private
from gateway.instance_lock import store_lock
from gateway.logs import log_stray_output, redact, setup_logging
from gateway.mapping import InboundMapping, OutboundMapping, load_mapping, source_columns
from gateway.operations import (
    cell,
    mask_personal,
    personal_keys,
    personal_names,
    replay_entries,
    status_json,
)
from gateway.records import Operation, Record, from_payload
from gateway.report import out, print_status, print_timeliness, table
from gateway.sealing.evidence import target_evidence, verify_evidence
from gateway.startup import stop_on_sigterm
from gateway.store import Store, open_store

_cell, _age = cell, age


async def _with_store(config: Config) -> Store:
    return await open_store(config.store_url())


def read_config(args: argparse.Namespace) -> Config:
    """The config for a command that only reads (or does not map rows): a mapping file that does not compile is
    left out with a warning, as the running daemon keeps the version it has (gateway.config lenient)."""
    config = load_config(args.config, lenient=True)
    for problem in config.warnings:
        print(redact(f"warning: {problem} (left out of this command)"), file=sys.stderr, flush=True)
    return config


# ---------------------------------------------------------------- check / run

async def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    problems = key_problems(config)
    if args.connect:
        problems += await _check_sources(config)
    if problems:
        raise ConfigError(problems, str(config.path))
    out(f"{config.path}: OK")
    for line in exposed_files(config) + source_warnings(config):
        out(f"  warning  {line}")
    out(f"  store    {redact(config.store.url)}")
    for s in config.sources.values():
        out(f"  source   {s.name} ({s.type}) → {', '.join(s.mappings)} every {s.poll_interval_s:g}s")
    for t in config.targets.values():
        out(f"  target   {t.name} ({t.type}) ← {', '.join(t.mappings)}; personal IDs: {t.personal_ids}")
    if config.inbound is not None:
        for c in config.inbound.channels.values():
            out(f"  inbound  {c.name} ({c.profile}) → {c.dataset}{', full snapshots' if c.snapshots else ''} "
                f"from {'; '.join(c.peer.allowed_signers) or 'TLS'}")
    if config.admin is not None:
        out(f"  admin    {config.admin.settings.host}:{config.admin.settings.port}, "
            f"tokens: {', '.join(f'{t.name} ({t.role})' for t in config.admin.tokens)}")
    return 0


def source_warnings(config: Config) -> list[str]:
    """Risky source settings (the adapters' ``warnings``), and a source that is never audited."""
    lines = [line for s in config.sources.values() if isinstance(s.adapter, Advising) for line in s.adapter.warnings()]
    return lines + [f"sources.{s.name}.audit_interval_s = 0: rows the polls miss are never found (docs/sources.md)"
                    for s in config.sources.values() if s.audit_interval_s == 0 and isinstance(s.adapter, Auditing)]


async def _check_sources(config: Config) -> list[Problem]:
    problems = []
    for src in config.sources.values():
        adapter = src.adapter
        if not isinstance(adapter, ColumnListing):
            continue
        try:
            async with adapter:
                have = set(await adapter.columns())
        except GatewayError as exc:
            problems.append(Problem(f"sources.{src.name}", f"cannot read the source: {exc}"))
            continue
        for mapping in src.mappings.values():
            missing = sorted(source_columns(mapping.path) - have)
            if missing:
                problems.append(Problem(f"sources.{src.name}.mapping",
                                        f"{mapping.path} reads column(s) {', '.join(missing)} the source lacks"))
    return problems


def cmd_run(args: argparse.Namespace) -> int:
    stop_on_sigterm()  # the console script gets here after its imports; python -m gateway before them
    config = load_config(args.config)
    setup_logging(config.daemon.log_level, config.daemon.log_format, config.secrets)
    log_stray_output()
    if not args.until_idle:
        return asyncio.run(serve(config))
    return asyncio.run(_run_until_idle(config, args.timeout))


async def _run_until_idle(config: Config, timeout_s: float) -> int:
    with store_lock(config.store_url()):
        return await _drain(config, timeout_s)


async def _drain(config: Config, timeout_s: float) -> int:
    store = await _with_store(config)
    try:
        async with Gateway(config, store) as gw:
            done = await gw.run_until_idle(timeout_s)
        await print_status(store, WorkCalendar.from_settings(config.calendar),
                           config.sanctions.feedback_due_working_days)
        if not done:
            print(redact(f"run --until-idle: timed out after {timeout_s:g} s; {await _left_over(store)}"),
                  file=sys.stderr)
    finally:
        await store.aclose()
    return 0 if done else 1


async def _left_over(store: Store) -> str:
    """What a timed-out one-shot run left: records still pending per target, with the last error."""
    rows = [r for r in await store.reports.target_status() if r["backlog"]]
    if not rows:
        return "the sources were still being read"
    return "; ".join(f"{r['backlog']} record(s) still pending for target {r['target']}"
                     + (f" (last error: {r['last_error']})" if r["last_error"] else "") for r in rows)


# ---------------------------------------------------------------- status / health

def _admin(args: argparse.Namespace) -> AdminClient | None:
    """The admin API client when ``--admin-url`` (or ``$CG_ADMIN_URL``) is given."""
    url = getattr(args, "admin_url", None) or os.environ.get("CG_ADMIN_URL")
    if not url:
        return None
    client_cert = client_cert_files(getattr(args, "admin_cert", None), getattr(args, "admin_key", None))
    return AdminClient(url, read_token(getattr(args, "token_file", None)), getattr(args, "admin_ca", None),
                       client_cert=client_cert)


async def cmd_status(args: argparse.Namespace) -> int:
    admin = _admin(args)
    if admin is not None:
        status = await admin.get("/status")
        lines = status.pop("lines")
        if args.json:
            out(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())
            return 0
        for line in lines + [f"certificate {w}" for w in status["certificates"]]:
            out(line)
        return 0
    config = read_config(args)
    store = await _with_store(config)
    try:
        if args.json:
            out(orjson.dumps(await status_json(store, config), option=orjson.OPT_INDENT_2).decode())
        else:
            await print_status(store, WorkCalendar.from_settings(config.calendar),
                               config.sanctions.feedback_due_working_days)
            for warning in expiry_warnings(config):
                out(f"certificate {warning}")
    finally:
        await store.aclose()
    return 0




# ---------------------------------------------------------------- timeliness

async def cmd_timeliness(args: argparse.Namespace) -> int:
    config = read_config(args)
    datasets = [args.dataset] if args.dataset else None
    if args.target:
        target = config.targets.get(args.target)
        if target is None:
            raise ConfigError([Problem("--target", f"unknown target {args.target!r}; configured: "
                                                   f"{', '.join(sorted(config.targets)) or 'none'}")], str(config.path))
        datasets = [d for d in target.mappings if d in (datasets or target.mappings)]
    store = await _with_store(config)
    try:
        report = await timeliness_report(store.reports, WorkCalendar.from_settings(config.calendar),
                                         today=args.today or china_today(),
                                         datasets=datasets, target=args.target, at_risk_days=args.at_risk_days)
    finally:
        await store.aclose()
    if args.json:
        out(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print_timeliness(report)
    return 0




# ---------------------------------------------------------------- spool

async def cmd_spool(args: argparse.Namespace) -> int:
    admin = _admin(args)
    if admin is not None:
        return await _remote_spool(admin, args)
    config = read_config(args)
    store = await _with_store(config)
    try:
        return await _spool(store, args, config)
    finally:
        await store.aclose()


async def _spool(store: Store, args: argparse.Namespace, config: Config) -> int:
    cmd = args.spool_command
    if cmd == "list":
        rows = await store.reports.list_batches(args.target, args.state, args.limit)
        table(rows, SPOOL_COLUMNS)
        return 0
    if cmd in ("show", "evidence"):
        batch = await store.reports.show_batch(args.batch)
        if batch is None:
            out(f"no batch {args.batch}")
            return 1
        if cmd == "evidence":
            return _write_evidence(batch, config, Path(args.output))
        _print_batch(batch, args.body)
        return 0
    target = None if args.all else args.target
    if cmd == "retry":
        n = await store.reports.retry_now(args.batch, target)
        out(f"{n} open batch(es) due now")
    else:
        n = await store.reports.replay_dead(args.batch, target)
        out(f"{n} record(s) queued again")
    return 0


def _write_evidence(batch: dict[str, Any], config: Config, path: Path) -> int:
    target = config.targets.get(batch["target"])
    data = target_evidence(batch, target.sealing if target else None)
    write_private(path, data)  # every record of the batch, ID numbers included: 0600
    out(f"evidence for batch {batch['id']} written to {path} ({len(data)} bytes)")
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    if args.certs_command == "init":
        kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
        for directory in init_dev_pki(Path(args.dir), kinds):
            out(f"{directory}: ca.crt, gateway.key/.crt, platform.key/.crt (development only)")
        out("Use them in [targets.NAME.envelope] (key/cert = gateway, peer_cert = platform, trusted_cas = ca.crt)")
        out("and for the sandbox: --key platform.key --cert platform.crt --peer-cert gateway.crt --trusted-ca ca.crt")
        return 0
    config = read_config(args)
    now = dt.datetime.now(dt.UTC)
    rows = [{"where": c.where, "kind": c.kind, "subject": c.subject or c.detail,
             "not after": f"{c.not_after:%Y-%m-%d}" if c.not_after else "-",
             "days left": f"{c.days_left(now):.0f}" if c.not_after else "-",
             "status": c.detail if c.detail.startswith(RETIRED) else c.status(now)}
            for c in inventory(config)]
    table(rows, ["where", "kind", "subject", "not after", "days left", "status"])
    return 1 if any(r["status"] in UNUSABLE for r in rows) else 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check an evidence file; exit 0 only if every check passes."""
    cas = []
    for ca in args.trusted_ca:
        try:
            cas.append(Path(ca).read_bytes())
        except OSError as exc:
            raise ConfigError([Problem("--trusted-ca", f"cannot read {ca}: {exc.strerror}")]) from None
    verdict = verify_evidence(Path(args.file), cas, args.signer)
    out(f"batch {verdict.batch_id}")
    for name, passed, detail in verdict.checks:
        out(f"  {'ok  ' if passed else 'FAIL'} {name}" + (f" ({detail})" if detail else ""))
    out("verified" if verdict.ok else "NOT verified")
    return 0 if verdict.ok else 1


def _print_batch(batch: dict[str, Any], with_body: bool) -> None:
    for key in ("id", "target", "dataset", "state", "record_count", "attempts", "body_sha256", "created_at",
                "completed_at", "last_error"):
        out(f"{key:14} {_cell(batch.get(key))}")
    out("attempts:")
    table(batch["attempt_log"], ["at", "outcome", "duration_ms", "detail"])
    receipt = batch["receipt"]
    out(f"receipt: {receipt['receipt_id']} at {_cell(receipt['received_at'])}" if receipt else "receipt: none")
    states: dict[str, int] = {}
    for rec in batch["records"]:
        states[rec["state"]] = states.get(rec["state"], 0) + 1
    out("records: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    if with_body:
        out(batch["body"])


# ---------------------------------------------------------------- quarantine

async def cmd_quarantine(args: argparse.Namespace) -> int:
    admin = _admin(args)
    if admin is not None:
        return await _remote_quarantine(admin, args)
    # replay maps rows again: it needs every mapping (a broken one is an error); the rest only read
    config = load_config(args.config) if args.quarantine_command == "replay" else read_config(args)
    store = await _with_store(config)
    try:
        return await _quarantine(store, config, args)
    finally:
        await store.aclose()


async def _quarantine(store: Store, config: Config, args: argparse.Namespace) -> int:
    cmd = args.quarantine_command
    if cmd == "list":
        rows = await store.reports.list_quarantine(args.state, args.stage, args.limit)
        table(_quarantine_rows(rows), QUARANTINE_COLUMNS)
        return 0
    if cmd == "show":
        rows = await store.reports.list_quarantine(None, ids=[args.id])
        if not rows:
            out(f"no quarantine entry {args.id}")
            return 1
        shown = mask_personal(rows[0], personal_keys(config))  # as the admin API answers it
        out(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return 0
    entries = await store.reports.list_quarantine("open", limit=1_000_000, ids=[] if args.all else args.ids)
    if cmd == "resolve":
        await store.reports.resolve_quarantine([e["id"] for e in entries])
        out(f"{len(entries)} entr(y/ies) resolved")
        return 0
    return await replay_quarantine(store, config, entries)


# ---------------------------------------------------------------- the same, through the admin API

SPOOL_COLUMNS = ["id", "target", "dataset", "state", "record_count", "attempts", "created_at", "last_error"]
QUARANTINE_COLUMNS = ["id", "stage", "where", "dataset", "key", "hits", "reasons"]


async def _remote_spool(admin: AdminClient, args: argparse.Namespace) -> int:
    cmd = args.spool_command
    if cmd == "list":
        table(await admin.get("/spool", {"target": args.target, "state": args.state, "limit": args.limit}),
              SPOOL_COLUMNS)
        return 0
    if cmd == "show":
        out(orjson.dumps(await admin.get(f"/spool/{args.batch}", {"body": "1" if args.body else None}),
                         option=orjson.OPT_INDENT_2).decode())
        return 0
    if cmd == "evidence":
        raise ConfigError([Problem("--admin-url", "spool evidence reads the local store; run it on the gateway")])
    selection = {"all": True} if args.all else {"target": args.target} if args.target else {"batch": args.batch}
    answer = await admin.post(f"/spool/{cmd}", selection)
    out(f"{answer['batches']} open batch(es) due now" if cmd == "retry" else f"{answer['records']} record(s) "
                                                                             "queued again")
    return 0


async def _remote_quarantine(admin: AdminClient, args: argparse.Namespace) -> int:
    cmd = args.quarantine_command
    if cmd == "list":
        rows = await admin.get("/quarantine", {"state": args.state, "stage": args.stage, "limit": args.limit})
        table(_quarantine_rows(rows), QUARANTINE_COLUMNS)
        return 0
    if cmd == "show":
        out(orjson.dumps(await admin.get(f"/quarantine/{args.id}"), option=orjson.OPT_INDENT_2).decode())
        return 0
    answer = await admin.post(f"/quarantine/{cmd}", {"all": True} if args.all else {"ids": args.ids})
    if cmd == "resolve":
        out(f"{answer['resolved']} entr(y/ies) resolved")
        return 0
    for note in answer["notes"]:
        out(note)
    out(answer["summary"])
    return 0 if not answer["still"] else 1


def _quarantine_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "key": r["record_key"] or r["source_key"], "where": r["target"] or r["source"],
             "reasons": "; ".join(_reason(x) for x in r["reasons"])} for r in rows]


def _reason(r: dict[str, Any]) -> str:
    head = r.get("field") or r.get("code") or ""
    return f"{head}: {r.get('message')}" if head else str(r.get("message"))


async def replay_quarantine(store: Store, config: Config, entries: Sequence[dict[str, Any]]) -> int:
    """Mapping rejects are mapped again with today's mapping; target rejects are sent again."""
    result = await replay_entries(store, config, entries)
    for note in result.notes or []:
        out(note)
    out(result.summary())
    return 0 if not result.still else 1


# ---------------------------------------------------------------- mapping test

def cmd_mapping(args: argparse.Namespace) -> int:
    mapping = load_mapping(args.file)
    rows = read_csv(Path(args.sample), args.encoding)
    today = args.today or china_today()
    # No store here: ID numbers in keys become pseudonyms under a throw-away secret (the form, not the value).
    secret = KeySecret.generate() if mapping.dataset.pseudonymised_key else None
    failed = 0
    for row in rows:
        number = int(row.pop("@line"))
        if isinstance(mapping, InboundMapping):
            failed += _test_inbound(mapping, row, number, today, secret)
        else:
            _test_outbound(mapping, row, number)
    out(f"{len(rows)} row(s), {len(rows) - failed} ok, {failed} with errors")
    if secret is not None and isinstance(mapping, InboundMapping):
        out(f"{mapping.dataset.name} keys carry ID-number pseudonyms made with a throw-away secret here: the form "
            "of the key, not the one the gateway's store gives it")
    return 1 if failed else 0


def _test_inbound(mapping: InboundMapping, row: dict[str, Any], number: int, today: dt.date,
                  secret: KeySecret | None) -> int:
    mapped = mapping.map_row(row, today, "sample", str(number), secret=secret)
    if mapped.record is None:
        for p in mapped.problems:
            out(f"line {number}: {p.path}: {p.message}")
        return 1
    rec = mapped.record
    fields = mask_personal(rec.payload(), personal_names(mapping))  # a passport number too
    out(orjson.dumps({"line": number, "key": rec.key, "operation": rec.operation.value, "fields": fields}).decode())
    return 0


def _test_outbound(mapping: OutboundMapping, row: dict[str, Any], number: int) -> None:
    kinds = {f.name: f.kind for f in mapping.dataset.fields}
    fields = from_payload(kinds, {k: (v.split(";") if kinds.get(k) == "list" else v) for k, v in row.items() if v})
    op = Operation(row.get("@operation") or "upsert")
    record = Record(mapping.dataset.name, row.get("@key", ""), op, fields, version=int(row.get("@version") or 1))
    out(orjson.dumps({"line": number, "record": mask_personal(mapping.map_record(record), personal_names(mapping))}
                     ).decode())


def read_csv(path: Path, encoding: str) -> list[dict[str, Any]]:
    """Rows of a CSV file; an encoding error names the file, line and byte and suggests --encoding."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read: {exc.strerror}")], str(path)) from None
    try:
        text = data.decode("utf-8-sig" if encoding.lower().replace("-", "") == "utf8" else encoding)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        hint = " (try --encoding gbk)" if encoding.lower().startswith("utf") else ""
        raise ConfigError([Problem(f"line {line}", f"not {encoding} at byte {exc.start}{hint}")], str(path)) from None
    except LookupError:
        raise ConfigError([Problem("--encoding", f"unknown encoding {encoding!r}")], str(path)) from None
    reader = csv.DictReader(io.StringIO(text))
    rows = []
    start = 2  # the header is line 1; a quoted cell may span lines, so count from the reader
    for row in reader:
        row["@line"] = start
        rows.append(row)
        start = reader.line_num + 1
    return rows


# ---------------------------------------------------------------- sandbox / demo

def cmd_sandbox(args: argparse.Namespace) -> int:
    from gateway.sandbox.server import config_from_args, run_sandbox

    setup_logging("info", "text")
    run_sandbox(config_from_args(args), getattr(args, "ready_file", None))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(Path(args.dir), args.licences, args.penalties)
