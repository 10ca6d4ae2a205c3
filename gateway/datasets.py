"""Canonical dataset definitions and their validation rules.

``license`` (行政许可) and ``penalty`` (行政处罚) follow the ≈2019 双公示 standard (domain.md §1.2–1.3):
every standard field has a canonical name here, its Chinese label and its standard identifier, so the
outbound mapping to ``XK_*``/``CF_*`` names is a plain rename. Validation is compiled once per dataset
into a list of small checkers; :func:`validate` runs them and returns every problem, not just the first.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from gateway.errors import Problem
from gateway.identifiers import check_resident_id, check_uscc, is_placeholder
from gateway.records import FieldValue

ORGANISATION = "法人及非法人组织"
NATURAL_PERSON = "自然人"
INDIVIDUAL_BUSINESS = "个体工商户"
SUBJECT_CATEGORIES = (ORGANISATION, NATURAL_PERSON, INDIVIDUAL_BUSINESS)
ID_TYPES = ("身份证", "护照号", "港澳居民来往内地通行证", "台湾居民来往大陆通行证", "外国人永久居留身份证",
            "港澳台居民居住证")
# Document types whose numbers carry the GB 11643 check character.
CHECKED_ID_TYPES = frozenset({"身份证", "外国人永久居留身份证", "港澳台居民居住证"})
LICENSE_CATEGORIES = ("普通", "特许", "认可", "核准", "登记", "其他")
# 行政处罚法 (2021) 第九条; "其他" may carry a detail as "其他-…".
PENALTY_TYPES = ("警告", "通报批评", "罚款", "没收违法所得", "没收非法财物", "暂扣许可证件", "降低资质等级",
                 "吊销许可证件", "限制开展生产经营活动", "责令停产停业", "责令关闭", "限制从业", "行政拘留", "其他")
SEVERITIES = ("一般", "较重", "严重")
USAGE_SCOPES = ("公示", "政府内部共享", "授权查询")
# Why a ``withdraw`` ends publication (gateway.publicity): a repair is checked against the minimum period;
# 公示期满 is what the gateway itself sends when the maximum period is over. "其他-…" may carry a detail.
REPAIR = "信用修复"
EXPIRED = "公示期满"
WITHDRAW_REASONS = (REPAIR, EXPIRED, "其他")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One canonical field: its type, label, standard identifier and static rules."""

    name: str
    label: str
    kind: str = "text"  # text | date | decimal | list | code
    required: bool = False
    max_len: int = 0
    codes: tuple[str, ...] = ()
    check: str = ""  # uscc | resident_id
    personal_id: bool = False  # masked on routes that do not allow personal ID numbers


@dataclass(frozen=True, slots=True)
class Dataset:
    """A canonical dataset: fields, natural key and validation."""

    name: str
    label: str
    fields: tuple[FieldSpec, ...]
    key_fields: tuple[str, ...]
    date_field: str  # the decision date: drives the 7-working-day deadline

    def field(self, name: str) -> FieldSpec:
        return self.by_name()[name]

    def by_name(self) -> Mapping[str, FieldSpec]:
        return {f.name: f for f in self.fields}

    @property
    def personal_id_fields(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if f.personal_id)


def _subject_fields(prefix: str) -> tuple[FieldSpec, ...]:
    p = prefix
    return (
        FieldSpec("subject_name", f"行政相对人名称 {p}_XDR_MC", required=True, max_len=200),
        FieldSpec("subject_category", f"行政相对人类别 {p}_XDR_LB", kind="code", required=True,
                  codes=SUBJECT_CATEGORIES),
        FieldSpec("uscc", f"统一社会信用代码 {p}_XDR_SHXYM", max_len=18, check="uscc"),
        FieldSpec("business_reg_no", f"工商注册号 {p}_XDR_GSZC", max_len=50),
        FieldSpec("org_code", f"组织机构代码 {p}_XDR_ZZJG", max_len=32),
        FieldSpec("tax_reg_no", f"税务登记号 {p}_XDR_SWDJ", max_len=32),
        FieldSpec("institution_cert_no", f"事业单位证书号 {p}_XDR_SYDW", max_len=120),
        FieldSpec("social_org_reg_no", f"社会组织登记证号 {p}_XDR_SHZZ", max_len=50),
        FieldSpec("legal_rep", f"法定代表人 {p}_FRDB", max_len=50),
        FieldSpec("legal_rep_id_type", f"法定代表人证件类型 {p}_FR_ZJLX", kind="code", codes=ID_TYPES),
        FieldSpec("legal_rep_id_no", f"法定代表人证件号码 {p}_FR_ZJHM", max_len=64, personal_id=True),
        FieldSpec("id_type", f"证件类型 {p}_XDR_ZJLX", kind="code", codes=ID_TYPES),
        FieldSpec("id_no", f"证件号码 {p}_XDR_ZJHM", max_len=64, personal_id=True),
    )


