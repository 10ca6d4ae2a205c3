"""Publicity periods of penalty records: the rules, the dates they give, and the repair check.

国家发展改革委令第58号 (《失信行为纠正后的信用信息修复管理办法（试行）》, in force 2023-05-01; domain.md §1.5):
a penalty record is published for at least 3 months and at most 3 years from its decision date; penalties in
特种设备, 安全生产 and 消防 for at least 1 year; when a decision has several penalty types, or matches several
rules, the longest period applies. A repair (信用修复) may end publication early, but only once the minimum
period is over; after the maximum period the record stops being published by itself.

The rules are data, in ``[publicity]`` of the config (``[[publicity.rules]]``; these defaults when none are
given). A rule matches a canonical field by ``equals`` or ``contains`` (any of several strings; for a list
field such as ``penalty_types``, any item), or every record of its dataset when it names no field, so ops can
write "特种设备 in the domain or the legal basis" without code. :func:`period_of` takes the longest minimum
and the longest maximum of the rules that match; the maximum end date is what goes out as 公示截止期
(``publicity_end`` → ``CF_GSJZQ``). Periods are counted from the decision date: the period of 3 months of a
decision dated 2026-01-31 ends 2026-04-30 (the same day number, or the month's last day), and a record is
due for withdrawal on its end date.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.domain.datasets import REPAIR, get_dataset
from gateway.errors import Problem
from gateway.settings import parse_settings, setting

PUBLISHED = ("upsert", "object")  # the states in which a record is shown to the public

_UNITS = {"day": "day", "days": "day", "天": "day", "日": "day", "month": "month", "months": "month",
          "个月": "month", "月": "month", "year": "year", "years": "year", "年": "year"}
_DURATION = re.compile(r"\s*(\d+)\s*([a-z]+|天|日|个月|月|年)\s*")


@dataclass(frozen=True, slots=True)
class Duration:
    """A period of whole days, months or years."""

    amount: int
    unit: str  # day | month | year

    def after(self, start: dt.date) -> dt.date:
        """The date the period ends when it starts on ``start`` (a month end is kept within its month)."""
        if self.unit == "day":
            return start + dt.timedelta(days=self.amount)
        months = start.month - 1 + self.amount * (12 if self.unit == "year" else 1)
        year, month = start.year + months // 12, months % 12 + 1
        return dt.date(year, month, min(start.day, calendar.monthrange(year, month)[1]))

    def __str__(self) -> str:
        return f"{self.amount} {self.unit}{'' if self.amount == 1 else 's'}"


def parse_duration(text: Any, where: str) -> tuple[Duration | None, Problem | None]:
    """ "3 months", "1 year", "90 days" (or 3个月, 1年, 90天)."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    unit = _UNITS.get(match.group(2)) if match else None
    if match is None or unit is None or int(match.group(1)) <= 0:
        return None, Problem(where, f'expected a period like "3 months", "1 year" or "90 days", got {text!r}')
    return Duration(int(match.group(1)), unit), None


@dataclass(frozen=True, slots=True)
class Rule:
    """One publicity rule: which records it applies to, and their minimum and maximum periods."""

    name: str
    dataset: str = "penalty"
    field: str = ""  # "" = every record of the dataset
    equals: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()
    min: Duration | None = None
    max: Duration | None = None

    def matches(self, payload: Mapping[str, Any]) -> bool:
        if not self.field:
            return True
        value = payload.get(self.field)
        if value is None:
            return False
        if isinstance(value, list):
            return any(self._matches_text(str(item)) for item in value)
        return self._matches_text(value if value.__class__ is str else str(value))

    def _matches_text(self, text: str) -> bool:
        if text in self.equals:
            return True
        for part in self.contains:  # noqa: SIM110 - a loop, not any(): this runs for every record sent
            if part in text:
                return True
        return False


_BASIS_58 = "国家发展改革委令第58号"
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(f"行政处罚 ({_BASIS_58})", min=Duration(3, "month"), max=Duration(3, "year")),
    Rule(f"特种设备/安全生产/消防 领域 ({_BASIS_58})", field="domain", contains=("特种设备", "安全生产", "消防"),
         min=Duration(1, "year"), max=Duration(3, "year")),
    Rule(f"特种设备/安全生产/消防 处罚依据 ({_BASIS_58})", field="legal_basis",
         contains=("特种设备安全法", "安全生产法", "消防法"), min=Duration(1, "year"), max=Duration(3, "year")),
)


