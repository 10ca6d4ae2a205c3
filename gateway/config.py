"""The gateway's configuration: one TOML file, parsed once into an immutable :class:`Config`.

Loading collects every problem (with the file and its TOML path) before raising one ConfigError, so
``credit-gateway check`` shows them all at once. Relative paths are relative to the config file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.adapter import SINK_GROUP, SOURCE_GROUP, AdapterContext, Credentialed, Sink, Source, load_adapter
from gateway.domain.calendar import CalendarSettings, parse_overrides
from gateway.domain.publicity import PublicitySettings, parse_publicity
from gateway.errors import ConfigError, Problem
from gateway.instance import GatewaySettings, StoreSettings
from gateway.instance import read_toml as _read
from gateway.instance import section as _section
from gateway.mapping import InboundMapping, OutboundMapping, load_mapping
from gateway.pipeline.config import (
    CircuitSettings,
    DaemonSettings,
    RetrySettings,
    SourceConfig,
    TargetConfig,
)
from gateway.sealing import get_profile
from gateway.sealing.target import load_sealing
from gateway.settings import parse_settings, resolve_sqlite_url, setting
from gateway.web.config import AdminConfig, InboundConfig, load_admin, load_inbound


@dataclass(frozen=True)
class SanctionsSettings:
    """``[sanctions]``: the joint-sanction (联合奖惩) loop (gateway.domain.sanctions)."""

    feedback_due_working_days: int = setting(10, check="positive",
                                             help="a case with no feedback delivered this many working days after "
                                                  "its receipt is overdue")


@dataclass(frozen=True)
class ListsSettings:
    """``[lists]``: credit lists (domain.lists): drift checks against targets that can read back what they hold."""

    reconcile_interval_s: float = setting(3600.0, help="how often the daemon compares each target with the "
                                                       "ledger and re-sends the difference; 0 = never")
    discard_unknown: bool = setting(True, help="reconciliation removes rows of a list at a target that the "
                                               "gateway never sent")


@dataclass(frozen=True)
class ReportsSettings:
    """``[reports]``: the monthly report for the development-and-reform commission (docs/dashboard.md)."""

    monthly_dir: str = setting("", help="folder the daemon writes last month's report into (monthly-YYYY-MM.xlsx) "
                                        "on the first working day of a month; empty = off")
    check_s: float = setting(3600.0, check="positive", help="how often the daemon checks whether it is due")


@dataclass(frozen=True)
class Config:
    path: Path
    gateway: GatewaySettings
    store: StoreSettings
    daemon: DaemonSettings
    sources: Mapping[str, SourceConfig]
    targets: Mapping[str, TargetConfig]
    secrets: tuple[str, ...] = field(default=(), repr=False)
    calendar: CalendarSettings = field(default_factory=CalendarSettings)
    sanctions: SanctionsSettings = field(default_factory=SanctionsSettings)
    lists: ListsSettings = field(default_factory=ListsSettings)
    inbound: InboundConfig | None = None  # the inbound HTTP endpoint, when [inbound] is configured
    admin: AdminConfig | None = None  # the admin HTTP API, when [admin] is configured
    publicity: PublicitySettings = field(default_factory=PublicitySettings)
    reports: ReportsSettings = field(default_factory=ReportsSettings)
    # load_config(lenient=True): mapping files that did not compile, left out (the sources, targets and channels
    # that name them are kept without them; a channel is left out)
    warnings: tuple[Problem, ...] = ()

    def routes(self) -> dict[str, list[str]]:
        """dataset → targets that receive its new records (``changes_only`` ones get changes only)."""
        out: dict[str, list[str]] = {}
        for target in self.targets.values():
            for dataset in target.mappings:
                if dataset not in target.changes_only:
                    out.setdefault(dataset, []).append(target.name)
        return out

    def store_url(self) -> str:
        return resolve_sqlite_url(self.store.url, self.path.parent)


@dataclass(frozen=True)
class SourceKeys:
    """The keys every ``[sources.NAME]`` table takes; the rest of the table is its adapter's ``Settings``."""

    type: str = setting(help="the source adapter: an entry point in credit_gateway.sources")
    mapping: str = setting(help="inbound mapping file; its dataset decides what the rows become")
    poll_interval_s: float = setting(10.0, check="positive", help="how often the source is polled (a poll drains it)")
    batch_size: int = setting(1000, check="positive", help="rows per intake transaction")
    audit_interval_s: float = setting(3600.0, help="how often the source is audited for rows the polls missed "
                                                   "(committed later than the look-back); 0: never (docs/sources.md)")


