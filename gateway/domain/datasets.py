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
from typing import Any

from gateway.domain.fields import Dataset as Dataset
from gateway.domain.fields import FieldSpec as FieldSpec
from gateway.domain.identifiers import check_resident_id, check_uscc, is_placeholder
from gateway.domain.regions import check_region
from gateway.domain.supervision import DATE_ORDER, SUPERVISION, USCC_DOCUMENT
from gateway.errors import Problem
from gateway.records import FieldValue
from gateway.text import control_reason, is_free_text

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
RED_LIST = "红名单"
BLACK_LIST = "严重失信主体名单"
WATCH_LIST = "重点关注名单"
LIST_TYPES = (RED_LIST, BLACK_LIST, WATCH_LIST)
USAGE_SCOPES = ("公示", "政府内部共享", "授权查询")
# Why a ``withdraw`` ends publication (gateway.domain.publicity): a repair is checked against the minimum period;
# 公示期满 is what the gateway itself sends when the maximum period is over. "其他-…" may carry a detail.
REPAIR = "信用修复"
EXPIRED = "公示期满"
WITHDRAW_REASONS = (REPAIR, EXPIRED, "其他")


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

# ---------------------------------------------------------------- 联合奖惩 (joint sanctions), domain.md §3
# No national schema or 措施清单 code list exists: field names follow what platforms were seen to exchange
# (Zhejiang feedback: itemCode/itemName, type, result, amount, district, dept, disciplinaryTime), and the
# measure codes come from the platform's cases as they are.

SANCTION_KINDS = ("惩戒", "激励")
# 执行结果 of one measure on one business matter; "其他-…" carries anything else.
FEEDBACK_RESULTS = ("已惩戒", "未惩戒", "未涉及", "已激励", "其他")

SANCTION_CASE = Dataset(
    name="sanction_case",
    label="联合奖惩案件 (platform → department)",
    key_fields=("case_id",),  # one subject and one measure per case; no ID number in the key
    date_field="issued_date",
    fields=(
        FieldSpec("case_id", "案件编号", required=True, max_len=64),
        FieldSpec("sanction_kind", "奖惩类型", kind="code", codes=SANCTION_KINDS),
        FieldSpec("memorandum_code", "合作备忘录编码", max_len=64),
        FieldSpec("memorandum_name", "合作备忘录名称", required=True, max_len=256),
        FieldSpec("measure_code", "措施编码 (措施清单)", required=True, max_len=64),
        FieldSpec("measure_name", "措施名称", required=True, max_len=256),
        FieldSpec("measure_detail", "措施细则", max_len=4000),
        FieldSpec("legal_basis", "法律及政策依据", required=True, max_len=4000),
        FieldSpec("subject_name", "主体名称", required=True, max_len=200),
        FieldSpec("subject_category", "主体类别", kind="code", required=True, codes=SUBJECT_CATEGORIES),
        FieldSpec("uscc", "统一社会信用代码", max_len=18, check="uscc"),
        FieldSpec("legal_rep", "法定代表人", max_len=50),
        FieldSpec("id_type", "证件类型", kind="code", codes=ID_TYPES),
        FieldSpec("id_no", "证件号码", max_len=64, personal_id=True),
        FieldSpec("initiating_dept", "发起部门", required=True, max_len=200),
        FieldSpec("initiating_dept_code", "发起部门统一社会信用代码", max_len=18, check="uscc"),
        FieldSpec("period_from", "限制期限自", kind="date", required=True),
        FieldSpec("period_to", "限制期限至 (empty: 长期)", kind="date"),
        FieldSpec("issued_date", "发起日期", kind="date", required=True),
        FieldSpec("region_code", "行政区划代码 (GB/T 2260)", max_len=6),
        FieldSpec("remarks", "备注", max_len=4000),
    ),
)