@dataclass(frozen=True)
class PublicityKeys:
    """The scalar keys of ``[publicity]`` (the rules are ``[[publicity.rules]]``, parsed below)."""

    enabled: bool = setting(True, help="apply the publication rules (repair check, 公示截止期, automatic withdrawal)")
    check_s: float = setting(3600.0, check="positive", help="how often the daemon looks for expired records")
    set_publicity_end: bool = setting(True, help="send the maximum end date as 公示截止期 (publicity_end)")
    repair_reasons: tuple[str, ...] = setting((REPAIR,), help="withdraw_reason values that are a repair")


@dataclass(frozen=True)
class PublicitySettings:
    """``[publicity]``: the rules and the automatic withdrawal job."""

    enabled: bool = True
    check_s: float = 3600.0
    set_publicity_end: bool = True
    repair_reasons: tuple[str, ...] = (REPAIR,)
    rules: tuple[Rule, ...] = DEFAULT_RULES
    datasets: frozenset[str] = field(init=False)
    _ends: dict[tuple[Any, ...], dt.date | None] = field(init=False, repr=False, compare=False)
    _by_dataset: dict[str, tuple[tuple[int, Rule], ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "datasets", frozenset(r.dataset for r in self.rules))
        object.__setattr__(self, "_ends", {})
        object.__setattr__(self, "_by_dataset", {ds: tuple((i, r) for i, r in enumerate(self.rules) if r.dataset == ds)
                                                 for ds in self.datasets})

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (for a worker process) without what it remembers: the settings, not the cache."""
        return (PublicitySettings, (self.enabled, self.check_s, self.set_publicity_end, self.repair_reasons,
                                    self.rules))

    def max_end(self, dataset: str, payload: Mapping[str, Any]) -> dt.date | None:
        """The maximum end of a record, remembered by its decision date and the rules it matches (records
        repeat them: a few rules, a few thousand decision dates), so sending a record costs a few substring
        tests and a dictionary look-up."""
        rules = self._by_dataset.get(dataset, ())
        matched = tuple(i for i, rule in rules if rule.matches(payload)) if rules else ()
        key = (dataset, payload.get("decision_date"), matched)
        if key not in self._ends:
            if len(self._ends) >= 100_000:
                self._ends.clear()
            self._ends[key] = period_of([self.rules[i] for i in matched], dataset, payload).max_end
        return self._ends[key]


def parse_publicity(raw: Any, where: str = "publicity") -> tuple[PublicitySettings, list[Problem]]:
    """``[publicity]`` with every problem named by its TOML path (the defaults when the table is absent)."""
    if not isinstance(raw, dict):
        return PublicitySettings(), [Problem(where, "must be a table")]
    scalars, problems = parse_settings(PublicityKeys, {k: v for k, v in raw.items() if k != "rules"}, where,
                                       also_known=frozenset({"rules"}))
    rules = DEFAULT_RULES
    if "rules" in raw:
        rules = _parse_rules(raw["rules"], f"{where}.rules", problems)
    if problems or scalars is None:
        return PublicitySettings(), problems
    return PublicitySettings(scalars.enabled, scalars.check_s, scalars.set_publicity_end,
                             tuple(scalars.repair_reasons), rules), []


_RULE_KEYS = frozenset({"name", "dataset", "field", "equals", "contains", "min", "max"})


def _parse_rules(raw: Any, where: str, problems: list[Problem]) -> tuple[Rule, ...]:
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        problems.append(Problem(where, "expected [[publicity.rules]] tables"))
        return ()
    return tuple(rule for i, item in enumerate(raw) if (rule := _parse_rule(item, f"{where}[{i}]", problems)))


def _parse_rule(raw: dict[str, Any], where: str, problems: list[Problem]) -> Rule | None:
    before = len(problems)
    problems += [Problem(f"{where}.{k}", f"unknown key; known: {', '.join(sorted(_RULE_KEYS))}")
                 for k in sorted(set(raw) - _RULE_KEYS)]
    name, dataset, name_field = raw.get("name"), raw.get("dataset", "penalty"), raw.get("field", "")
    if not isinstance(name, str) or not name.strip():
        problems.append(Problem(f"{where}.name", "required: a name ops and the DRC recognise (shown in reasons)"))
    fields = _dataset_fields(dataset, f"{where}.dataset", problems)
    if not isinstance(name_field, str) or (name_field and fields and name_field not in fields):
        problems.append(Problem(f"{where}.field", f"not a field of dataset {dataset}: {name_field!r}"))
    equals, contains = _strings(raw, "equals", where, problems), _strings(raw, "contains", where, problems)
    if name_field and not (equals or contains):
        problems.append(Problem(where, "a rule with a field needs equals or contains"))
    if not name_field and (equals or contains):
        problems.append(Problem(f"{where}.field", "equals/contains need the field they apply to"))
    low, high = _period(raw, "min", where, problems), _period(raw, "max", where, problems)
    if low is None and high is None and "min" not in raw and "max" not in raw:
        problems.append(Problem(where, "a rule needs min or max (or both)"))
    if len(problems) > before:
        return None
    return Rule(str(name), str(dataset), str(name_field), equals, contains, low, high)


def _dataset_fields(dataset: Any, where: str, problems: list[Problem]) -> set[str]:
    try:
        return {f.name for f in get_dataset(str(dataset)).fields}
    except KeyError as exc:
        problems.append(Problem(where, str(exc.args[0])))
        return set()


def _strings(raw: dict[str, Any], key: str, where: str, problems: list[Problem]) -> tuple[str, ...]:
    value = raw.get(key, [])
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(Problem(f"{where}.{key}", "expected a string or a list of non-empty strings"))
        return ()
    return tuple(value)


def _period(raw: dict[str, Any], key: str, where: str, problems: list[Problem]) -> Duration | None:
    if key not in raw:
        return None
    value, problem = parse_duration(raw[key], f"{where}.{key}")
    if problem:
        problems.append(problem)
    return value


# ---------------------------------------------------------------- the dates of one record

@dataclass(frozen=True, slots=True)
class Period:
    """A record's publicity period: the decision date, and when the minimum and the maximum end."""

    decision: dt.date | None
    min_end: dt.date | None = None
    min_rule: str = ""
    max_end: dt.date | None = None
    max_rule: str = ""

    def explain_min(self) -> str:
        return f"{self.min_rule}: minimum until {self.min_end}" if self.min_end else "no minimum period"


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def period_of(rules: Sequence[Rule], dataset: str, payload: Mapping[str, Any]) -> Period:
    """The longest minimum and the longest maximum of the rules that match (a maximum is never shorter
    than the minimum). ``payload``: canonical values, dates as ``date`` or ISO strings."""
    decision = _date(payload.get("decision_date"))
    if decision is None:
        return Period(None)
    low: tuple[dt.date, str] | None = None
    high: tuple[dt.date, str] | None = None
    for rule in rules:
        if rule.dataset != dataset or not rule.matches(payload):
            continue
        if rule.min is not None and (low is None or rule.min.after(decision) > low[0]):
            low = (rule.min.after(decision), f"{rule.name}, {rule.min}")
        if rule.max is not None and (high is None or rule.max.after(decision) > high[0]):
            high = (rule.max.after(decision), f"{rule.name}, {rule.max}")
    if low is not None and high is not None and high[0] < low[0]:
        high = low
    return Period(decision, *(low or (None, "")), *(high or (None, "")))


def stamped(settings: PublicitySettings, dataset: str, payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The payload with its maximum end date as 公示截止期 (``publicity_end``), as targets receive it."""
    if not settings.set_publicity_end or dataset not in settings.datasets:
        return payload
    end = settings.max_end(dataset, payload)
    if end is None or payload.get("publicity_end") == end.isoformat():
        return payload
    return {**payload, "publicity_end": end.isoformat()}


def early_repair(settings: PublicitySettings, dataset: str, payload: Mapping[str, Any],
                 today: dt.date) -> Problem | None:
    """Why a repair (a withdraw whose reason is a repair) is refused ``today``, or None when it may go."""
    reason = payload.get("withdraw_reason")
    if reason not in settings.repair_reasons:
        return None
    period = period_of(settings.rules, dataset, payload)
    if period.min_end is None or today >= period.min_end:
        return None
    return Problem("withdraw_reason", f"{reason} refused before the minimum publicity period ends: rule "
                                      f"'{period.min_rule}' from the decision date {period.decision}; the minimum "
                                      f"period ends {period.min_end}; the published version stays in force")