@dataclass(frozen=True)
class TargetKeys:
    """The keys every ``[targets.NAME]`` table takes; the rest of the table is its adapter's ``Settings``."""

    type: str = setting(help="the sink adapter: an entry point in credit_gateway.sinks")
    datasets: dict[str, str] = setting(help='{ penalty = "mappings/….toml", … }: the datasets this target receives, '
                                            "each with its outbound mapping")
    batch_size: int = setting(500, check="positive", help="records per batch (one request, one receipt)")
    max_in_flight: int = setting(2, check="positive", help="batches awaiting an answer at once")
    personal_ids: str = setting("mask", choices=("mask", "omit", "full"),
                                help="ID numbers: mask (110105********002X), omit, or full (refused when external)")
    external: bool = setting(True, help="a public or partner route (profile none and personal_ids full are refused)")
    public: bool | None = setting(None, help="a public-facing route: gets the withdrawal when a penalty's publicity "
                                             "ends, and nothing whose publicity is over (default: external)")
    changes_only: list[str] = setting([], help="datasets this target gets only changes (revoke/object/withdraw) of, "
                                               "for records it already holds; no new records")
    omit_fields: list[str] = setting([], help='canonical fields this route may not receive, e.g. ["remarks", '
                                              '"legal_rep_id_no"]; unknown names are refused')
    retry: dict[str, Any] = setting({}, help="[targets.NAME.retry]: backoff, then dead letter (below)")
    circuit: dict[str, Any] = setting({}, help="[targets.NAME.circuit]: the circuit breaker (below)")
    envelope: dict[str, Any] = setting({}, help="[targets.NAME.envelope]: sealing and receipt checks (below)")


SOURCE_KEYS = frozenset(f.name for f in dataclasses.fields(SourceKeys))
TARGET_KEYS = frozenset(f.name for f in dataclasses.fields(TargetKeys))


def load_config(path: str | Path, *, lenient: bool = False) -> Config:
    """Read, check and build everything a config names; raise ConfigError with every problem.

    ``lenient`` (the read-only commands): a mapping file that does not compile is not a problem but a warning
    (``Config.warnings``), as in the running daemon, which keeps the version it has; what names it is kept
    without it. One broken mapping edit must not make ``status`` or ``spool`` fail."""
    path = Path(path).resolve()
    doc = _read(path)
    problems: list[Problem] = []
    unknown = set(doc) - {"gateway", "store", "daemon", "sources", "targets", "calendar", "sanctions", "lists",
                          "inbound", "admin", "publicity", "reports"}
    problems += [Problem(k, "unknown section") for k in sorted(unknown)]
    gw = _section(GatewaySettings, doc, "gateway", problems)
    store = _section(StoreSettings, doc, "store", problems)
    daemon = _section(DaemonSettings, doc, "daemon", problems)
    calendar = _calendar(doc, problems)
    sanctions = _section(SanctionsSettings, doc, "sanctions", problems)
    lists = _section(ListsSettings, doc, "lists", problems)
    reports = _section(ReportsSettings, doc, "reports", problems)
    publicity, found = parse_publicity(doc.get("publicity", {}))
    problems += found
    secrets: list[str] = []
    skipped: list[Problem] = [] if lenient else problems  # where mapping-file problems go
    # A broken [gateway] must not hide the sources' and targets' problems: check those against a stand-in.
    ctx_base = (path.parent, gw or GatewaySettings(department_code="", department_name=""))
    sources = {name: src for name, raw in _tables(doc, "sources", problems).items()
               if (src := _source(name, raw, ctx_base, problems, skipped)) is not None}
    target_tables = _tables(doc, "targets", problems)
    targets = {name: tgt for name, raw in target_tables.items()
               if (tgt := _target(name, raw, ctx_base, problems, secrets, skipped)) is not None}
    if len(targets) == len(target_tables) and not (lenient and skipped):  # else every route could look missing
        problems += _route_problems(sources, targets)
    inbound, found = load_inbound(doc.get("inbound"), path.parent, skipped)
    admin, found_admin = load_admin(doc.get("admin"), path.parent)
    problems += found + found_admin
    adapters = [*(s.adapter for s in sources.values()), *(t.adapter for t in targets.values())]
    secrets = [secret for a in adapters if isinstance(a, Credentialed) for secret in a.secrets]
    secrets += [t.token for t in admin.tokens] if admin else []
    if problems or gw is None or store is None or daemon is None or sanctions is None:
        raise ConfigError(problems, str(path))
    return Config(path, gw, store, daemon, sources, targets, tuple(secrets), calendar=calendar, sanctions=sanctions,
                  lists=lists or ListsSettings(), inbound=inbound, admin=admin, publicity=publicity,
                  reports=reports or ReportsSettings(), warnings=tuple(skipped) if lenient else ())