SANCTION_FEEDBACK = Dataset(
    name="sanction_feedback",
    label="联合奖惩执行反馈 (department → platform)",
    key_fields=("case_id", "measure_code", "matter_code"),
    date_field="executed_date",
    fields=(
        FieldSpec("case_id", "案件编号", required=True, max_len=64),
        FieldSpec("measure_code", "措施编码", required=True, max_len=64),
        FieldSpec("measure_name", "措施名称", max_len=256),
        FieldSpec("matter_code", "事项编码 (e.g. a licence application's 事项)", required=True, max_len=64),
        FieldSpec("matter_name", "事项名称", required=True, max_len=256),
        FieldSpec("result", "执行结果", kind="code", required=True, codes=FEEDBACK_RESULTS),
        FieldSpec("result_detail", "执行情况说明", max_len=2000),
        FieldSpec("amount", "涉及金额（元）", kind="decimal"),
        FieldSpec("executed_date", "执行日期", kind="date", required=True),
        FieldSpec("executing_dept", "执行部门名称", required=True, max_len=200),
        FieldSpec("executing_dept_code", "执行部门编码 (统一社会信用代码)", required=True, max_len=18, check="uscc"),
        FieldSpec("region_code", "行政区划代码 (GB/T 2260)", required=True, max_len=6),
        FieldSpec("subject_name", "主体名称", max_len=200),
        FieldSpec("uscc", "统一社会信用代码", max_len=18, check="uscc"),
        FieldSpec("id_no", "证件号码", max_len=64, personal_id=True),
        FieldSpec("remarks", "备注", max_len=4000),
    ),
)

# Credit lists (domain.md §2): no national field standard exists, so the canonical names are ours; labels
# name the columns seen in platform list tables (ES_SXY YW_L_HEIMINGDAN / HONGMINGDAN, YW_P_GR…).
CREDIT_LIST = Dataset(
    name="credit_list",
    label="信用名单 (红名单 / 严重失信主体名单 / 重点关注名单)",
    key_fields=("list_code", "uscc", "id_no"),  # one entry per subject and list: USCC, or ID number for persons
    date_field="listing_date",
    pseudonymised_key=True,  # the key holds a pseudonym of the ID number: lists may go to partners
    fields=(
        FieldSpec("list_code", "名单编码 (the platform's list identifier)", required=True, max_len=64),
        FieldSpec("list_type", "名单类型", kind="code", required=True, codes=LIST_TYPES),
        FieldSpec("subject_category", "主体类别", kind="code", required=True, codes=SUBJECT_CATEGORIES),
        FieldSpec("subject_name", "主体名称 JGQC / XM", required=True, max_len=200),
        FieldSpec("uscc", "统一社会信用代码 TYSHXYDM", max_len=18, check="uscc"),
        FieldSpec("id_type", "证件类型 ZJLX", kind="code", codes=ID_TYPES),
        FieldSpec("id_no", "证件号码 SFZH", max_len=64, personal_id=True),
        FieldSpec("legal_rep", "法定代表人 FDDBR", max_len=50),
        FieldSpec("reason", "列入事由: 主要失信事实 ZYSXSS / 荣誉事项 RYSX", required=True, max_len=4000),
        FieldSpec("basis", "认定文号 RDWH", required=True, max_len=128),
        FieldSpec("deciding_body", "认定单位 RDDW", required=True, max_len=200),
        FieldSpec("listing_date", "列入日期 (认定日期 RDRQ)", kind="date", required=True),
        FieldSpec("expiry_date", "有效期至 / 公示截止期 GSJZQ", kind="date"),
        FieldSpec("removal_date", "移出日期", kind="date"),
        FieldSpec("removal_reason", "移出原因", max_len=500),
        *_COMMON_TAIL,
    ),
)

DATASETS: Mapping[str, Dataset] = {d.name: d for d in (LICENSE, PENALTY, CREDIT_LIST, SANCTION_CASE, SANCTION_FEEDBACK,
                                                       *SUPERVISION)}

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
        if spec.check or len(value) > spec.max_len > 0 or not value.isprintable():
            return _check_text(spec, value)
        return None
    if spec.kind == "date" and not isinstance(value, dt.date):
        return Problem(name, f"expected a date, got {value!r}")
    if spec.kind == "decimal" and not (isinstance(value, Decimal) and value.is_finite() and value >= 0):
        return Problem(name, f"expected a non-negative amount, got {value!r}")
    if spec.kind == "list":
        items = value if isinstance(value, list) else [str(value)]
        for i, item in enumerate(items, 1):
            if isinstance(item, str) and (reason := control_reason(item)):
                return Problem(name, f"item {i}: {reason}")
        bad = [v for v in items if not _code_allowed(v, spec.codes)]
        return Problem(name, f"unknown value(s) {', '.join(bad)}") if bad else None
    if spec.kind == "code" and isinstance(value, str) and (reason := control_reason(value)):
        return Problem(name, reason)  # "其他-…" takes any detail, but not these
    if spec.kind == "code" and not _code_allowed(str(value), spec.codes):
        return Problem(name, f"unknown value {value!r}; allowed: {'/'.join(spec.codes)}")
    if isinstance(value, str):
        return _check_text(spec, value)
    return None