_COMMON_TAIL = (
    FieldSpec("region_code", "地方编码 DFBM (GB/T 2260)", max_len=6),
    FieldSpec("usage_scope", "信息使用范围 SYFW", kind="code", codes=USAGE_SCOPES),
    FieldSpec("remarks", "备注 BZ", max_len=4000),
)

LICENSE = Dataset(
    name="license",
    label="行政许可",
    key_fields=("decision_no", "authority_code"),
    date_field="decision_date",
    fields=(
        *_subject_fields("XK"),
        FieldSpec("document_name", "行政许可决定文书名称 XK_XKWS", required=True, max_len=256),
        FieldSpec("decision_no", "行政许可决定文书号 XK_WSH", required=True, max_len=128),
        FieldSpec("license_category", "许可类别 XK_XKLB", kind="code", required=True, codes=LICENSE_CATEGORIES),
        FieldSpec("certificate_name", "许可证书名称 XK_XKZS", max_len=256),
        FieldSpec("license_no", "许可编号 XK_XKBH", max_len=128),
        FieldSpec("content", "许可内容 XK_NR", required=True, max_len=4000),
        FieldSpec("decision_date", "许可决定日期 XK_JDRQ", kind="date", required=True),
        FieldSpec("valid_from", "有效期自 XK_YXQZ", kind="date", required=True),
        FieldSpec("valid_to", "有效期至 XK_YXQZI", kind="date", required=True),
        FieldSpec("authority", "许可机关 XK_XKJG", required=True, max_len=200),
        FieldSpec("authority_code", "许可机关统一社会信用代码 XK_XKJGDM", required=True, max_len=18, check="uscc"),
        FieldSpec("data_source", "数据来源单位 XK_LYDW", required=True, max_len=200),
        FieldSpec("data_source_code", "数据来源单位统一社会信用代码 XK_LYDWDM", required=True, max_len=18,
                  check="uscc"),
        *_COMMON_TAIL,
    ),
)

PENALTY = Dataset(
    name="penalty",
    label="行政处罚",
    key_fields=("decision_no", "authority_code"),
    date_field="decision_date",
    fields=(
        *_subject_fields("CF"),
        FieldSpec("decision_no", "行政处罚决定书文号 CF_WSH", required=True, max_len=128),
        FieldSpec("violation_type", "违法行为类型 CF_WFXW", required=True, max_len=2000),
        FieldSpec("violation_facts", "违法事实 CF_SY", required=True, max_len=4000),
        FieldSpec("legal_basis", "处罚依据 CF_YJ", required=True, max_len=4000),
        FieldSpec("penalty_types", "处罚类别 CF_CFLB", kind="list", required=True, codes=PENALTY_TYPES),
        FieldSpec("content", "处罚内容 CF_NR", required=True, max_len=4000),
        FieldSpec("fine_wan", "罚款金额（万元） CF_NR_FK", kind="decimal"),
        FieldSpec("confiscated_wan", "没收违法所得、没收非法财物的金额（万元） CF_NR_WFFF", kind="decimal"),
        FieldSpec("license_revoked", "暂扣或吊销证照名称及编号 CF_NR_ZKDX", max_len=200),
        FieldSpec("decision_date", "处罚决定日期 CF_JDRQ", kind="date", required=True),
        FieldSpec("valid_until", "处罚有效期 CF_YXQ", kind="date", required=True),
        FieldSpec("publicity_end", "公示截止期 CF_GSJZQ", kind="date"),
        FieldSpec("authority", "处罚机关 CF_CFJG", required=True, max_len=200),
        FieldSpec("authority_code", "处罚机关统一社会信用代码 CF_CFJGDM", required=True, max_len=18, check="uscc"),
        FieldSpec("data_source", "数据来源单位 CF_SJLY", required=True, max_len=200),
        FieldSpec("data_source_code", "数据来源单位统一社会信用代码 CF_SJLYDM", required=True, max_len=18,
                  check="uscc"),
        FieldSpec("severity", "失信严重程度 CF_SXYZCD", kind="code", codes=SEVERITIES),
        FieldSpec("domain", "领域 (特种设备/安全生产/消防/…; publicity rules)", max_len=50),
        FieldSpec("withdraw_reason", "撤下原因 (信用修复/公示期满/其他; with a withdraw)", kind="code",
                  codes=WITHDRAW_REASONS),
        *_COMMON_TAIL,
    ),
)

DATASETS: Mapping[str, Dataset] = {d.name: d for d in (LICENSE, PENALTY)}

Fields = Mapping[str, FieldValue]
Checker = Callable[[Fields, dt.date], Problem | None]


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


# ---------------------------------------------------------------- per-field checkers

def _code_allowed(value: str, codes: tuple[str, ...]) -> bool:
    return value in codes or ("其他" in codes and value.startswith("其他-"))