def _calendar(doc: Mapping[str, Any], problems: list[Problem]) -> CalendarSettings:
    raw = doc.get("calendar", {})
    if not isinstance(raw, dict):
        problems.append(Problem("calendar", "must be a table"))
        return CalendarSettings()
    values, found = parse_overrides(raw, "calendar")
    problems += found
    return CalendarSettings(**values) if not found else CalendarSettings()


def _tables(doc: Mapping[str, Any], name: str, problems: list[Problem]) -> dict[str, dict[str, Any]]:
    raw = doc.get(name, {})
    if not isinstance(raw, dict):
        problems.append(Problem(name, "must be a table of named tables"))
        return {}
    out = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out[key] = value
        else:
            problems.append(Problem(f"{name}.{key}", "must be a table"))
    return out


def _context(name: str, where: str, base: tuple[Path, GatewaySettings],
             common: frozenset[str] = frozenset()) -> AdapterContext:
    return AdapterContext(name, where, base[0], base[1].department_code, base[1].department_name, common)


def _common_int(raw: Mapping[str, Any], key: str, default: int, where: str, problems: list[Problem]) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        problems.append(Problem(f"{where}.{key}", f"expected a positive integer, got {value!r}"))
        return default
    return value


def _mapping(file: Any, where: str, base: Path, kind: type[Any], problems: list[Problem]) -> Any:
    if not isinstance(file, str):
        problems.append(Problem(where, "expected a mapping file path"))
        return None
    try:
        mapping = load_mapping(base / file)
    except ConfigError as exc:
        problems += [Problem(where, f"{exc.source}: {p}") for p in exc.problems]
        return None
    if not isinstance(mapping, kind):
        wanted = "inbound" if kind is InboundMapping else "outbound"
        problems.append(Problem(where, f"{file} is not an {wanted} mapping"))
        return None
    return mapping


def _source(name: str, raw: dict[str, Any], base: tuple[Path, GatewaySettings], problems: list[Problem],
            skipped: list[Problem]) -> SourceConfig | None:
    where = f"sources.{name}"
    before = len(problems)
    mapping = _mapping(raw.get("mapping"), f"{where}.mapping", base[0], InboundMapping, skipped)
    poll = raw.get("poll_interval_s", SourceKeys.poll_interval_s)
    if isinstance(poll, bool) or not isinstance(poll, int | float) or poll <= 0:
        problems.append(Problem(f"{where}.poll_interval_s", f"expected a positive number, got {poll!r}"))
    batch_size = _common_int(raw, "batch_size", SourceKeys.batch_size, where, problems)
    audit = raw.get("audit_interval_s", SourceKeys.audit_interval_s)
    if isinstance(audit, bool) or not isinstance(audit, int | float) or audit < 0:
        problems.append(Problem(f"{where}.audit_interval_s", f"expected a number of seconds (0: never), got {audit!r}"))
    adapter = _adapter(SOURCE_GROUP, Source, raw, where, SOURCE_KEYS, _context(name, where, base, SOURCE_KEYS),
                       problems)
    if len(problems) > before or adapter is None or (mapping is None and skipped is problems):
        return None
    return SourceConfig(name, str(raw["type"]), {mapping.dataset.name: mapping} if mapping else {}, float(poll),
                        batch_size, adapter, audit_interval_s=float(audit))


def _adapter(group: str, role: type[Any], raw: dict[str, Any], where: str, common: frozenset[str],
             ctx: AdapterContext, problems: list[Problem]) -> Any:
    """The adapter ``raw`` names, built from its settings and checked to be a ``role`` (Source or Sink); None
    with the problems found."""
    kind = raw.get("type")
    if not isinstance(kind, str):
        problems.append(Problem(f"{where}.type", "required: the adapter type"))
        return None
    factory, problem = load_adapter(group, kind, where)
    if problem or factory is None:
        problems.append(problem or Problem(where, "adapter missing"))
        return None
    adapter, found = factory.from_settings({k: v for k, v in raw.items() if k not in common}, ctx)
    problems += found
    if adapter is not None and not isinstance(adapter, role):
        problems.append(Problem(f"{where}.type", f"adapter {kind!r} is not a {role.__name__}"))
        return None
    return adapter