def _check_text(spec: FieldSpec, value: str) -> Problem | None:
    if spec.max_len and len(value) > spec.max_len:
        return Problem(spec.name, f"{len(value)} characters, at most {spec.max_len}")
    reason = control_reason(value, spec.kind == "text" and not spec.check and is_free_text(spec.max_len))
    if reason:
        return Problem(spec.name, reason)
    if spec.check == "uscc":
        reason = _uscc_reason(value)
        return Problem(spec.name, reason) if reason else None
    if spec.check:
        reason = _CODE_CHECKS[spec.check](value)
        return Problem(spec.name, reason) if reason else None
    return None


def _item_code_reason(value: str) -> str | None:
    """监管事项目录编码: 14 digits."""
    if len(value) != 14 or not value.isascii() or not value.isdigit():
        return f"{value!r} is not a 14-digit 监管事项目录编码"
    return None


def _check_icode_reason(value: str) -> str | None:
    """检查实施清单编码: the implementing organ's USCC (18 characters), then a 19th character 1–5."""
    if len(value) < 19:
        return f"{value!r}: a 检查实施清单编码 has at least 19 characters (USCC + 1–5)"
    reason = _uscc_reason(value[:18])
    if reason:
        return f"first 18 characters: {reason}"
    if value[18] not in "12345":
        return f"19th character {value[18]!r} is not 1–5"
    return None


_CODE_CHECKS: Mapping[str, Callable[[str], str | None]] = {
    "item_code": _item_code_reason, "check_icode": _check_icode_reason, "region": check_region}


@functools.lru_cache(maxsize=8192)
def _uscc_reason(value: str) -> str | None:
    """Deciding bodies and data sources repeat on every record: remember recent answers."""
    if is_placeholder(value):
        return f"placeholder code {value!r}"
    return check_uscc(value)


# ---------------------------------------------------------------- cross-field rules

_DESCRIPTIONS: dict[Checker, tuple[Any, ...]] = {}


def _described(check: Checker, *description: Any) -> Checker:
    """Remember what a checker checks (its kind and arguments), so gateway.mapping.fast can write it out inline."""
    _DESCRIPTIONS[check] = description
    return check


def describe_rule(check: Checker) -> tuple[Any, ...]:
    """``(kind, *arguments)`` of a cross-field checker made here, ``()`` for any other."""
    return _DESCRIPTIONS.get(check, ())


def _future_date(name: str) -> Checker:
    def check(fields: Fields, today: dt.date) -> Problem | None:
        value = fields.get(name)
        if isinstance(value, dt.date) and value > today:
            return Problem(name, f"{value.isoformat()} is in the future")
        return None

    return _described(check, "future_date", name)


def _not_before(name: str, earlier: str) -> Checker:
    def check(fields: Fields, today: dt.date) -> Problem | None:
        value, start = fields.get(name), fields.get(earlier)
        if isinstance(value, dt.date) and isinstance(start, dt.date) and value < start:
            return Problem(name, f"{value.isoformat()} is before {earlier} {start.isoformat()}")
        return None

    return _described(check, "not_before", name, earlier)


def _required_for(name: str, categories: tuple[str, ...], message: str = "") -> Checker:
    def check(fields: Fields, today: dt.date) -> Problem | None:
        category = fields.get("subject_category")
        if category in categories and not fields.get(name):
            return Problem(name, message or f"required for {category}")
        return None

    return _described(check, "required_for", name, categories, message)