def _check_value(spec: FieldSpec, value: FieldValue, today: dt.date) -> Problem | None:
    name = spec.name
    if spec.kind == "text" and value.__class__ is str:  # the common case first
        return _check_text(spec, value) if spec.check or len(value) > spec.max_len > 0 else None
    if spec.kind == "date" and not isinstance(value, dt.date):
        return Problem(name, f"expected a date, got {value!r}")
    if spec.kind == "decimal" and not (isinstance(value, Decimal) and value.is_finite() and value >= 0):
        return Problem(name, f"expected a non-negative amount, got {value!r}")
    if spec.kind == "list":
        items = value if isinstance(value, list) else [str(value)]
        bad = [v for v in items if not _code_allowed(v, spec.codes)]
        return Problem(name, f"unknown value(s) {', '.join(bad)}") if bad else None
    if spec.kind == "code" and not _code_allowed(str(value), spec.codes):
        return Problem(name, f"unknown value {value!r}; allowed: {'/'.join(spec.codes)}")
    if isinstance(value, str):
        return _check_text(spec, value)
    return None


def _check_text(spec: FieldSpec, value: str) -> Problem | None:
    if spec.max_len and len(value) > spec.max_len:
        return Problem(spec.name, f"{len(value)} characters, at most {spec.max_len}")
    if spec.check == "uscc":
        reason = _uscc_reason(value)
        return Problem(spec.name, reason) if reason else None
    return None


@functools.lru_cache(maxsize=8192)
def _uscc_reason(value: str) -> str | None:
    """Deciding bodies and data sources repeat on every record: remember recent answers."""
    if is_placeholder(value):
        return f"placeholder code {value!r}"
    return check_uscc(value)


# ---------------------------------------------------------------- cross-field rules

def _future_date(name: str) -> Checker:
    def check(fields: Fields, today: dt.date) -> Problem | None:
        value = fields.get(name)
        if isinstance(value, dt.date) and value > today:
            return Problem(name, f"{value.isoformat()} is in the future")
        return None

    return check


def _not_before(name: str, earlier: str) -> Checker:
    def check(fields: Fields, today: dt.date) -> Problem | None:
        value, start = fields.get(name), fields.get(earlier)
        if isinstance(value, dt.date) and isinstance(start, dt.date) and value < start:
            return Problem(name, f"{value.isoformat()} is before {earlier} {start.isoformat()}")
        return None

    return check


def _required_for(name: str, categories: tuple[str, ...], message: str = "") -> Checker:
    def check(fields: Fields, today: dt.date) -> Problem | None:
        category = fields.get("subject_category")
        if category in categories and not fields.get(name):
            return Problem(name, message or f"required for {category}")
        return None

    return check


_SUBJECT_RULES: tuple[Checker, ...] = (
    _required_for("uscc", (ORGANISATION, INDIVIDUAL_BUSINESS)),
    _required_for("legal_rep", (ORGANISATION,)),
    _required_for("id_type", (NATURAL_PERSON,)),
    _required_for("id_no", (NATURAL_PERSON,)),
)


def _id_number(type_field: str, number_field: str) -> Checker:
    def check(fields: Fields, today: dt.date) -> Problem | None:
        number = fields.get(number_field)
        if not number or fields.get(type_field) not in CHECKED_ID_TYPES:
            return None
        reason = check_resident_id(str(number), today=today)
        return Problem(number_field, reason) if reason else None

    return check


@dataclass(frozen=True, slots=True)
class _Compiled:
    specs: Mapping[str, FieldSpec]
    required: tuple[str, ...]
    cross: tuple[Checker, ...]


def _compile(dataset: Dataset) -> _Compiled:
    cross: list[Checker] = [*_SUBJECT_RULES, _id_number("id_type", "id_no"),
                            _id_number("legal_rep_id_type", "legal_rep_id_no"), _future_date(dataset.date_field)]
    dates = {"license": [("valid_to", "valid_from")],
             "penalty": [("valid_until", "decision_date"), ("publicity_end", "decision_date")]}
    cross += [_not_before(later, earlier) for later, earlier in dates.get(dataset.name, [])]
    return _Compiled(dataset.by_name(), tuple(f.name for f in dataset.fields if f.required), tuple(cross))


_COMPILED: dict[str, _Compiled] = {}


def validate(dataset: Dataset, fields: Fields, today: dt.date) -> list[Problem]:
    """Every problem of one record's canonical fields (empty when valid)."""
    compiled = _COMPILED.get(dataset.name)
    if compiled is None:
        compiled = _COMPILED[dataset.name] = _compile(dataset)
    problems = [Problem(name, "required field is empty") for name in compiled.required
                if fields.get(name) in (None, "", [])]
    specs = compiled.specs
    for name, value in fields.items():
        spec = specs.get(name)
        if spec is None or value is None or value == "" or value == []:
            continue
        problem = _check_value(spec, value, today)
        if problem is not None:
            problems.append(problem)
    for check in compiled.cross:
        problem = check(fields, today)
        if problem is not None:
            problems.append(problem)
    return problems


def natural_key(dataset: Dataset, fields: Fields) -> Sequence[str]:
    """The natural-key parts of a record, as strings ('' where missing)."""
    return [str(fields.get(name) or "") for name in dataset.key_fields]