def _target(name: str, raw: dict[str, Any], base: tuple[Path, GatewaySettings], problems: list[Problem],
            secrets: list[str], skipped: list[Problem]) -> TargetConfig | None:
    where = f"targets.{name}"
    before = len(problems)
    datasets = raw.get("datasets")
    mappings: dict[str, OutboundMapping] = {}
    if not isinstance(datasets, dict) or not datasets:
        problems.append(Problem(f"{where}.datasets", 'required: a table like { penalty = "mappings/….toml" }'))
    else:
        for ds, file in datasets.items():
            m = _mapping(file, f"{where}.datasets.{ds}", base[0], OutboundMapping, skipped)
            if m is not None and m.dataset.name != ds:
                problems.append(Problem(f"{where}.datasets.{ds}", f"{file} maps dataset {m.dataset.name}, not {ds}"))
            elif m is not None:
                mappings[ds] = m
    personal = raw.get("personal_ids", TargetKeys.personal_ids)
    if personal not in ("mask", "full", "omit"):
        problems.append(Problem(f"{where}.personal_ids", f"expected mask, full or omit, got {personal!r}"))
    external = raw.get("external", True)
    if not isinstance(external, bool):
        problems.append(Problem(f"{where}.external", "expected true or false"))
    if external is True and personal == "full":
        problems.append(Problem(f"{where}.personal_ids", "full ID numbers are not allowed on an external target"))
    for ds, m in mappings.items() if external is True else ():
        if m.dataset.personal_key:
            problems.append(Problem(f"{where}.datasets.{ds}", f"{ds} record keys can hold a natural person's ID "
                                    "number, which masking does not cover: route it to internal targets only "
                                    "(external = false)"))
    omit = _omit_fields(raw.get("omit_fields", []), mappings, where, problems)
    public, changes_only = _publication(raw, external, mappings, where, problems)
    retry = _subtable(RetrySettings, raw, "retry", where, problems)
    circuit = _subtable(CircuitSettings, raw, "circuit", where, problems)
    sealing, found = load_sealing(raw.get("envelope"), f"{where}.envelope", base[0])
    problems += found
    if sealing is not None and external is True and not get_profile(sealing.profile).external_ok:
        problems.append(Problem(f"{where}.envelope.profile", f"profile {sealing.profile!r} sends batches unsigned and "
                                "unencrypted: configure cms, sm or xmldsig for an external target, or set "
                                "external = false for an internal link"))
    batch_size = _common_int(raw, "batch_size", TargetKeys.batch_size, where, problems)
    in_flight = _common_int(raw, "max_in_flight", TargetKeys.max_in_flight, where, problems)
    ctx = dataclasses.replace(_context(name, where, base, TARGET_KEYS),
                              fields={ds: m.target_fields for ds, m in mappings.items()})
    adapter = _adapter(SINK_GROUP, Sink, raw, where, TARGET_KEYS, ctx, problems)
    if len(problems) > before or retry is None or circuit is None or sealing is None or adapter is None:
        return None
    return TargetConfig(name, str(raw["type"]), mappings, batch_size, in_flight, str(personal), bool(external),
                        retry, circuit, adapter, sealing, omit, public, changes_only)


def _publication(raw: Mapping[str, Any], external: Any, mappings: Mapping[str, OutboundMapping], where: str,
                 problems: list[Problem]) -> tuple[bool, frozenset[str]]:
    """``public`` (default: ``external``) and ``changes_only`` (datasets of the target's own ``datasets``)."""
    public = raw.get("public", external)
    if not isinstance(public, bool):
        problems.append(Problem(f"{where}.public", "expected true or false"))
    only = raw.get("changes_only", [])
    if not isinstance(only, list) or not all(isinstance(v, str) for v in only):
        problems.append(Problem(f"{where}.changes_only", "expected a list of dataset names"))
        return bool(public), frozenset()
    for i, name in enumerate(only):
        if mappings and name not in mappings:
            problems.append(Problem(f"{where}.changes_only[{i}]", f"{name!r} is not one of the target's datasets"))
    return public is True, frozenset(only)


def _omit_fields(raw: Any, mappings: Mapping[str, OutboundMapping], where: str,
                 problems: list[Problem]) -> frozenset[str]:
    """The route's field policy: canonical fields never sent to this target (e.g. remarks, legal_rep_id_no)."""
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        problems.append(Problem(f"{where}.omit_fields", "expected a list of canonical field names"))
        return frozenset()
    known = {f.name for m in mappings.values() for f in m.dataset.fields}
    for i, name in enumerate(raw):
        if known and name not in known:
            problems.append(Problem(f"{where}.omit_fields[{i}]", f"{name!r} is not a field of the target's datasets"))
    return frozenset(raw)


def _subtable(cls: type[Any], raw: Mapping[str, Any], key: str, where: str, problems: list[Problem]) -> Any:
    table = raw.get(key, {})
    if not isinstance(table, dict):
        problems.append(Problem(f"{where}.{key}", f"must be a table ([{where}.{key}]), got {table!r}"))
        return None
    value, found = parse_settings(cls, table, f"{where}.{key}")
    problems += found
    return value


def _route_problems(sources: Mapping[str, SourceConfig], targets: Mapping[str, TargetConfig]) -> list[Problem]:
    routed = {ds for t in targets.values() for ds in t.mappings}
    return [Problem(f"sources.{s.name}.mapping", f"dataset {ds} is read but no target receives it")
            for s in sources.values() for ds in s.mappings if ds not in routed]