_SUBJECT_RULES: tuple[Checker, ...] = (
    _required_for("uscc", (ORGANISATION, INDIVIDUAL_BUSINESS)),
    _required_for("legal_rep", (ORGANISATION,)),
    _required_for("id_type", (NATURAL_PERSON,)),
    _required_for("id_no", (NATURAL_PERSON,)),
)
# A sanction case names the subject without its legal representative: no 法定代表人 rule there.
_CASE_SUBJECT_RULES: tuple[Checker, ...] = (
    _required_for("uscc", (ORGANISATION, INDIVIDUAL_BUSINESS)),
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

    return _described(check, "id_number", type_field, number_field)


@dataclass(frozen=True, slots=True)
class _Compiled:
    specs: Mapping[str, FieldSpec]
    required: tuple[str, ...]
    cross: tuple[Checker, ...]
    plain_text: Mapping[str, int]  # text fields without a check: their maximum length (0: none)


def _subject_identified(fields: Fields, today: dt.date) -> Problem | None:
    """A list entry names its subject by USCC or by ID number: the list's natural key needs one of them."""
    if not fields.get("uscc") and not fields.get("id_no"):
        return Problem("uscc", "a list entry needs the subject's USCC or ID number")
    return None


_LIST_RULES: tuple[Checker, ...] = (
    _required_for("uscc", (ORGANISATION, INDIVIDUAL_BUSINESS)),
    _required_for("id_type", (NATURAL_PERSON,)),
    _required_for("id_no", (NATURAL_PERSON,)),
    _subject_identified,
)


def _subject_document(fields: Fields, today: dt.date) -> Problem | None:
    """A supervision action's 行政相对人编码 is a valid USCC when its 证件类型 says so (ID numbers: _id_number)."""
    code = fields.get("subject_code")
    if not code or fields.get("subject_doc_type") != USCC_DOCUMENT:
        return None
    reason = _uscc_reason(str(code))
    return Problem("subject_code", reason) if reason else None


def _supervision_rules(dataset: Dataset) -> list[Checker]:
    return [_subject_document, _id_number("subject_doc_type", "subject_code"), _future_date(dataset.date_field),
            *(_not_before(later, earlier) for later, earlier in DATE_ORDER[dataset.name])]


def _compile(dataset: Dataset) -> _Compiled:
    if dataset.name in DATE_ORDER:
        return _compiled_of(dataset, _supervision_rules(dataset))
    subject_rules = {"credit_list": _LIST_RULES, "sanction_case": _CASE_SUBJECT_RULES}.get(dataset.name, _SUBJECT_RULES)
    cross: list[Checker] = [*subject_rules, _id_number("id_type", "id_no"),
                            _id_number("legal_rep_id_type", "legal_rep_id_no"), _future_date(dataset.date_field)]
    dates = {"license": [("valid_to", "valid_from")],
             "penalty": [("valid_until", "decision_date"), ("publicity_end", "decision_date")],
             "sanction_case": [("period_to", "period_from")],
             "credit_list": [("expiry_date", "listing_date"), ("removal_date", "listing_date")]}
    cross += [_not_before(later, earlier) for later, earlier in dates.get(dataset.name, [])]
    return _compiled_of(dataset, cross)


def _compiled_of(dataset: Dataset, cross: list[Checker]) -> _Compiled:
    plain = {f.name: f.max_len for f in dataset.fields if f.kind == "text" and not f.check}
    return _Compiled(dataset.by_name(), tuple(f.name for f in dataset.fields if f.required), tuple(cross), plain)


_COMPILED: dict[str, _Compiled] = {}


def compiled_rules(dataset: Dataset) -> _Compiled:
    """The dataset's validation as :func:`validate` runs it (compiled once), for gateway.mapping.fast to specialise."""
    compiled = _COMPILED.get(dataset.name)
    if compiled is None:
        compiled = _COMPILED[dataset.name] = _compile(dataset)
    return compiled


def validate(dataset: Dataset, fields: Fields, today: dt.date) -> list[Problem]:
    """Every problem of one record's canonical fields (empty when valid)."""
    compiled = compiled_rules(dataset)
    problems = [Problem(name, "required field is empty") for name in compiled.required
                if fields.get(name) in (None, "", [])]
    specs, plain = compiled.specs, compiled.plain_text
    for name, value in fields.items():
        limit = plain.get(name)
        if limit is not None and value.__class__ is str:  # most fields: a length to check, done inline
            if len(value) > limit > 0:
                problems.append(Problem(name, f"{len(value)} characters, at most {limit}"))
            elif not value.isprintable() and (reason := control_reason(value, is_free_text(limit))):
                problems.append(Problem(name, reason))
            continue
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
