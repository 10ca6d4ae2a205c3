"""Tests for gateway.mapping: ops-editable TOML mapping files compiled into plain functions.

Inbound mappings are written into ``tmp_path`` from a base that maps every canonical field of a valid
penalty from a column of the same name; each test changes one field table. Outbound tests use the
shipped 2019 ``CF_*``/``XK_*`` mappings. Expected values are derived from the inputs (the rows, the code
tables written here or shipped in ``mappings/``, the dataset labels), never copied from a run.
"""

from __future__ import annotations

import datetime as dt
import tomllib
import unicodedata
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.datasets import LICENSE, PENALTY, Dataset, FieldSpec
from gateway.errors import ConfigError
from gateway.mapping import InboundMapping, MappedRow, OutboundMapping, load_mapping
from gateway.records import FieldValue, Operation, Record

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"
CODES_FILE = MAPPINGS / "codes" / "department-codes.toml"
PENALTY_OUT = MAPPINGS / "platform-2019-penalty.toml"
LICENSE_OUT = MAPPINGS / "platform-2019-license.toml"
TODAY = dt.date(2024, 6, 1)
COMPANY_USCC = "91230500MA1B3N1N2M"  # domain.md §8, valid check character
ORGAN_USCC = "11230500001755309F"  # domain.md §8, valid check character

# A valid penalty of a company, as a source row whose columns carry the canonical names.
PENALTY_ROW: dict[str, Any] = {
    "decision_no": "苏市监罚〔2024〕17号",
    "subject_name": "苏州示例科技有限公司",
    "subject_category": "法人及非法人组织",
    "uscc": COMPANY_USCC,
    "legal_rep": "张三",
    "violation_type": "未按规定公示年度报告",
    "violation_facts": "当事人未按规定期限公示年度报告",
    "legal_basis": "《企业信息公示暂行条例》第十八条",
    "penalty_types": "罚款",
    "content": "罚款5000元",
    "decision_date": "2024-03-01",
    "valid_until": "2024-09-01",
    "authority": "苏州市市场监督管理局",
    "authority_code": ORGAN_USCC,
    "data_source": "苏州市市场监督管理局",
    "data_source_code": ORGAN_USCC,
}

# The 2019 双公示 identifiers (domain.md §1.2 and §1.3).
STANDARD_CF = (
    "CF_XDR_MC", "CF_XDR_LB", "CF_XDR_SHXYM", "CF_XDR_GSZC", "CF_XDR_ZZJG", "CF_XDR_SWDJ", "CF_XDR_SYDW",
    "CF_XDR_SHZZ", "CF_FRDB", "CF_FR_ZJLX", "CF_FR_ZJHM", "CF_XDR_ZJLX", "CF_XDR_ZJHM", "CF_WSH", "CF_WFXW",
    "CF_SY", "CF_YJ", "CF_CFLB", "CF_NR", "CF_NR_FK", "CF_NR_WFFF", "CF_NR_ZKDX", "CF_JDRQ", "CF_YXQ",
    "CF_GSJZQ", "CF_CFJG", "CF_CFJGDM", "CF_SJLY", "CF_SJLYDM", "BZ",
)
STANDARD_XK = (
    "XK_XDR_MC", "XK_XDR_LB", "XK_XDR_SHXYM", "XK_XDR_GSZC", "XK_XDR_ZZJG", "XK_XDR_SWDJ", "XK_XDR_SYDW",
    "XK_XDR_SHZZ", "XK_FRDB", "XK_FR_ZJLX", "XK_FR_ZJHM", "XK_XDR_ZJLX", "XK_XDR_ZJHM", "XK_XKWS", "XK_WSH",
    "XK_XKLB", "XK_XKZS", "XK_XKBH", "XK_NR", "XK_JDRQ", "XK_YXQZ", "XK_YXQZI", "XK_XKJG", "XK_XKJGDM",
    "XK_ZT", "XK_LYDW", "XK_LYDWDM", "BZ",
)


# ---------------------------------------------------------------- helpers

def fields_text(bodies: dict[str, str]) -> str:
    return "".join(f"\n[fields.{name}]\n{body}\n" for name, body in bodies.items())


def inbound_text(overrides: dict[str, str | None] | None = None, *, head: str = "", codes: str = "",
                 operation: str = "", dataset: str = "penalty", row: dict[str, Any] | None = None) -> str:
    """An inbound mapping: every column of ``row`` mapped to the field of the same name, then ``overrides``."""
    bodies = {name: f'from = "{name}"' for name in (PENALTY_ROW if row is None else row)}
    for name, body in (overrides or {}).items():
        if body is None:
            bodies.pop(name, None)
        else:
            bodies[name] = body
    return (f'[mapping]\nkind = "inbound"\ndataset = "{dataset}"\n{head}\n{operation}\n{codes}\n'
            + fields_text(bodies))


def write(tmp_path: Path, text: str | bytes, name: str = "mapping.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def compile_inbound(tmp_path: Path, text: str) -> InboundMapping:
    mapping = load_mapping(write(tmp_path, text))
    assert isinstance(mapping, InboundMapping)
    return mapping


def map_one(tmp_path: Path, overrides: dict[str, str | None] | None = None, changes: dict[str, Any] | None = None,
            today: dt.date = TODAY, **text: Any) -> MappedRow:
    """Compile the base mapping with ``overrides`` and map the valid row with ``changes``."""
    mapping = compile_inbound(tmp_path, inbound_text(overrides, **text))
    return mapping.map_row({**PENALTY_ROW, **(changes or {})}, today, "src", "row-1")


def map_both(tmp_path: Path, overrides: dict[str, str | None] | None = None,
             changes: dict[str, Any] | None = None) -> MappedRow:
    """:func:`map_one` through the generated function and the interpreted reference; they must agree."""
    mapping = compile_inbound(tmp_path, inbound_text(overrides))
    row = {**PENALTY_ROW, **(changes or {})}
    fast = mapping.map_row(row, TODAY, "src", "row-1")
    reference = mapping.reference().map_row(row, TODAY, "src", "row-1")
    assert mapping.fast is not None and fast == reference
    return fast


def fields_of(result: MappedRow) -> dict[str, FieldValue]:
    assert result.problems == [], result.problems
    assert result.record is not None
    return dict(result.record.fields)


def problems_of(result: MappedRow) -> dict[str, str]:
    assert result.record is None
    return {p.path: p.message for p in result.problems}


def compile_errors(tmp_path: Path, text: str | bytes) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_mapping(write(tmp_path, text))
    return caught.value


def paths(error: ConfigError) -> set[str]:
    return {p.path for p in error.problems}


def codes_toml(name: str, table: dict[str, str], unknown: str | None = None) -> str:
    lines = [f"[codes.{name}]"] + ([f'_unknown = "{unknown}"'] if unknown else [])
    lines += [f'"{code}" = "{value}"' for code, value in table.items()]
    return "\n".join(lines) + "\n"


def fullwidth(text: str) -> str:
    """ASCII letters and digits as their full-width forms (U+FF01…U+FF5E)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def shipped_codes() -> dict[str, Any]:
    with CODES_FILE.open("rb") as handle:
        codes: dict[str, Any] = tomllib.load(handle)["codes"]
    return codes


# ---------------------------------------------------------------- inbound: sources

class TestFieldSources:
    def test_from_reads_the_named_column(self, tmp_path: Path) -> None:
        """`from` takes the value of the named source column."""
        result = map_one(tmp_path, {"subject_name": 'from = "xdr_mc"'}, {"xdr_mc": "吴中区某商店"})
        assert fields_of(result)["subject_name"] == "吴中区某商店"

    def test_value_sets_a_constant_whatever_the_row(self, tmp_path: Path) -> None:
        """`value` sets a constant; the row's own column of that name is ignored."""
        result = map_one(tmp_path, {"region_code": 'value = "320500"'}, {"region_code": "999999"})
        assert fields_of(result)["region_code"] == "320500"

    @pytest.mark.parametrize("cell", ["", "   ", None])
    def test_default_fills_an_empty_cell(self, tmp_path: Path, cell: Any) -> None:
        """`default` is used when the column is empty, blank or NULL."""
        result = map_one(tmp_path, {"remarks": 'from = "bz"\ndefault = "无"'}, {"bz": cell})
        assert fields_of(result)["remarks"] == "无"

    def test_default_fills_a_missing_column(self, tmp_path: Path) -> None:
        """`default` is used when the row has no such column at all."""
        result = map_one(tmp_path, {"remarks": 'from = "bz"\ndefault = "无"'})
        assert fields_of(result)["remarks"] == "无"

    def test_default_does_not_override_a_value(self, tmp_path: Path) -> None:
        """A non-empty cell wins over the default."""
        result = map_one(tmp_path, {"remarks": 'from = "bz"\ndefault = "无"'}, {"bz": "已整改"})
        assert fields_of(result)["remarks"] == "已整改"

    def test_empty_optional_field_is_left_out(self, tmp_path: Path) -> None:
        """An empty optional column without a default leaves the field unset, not an empty string."""
        result = map_one(tmp_path, {"remarks": 'from = "bz"'}, {"bz": ""})
        assert "remarks" not in fields_of(result)

    def test_source_and_source_key_are_kept(self, tmp_path: Path) -> None:
        """The record remembers which source and which source row it came from."""
        mapping = compile_inbound(tmp_path, inbound_text())
        record = mapping.map_row(PENALTY_ROW, TODAY, "department_penalties", "42").record
        assert record is not None
        assert (record.source, record.source_key, record.dataset) == ("department_penalties", "42", "penalty")


# ---------------------------------------------------------------- inbound: transforms

class TestTransforms:
    def test_strip_is_the_default(self, tmp_path: Path) -> None:
        """Without `transform`, surrounding whitespace (including the ideographic space) is removed."""
        name = PENALTY_ROW["subject_name"]
        result = map_one(tmp_path, changes={"subject_name": f" \u3000{name}\t "})
        assert fields_of(result)["subject_name"] == name

    def test_upper(self, tmp_path: Path) -> None:
        """`upper` upper-cases, so a lower-case USCC passes the check."""
        result = map_one(tmp_path, {"uscc": 'from = "uscc"\ntransform = ["strip", "upper"]'},
                         {"uscc": COMPANY_USCC.lower()})
        assert fields_of(result)["uscc"] == COMPANY_USCC

    def test_halfwidth_turns_a_fullwidth_uscc_into_ascii(self, tmp_path: Path) -> None:
        """`halfwidth` maps 全角 letters and digits to 半角, so ９１２３… becomes 9123…."""
        typed = fullwidth(COMPANY_USCC)
        assert typed != COMPANY_USCC
        result = map_one(tmp_path, {"uscc": 'from = "uscc"\ntransform = ["strip", "halfwidth", "upper"]'},
                         {"uscc": typed})
        assert fields_of(result)["uscc"] == COMPANY_USCC

    def test_steps_run_in_order(self, tmp_path: Path) -> None:
        """A full-width lower-case code is first made half-width, then upper-cased."""
        typed = fullwidth(COMPANY_USCC.lower())
        result = map_one(tmp_path, {"uscc": 'from = "uscc"\ntransform = ["halfwidth", "upper"]'}, {"uscc": typed})
        assert fields_of(result)["uscc"] == unicodedata.normalize("NFKC", typed).upper()

    def test_without_halfwidth_a_fullwidth_uscc_is_rejected(self, tmp_path: Path) -> None:
        """The full-width code is only accepted because of the transform: without it the check fails."""
        result = map_one(tmp_path, changes={"uscc": fullwidth(COMPANY_USCC)})
        assert "uscc" in problems_of(result)

    def test_collapse_spaces(self, tmp_path: Path) -> None:
        """`collapse_spaces` turns runs of whitespace inside a value into one space."""
        result = map_one(tmp_path, {"decision_no": 'from = "decision_no"\ntransform = ["strip", "collapse_spaces"]'},
                         {"decision_no": "苏市监罚  〔2024〕\t17号"})
        assert fields_of(result)["decision_no"] == "苏市监罚 〔2024〕 17号"

    def test_remove_spaces(self, tmp_path: Path) -> None:
        """`remove_spaces` removes all whitespace, e.g. inside a code typed in groups."""
        grouped = " ".join(COMPANY_USCC[i:i + 6] for i in range(0, 18, 6))
        result = map_one(tmp_path, {"uscc": 'from = "uscc"\ntransform = ["remove_spaces"]'}, {"uscc": grouped})
        assert fields_of(result)["uscc"] == COMPANY_USCC


# ---------------------------------------------------------------- inbound: dates

DECISION = dt.date(2021, 7, 15)


class TestDates:
    @pytest.mark.parametrize("fmt", ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y年%m月%d日", "%Y-%m-%d %H:%M:%S",
                                     "%d.%m.%Y"])
    def test_date_format(self, tmp_path: Path, fmt: str) -> None:
        """Each `date_format` parses the date it formats."""
        text = dt.datetime.combine(DECISION, dt.time(8, 30)).strftime(fmt)
        result = map_one(tmp_path, {"decision_date": f'from = "jdrq"\ndate_format = ["{fmt}"]'}, {"jdrq": text})
        assert fields_of(result)["decision_date"] == DECISION

    @pytest.mark.parametrize("fmt", ["%Y/%m/%d", "%Y%m%d"])
    def test_several_formats_in_one_field(self, tmp_path: Path, fmt: str) -> None:
        """A list of formats accepts a date in any of them."""
        result = map_one(tmp_path, {"decision_date": 'from = "jdrq"\ndate_format = ["%Y/%m/%d", "%Y%m%d"]'},
                         {"jdrq": DECISION.strftime(fmt)})
        assert fields_of(result)["decision_date"] == DECISION

    def test_single_format_as_a_string(self, tmp_path: Path) -> None:
        """`date_format` may be one string instead of a list."""
        result = map_one(tmp_path, {"decision_date": 'from = "jdrq"\ndate_format = "%Y%m%d"'},
                         {"jdrq": DECISION.strftime("%Y%m%d")})
        assert fields_of(result)["decision_date"] == DECISION

    def test_date_objects_pass_through(self, tmp_path: Path) -> None:
        """A database that returns date or datetime objects needs no format."""
        result = map_one(tmp_path, changes={"decision_date": DECISION,
                                            "valid_until": dt.datetime.combine(DECISION, dt.time(9))})
        fields = fields_of(result)
        assert (fields["decision_date"], fields["valid_until"]) == (DECISION, DECISION)

    def test_non_matching_date_names_the_field_and_the_formats(self, tmp_path: Path) -> None:
        """A date in none of the formats is a problem of that field that quotes the value and every format."""
        formats = ["%Y/%m/%d", "%Y%m%d"]
        result = map_one(tmp_path, {"decision_date": f'from = "jdrq"\ndate_format = {formats!r}'.replace("'", '"')},
                         {"jdrq": "2021-07-15"})
        message = problems_of(result)["decision_date"]
        assert "2021-07-15" in message
        assert all(fmt in message for fmt in formats)

    @pytest.mark.parametrize(("text", "formats"), [
        ("2026/02/30", '["%Y/%m/%d"]'), ("2026-02-30", '["%Y-%m-%d"]'), ("2025/02/29", '["%Y/%m/%d", "%Y%m%d"]'),
        ("2026-04-31 10:00:00", '["%Y-%m-%d %H:%M:%S"]'), ("2026年02月30日", '["%Y年%m月%d日"]')])
    def test_a_date_that_does_not_exist_is_named_so(self, tmp_path: Path, text: str, formats: str) -> None:
        """The right shape but no such day: "no such date", not "does not match" (issue 17, 14), both paths."""
        result = map_both(tmp_path, {"decision_date": f'from = "jdrq"\ndate_format = {formats}'}, {"jdrq": text})
        message = problems_of(result)["decision_date"]
        assert message.startswith("no such date") and text in message and "does not match" not in message

    @pytest.mark.parametrize("text", ["2026/2/3x", "20260230", "2026/13/01"])
    def test_a_text_of_another_shape_does_not_match(self, tmp_path: Path, text: str) -> None:
        """A text that is not in the format's shape (month 13 is not a month) still "does not match"."""
        result = map_both(tmp_path, {"decision_date": 'from = "jdrq"\ndate_format = ["%Y/%m/%d"]'}, {"jdrq": text})
        assert "does not match date format" in problems_of(result)["decision_date"]

    def test_impossible_date_is_a_problem(self, tmp_path: Path) -> None:
        """A date that matches the pattern but does not exist (month 13) is refused."""
        result = map_one(tmp_path, changes={"decision_date": "2021-13-01"})
        assert "decision_date" in problems_of(result)


# ---------------------------------------------------------------- inbound: units and amounts

class TestUnits:
    @pytest.mark.parametrize("yuan", ["5000", 5000, 5000.0, "5,000", "5000.00"])
    def test_yuan_to_wan_is_exact(self, tmp_path: Path, yuan: Any) -> None:
        """5000 元 becomes exactly Decimal 0.5 万元, however the source spells 5000."""
        result = map_one(tmp_path, {"fine_wan": 'from = "fkje"\nunit = "yuan_to_wan"'}, {"fkje": yuan})
        value = fields_of(result)["fine_wan"]
        assert isinstance(value, Decimal)
        assert value == Decimal(5000) / Decimal(10000)
        assert str(value) == "0.5"

    def test_yuan_to_wan_keeps_small_amounts(self, tmp_path: Path) -> None:
        """1 元 is 0.0001 万元, without float rounding."""
        result = map_one(tmp_path, {"fine_wan": 'from = "fkje"\nunit = "yuan_to_wan"'}, {"fkje": "1"})
        assert fields_of(result)["fine_wan"] == Decimal(1) / Decimal(10000)

    def test_without_unit_the_amount_is_kept(self, tmp_path: Path) -> None:
        """A source already in 万元 needs no unit."""
        result = map_one(tmp_path, {"fine_wan": 'from = "fkje"'}, {"fkje": "0.2"})
        assert fields_of(result)["fine_wan"] == Decimal("0.2")

    @pytest.mark.parametrize("fine", ["-5000", -5000, -5000.0, "-5,000"])
    def test_negative_fine_is_reported_as_the_source_value(self, tmp_path: Path, fine: Any) -> None:
        """A negative amount is refused quoting the source's value in 元, not its 万元 (issue 17, 14)."""
        result = map_both(tmp_path, {"fine_wan": 'from = "fkje"\nunit = "yuan_to_wan"'}, {"fkje": fine})
        message = problems_of(result)["fine_wan"]
        assert repr(fine) in message and "negative" in message and "0.5" not in message

    def test_not_a_number_names_the_field(self, tmp_path: Path) -> None:
        """A non-numeric amount is a problem of that field."""
        result = map_one(tmp_path, {"fine_wan": 'from = "fkje"\nunit = "yuan_to_wan"'}, {"fkje": "五千"})
        assert "五千" in problems_of(result)["fine_wan"]

    @pytest.mark.parametrize("junk", ["NaN", "Infinity", "-inf", "sNaN"])
    def test_non_finite_amount_is_a_problem_not_a_crash(self, tmp_path: Path, junk: str) -> None:
        """NaN and infinities are not amounts: the row is rejected with a problem on the field."""
        result = map_one(tmp_path, {"fine_wan": 'from = "fkje"\nunit = "yuan_to_wan"'}, {"fkje": junk})
        assert "fine_wan" in problems_of(result)


# ---------------------------------------------------------------- inbound: lists

class TestLists:
    def test_default_separators_include_chinese_ones(self, tmp_path: Path) -> None:
        """Without `split`, ;；,， all separate items."""
        items = ["警告", "罚款", "通报批评", "没收违法所得"]
        text = f"{items[0]}；{items[1]}，{items[2]};{items[3]}"
        result = map_one(tmp_path, changes={"penalty_types": text})
        assert fields_of(result)["penalty_types"] == items

    def test_custom_separator(self, tmp_path: Path) -> None:
        """`split` names the separators, e.g. the enumeration comma 、."""
        items = ["警告", "罚款"]
        result = map_one(tmp_path, {"penalty_types": 'from = "penalty_types"\nsplit = "、；"'},
                         {"penalty_types": "、".join(items)})
        assert fields_of(result)["penalty_types"] == items

    def test_items_are_trimmed_and_empty_items_dropped(self, tmp_path: Path) -> None:
        """Blank items between separators and spaces around items are removed."""
        result = map_one(tmp_path, changes={"penalty_types": " 警告 ；；罚款；"})
        assert fields_of(result)["penalty_types"] == ["警告", "罚款"]

    def test_each_item_goes_through_the_code_table(self, tmp_path: Path) -> None:
        """With `codes`, every item of the list is looked up."""
        table = {"01": "警告", "03": "罚款"}
        result = map_one(tmp_path, {"penalty_types": 'from = "cflb"\ncodes = "pt"'}, {"cflb": "03；01"},
                         codes=codes_toml("pt", table))
        assert fields_of(result)["penalty_types"] == [table["03"], table["01"]]

    def test_unknown_item_in_list_names_the_field(self, tmp_path: Path) -> None:
        """One unknown code in a list rejects the row with a problem on the list field."""
        result = map_one(tmp_path, {"penalty_types": 'from = "cflb"\ncodes = "pt"'}, {"cflb": "03；77"},
                         codes=codes_toml("pt", {"03": "罚款"}))
        assert "77" in problems_of(result)["penalty_types"]


# ---------------------------------------------------------------- inbound: code tables

DatedEntries = dict[str, list[tuple[str, dt.date | None, dt.date | None]]]


def dated_codes_toml(name: str, entries: DatedEntries) -> str:
    lines = [f"[codes.{name}]"]
    for code, versions in entries.items():
        items = []
        for value, start, until in versions:
            parts = [f'value = "{value}"'] + ([f"from = {start.isoformat()}"] if start else []) \
                + ([f"until = {until.isoformat()}"] if until else [])
            items.append("{ " + ", ".join(parts) + " }")
        lines.append(f'"{code}" = [' + ", ".join(items) + "]")
    return "\n".join(lines) + "\n"


# 暂扣许可证 was renamed 暂扣许可证件 by the 2021 行政处罚法 revision (in force 2021-07-15).
DATED: DatedEntries = {"06": [("其他-暂扣许可证", None, dt.date(2021, 7, 14)),
                              ("暂扣许可证件", dt.date(2021, 7, 15), None)]}


def effective_value(code: str, on: dt.date) -> str:
    return next(value for value, start, until in DATED[code]
                if (start is None or start <= on) and (until is None or on <= until))


class TestCodeTables:
    def test_known_code(self, tmp_path: Path) -> None:
        """A local code becomes the standard value."""
        table = {"1": "法人及非法人组织", "2": "自然人"}
        result = map_one(tmp_path, {"subject_category": 'from = "xdr_lb"\ncodes = "cat"'}, {"xdr_lb": "1"},
                         codes=codes_toml("cat", table))
        assert fields_of(result)["subject_category"] == table["1"]

    def test_numeric_cell_matches_a_text_code(self, tmp_path: Path) -> None:
        """A database integer 1 (or REAL 1.0) finds code "1"."""
        table = {"1": "法人及非法人组织"}
        for cell in (1, 1.0):
            result = map_one(tmp_path, {"subject_category": 'from = "xdr_lb"\ncodes = "cat"'}, {"xdr_lb": cell},
                             codes=codes_toml("cat", table))
            assert fields_of(result)["subject_category"] == table["1"]

    def test_unknown_code_names_the_field_and_the_table(self, tmp_path: Path) -> None:
        """An unknown code is a problem of the field that names the code and the code table."""
        result = map_one(tmp_path, {"subject_category": 'from = "xdr_lb"\ncodes = "category_table"'},
                         {"xdr_lb": "8"}, codes=codes_toml("category_table", {"1": "法人及非法人组织"}))
        message = problems_of(result)["subject_category"]
        assert "'8'" in message
        assert "category_table" in message

    def test_unknown_keep_passes_the_code_through(self, tmp_path: Path) -> None:
        """With `_unknown = "keep"`, an unknown code is kept as it is."""
        result = map_one(tmp_path, {"domain": 'from = "ly"\ncodes = "domains"'}, {"ly": "Z9"},
                         codes=codes_toml("domains", {"01": "特种设备"}, unknown="keep"))
        assert fields_of(result)["domain"] == "Z9"

    def test_unknown_keep_still_validates_the_value(self, tmp_path: Path) -> None:
        """A kept unknown code of a coded field is then refused by validation, not by the code table."""
        result = map_one(tmp_path, {"subject_category": 'from = "xdr_lb"\ncodes = "cat"'}, {"xdr_lb": "8"},
                         codes=codes_toml("cat", {"1": "法人及非法人组织"}, unknown="keep"))
        message = problems_of(result)["subject_category"]
        assert "cat" not in message
        assert "'8'" in message

    @pytest.mark.parametrize("decided", [dt.date(2021, 7, 13), dt.date(2021, 7, 14), dt.date(2021, 7, 15),
                                         dt.date(2023, 1, 1)])
    def test_effective_dates_follow_the_decision_date(self, tmp_path: Path, decided: dt.date) -> None:
        """An entry valid until 2021-07-14 applies up to that day, the one from 2021-07-15 after it."""
        result = map_one(tmp_path, {"penalty_types": 'from = "cflb"\ncodes = "pt"'},
                         {"cflb": "06", "decision_date": decided.isoformat(),
                          "valid_until": (decided + dt.timedelta(days=180)).isoformat()},
                         codes=dated_codes_toml("pt", DATED))
        assert fields_of(result)["penalty_types"] == [effective_value("06", decided)]

    def test_code_not_in_effect_on_the_decision_date(self, tmp_path: Path) -> None:
        """A code that only starts later is a problem naming the table and the date."""
        later: DatedEntries = {"07": [("降低资质等级", dt.date(2021, 7, 15), None)]}
        result = map_one(tmp_path, {"penalty_types": 'from = "cflb"\ncodes = "pt"'},
                         {"cflb": "07", "decision_date": "2021-07-01", "valid_until": "2022-01-01"},
                         codes=dated_codes_toml("pt", later))
        message = problems_of(result)["penalty_types"]
        assert "pt" in message
        assert "2021-07-01" in message

    def test_include_brings_code_tables_from_another_file(self, tmp_path: Path) -> None:
        """`include` (relative to the mapping file) makes that file's code tables usable."""
        write(tmp_path, codes_toml("cat", {"9": "个体工商户"}), "codes/local.toml")
        result = map_one(tmp_path, {"subject_category": 'from = "xdr_lb"\ncodes = "cat"'}, {"xdr_lb": "9"},
                         head='include = ["codes/local.toml"]')
        assert fields_of(result)["subject_category"] == "个体工商户"

    def test_include_of_the_shipped_code_tables(self, tmp_path: Path) -> None:
        """The shipped department code tables can be included and their values come through."""
        shipped = shipped_codes()
        result = map_one(tmp_path, {"subject_category": 'from = "xdr_lb"\ncodes = "subject_category"',
                                    "penalty_types": 'from = "cflb"\ncodes = "penalty_type"'},
                         {"xdr_lb": "1", "cflb": "03"}, head=f'include = ["{CODES_FILE.as_posix()}"]')
        fields = fields_of(result)
        assert fields["subject_category"] == shipped["subject_category"]["1"]
        assert fields["penalty_types"] == [shipped["penalty_type"]["03"]]

    def test_toml_datetime_in_a_code_table_is_refused_at_load(self, tmp_path: Path) -> None:
        """`from = 2021-07-15T00:00:00` (a date-time, not a date) is a compile error, not a crash per row."""
        codes = '[codes.pt]\n"06" = [{ value = "暂扣许可证件", from = 2021-07-15T00:00:00 }]\n'
        error = compile_errors(tmp_path, inbound_text({"penalty_types": 'from = "cflb"\ncodes = "pt"'}, codes=codes))
        assert "codes.pt.06[0].from" in paths(error)


# ---------------------------------------------------------------- inbound: required

class TestRequired:
    def test_required_canonical_field_missing_in_the_row(self, tmp_path: Path) -> None:
        """An empty required canonical field is a problem of that field."""
        result = map_one(tmp_path, changes={"violation_facts": "  "})
        assert "violation_facts" in problems_of(result)

    def test_required_true_makes_an_optional_field_mandatory(self, tmp_path: Path) -> None:
        """`required = true` rejects a row whose optional field is empty."""
        result = map_one(tmp_path, {"license_revoked": 'from = "zkdx"\nrequired = true'}, {"zkdx": ""})
        assert "license_revoked" in problems_of(result)

    def test_required_true_is_satisfied_by_a_value(self, tmp_path: Path) -> None:
        """`required = true` passes when the field has a value."""
        result = map_one(tmp_path, {"license_revoked": 'from = "zkdx"\nrequired = true'}, {"zkdx": "食品经营许可证"})
        assert fields_of(result)["license_revoked"] == "食品经营许可证"

    def test_required_if_applies_when_the_condition_holds(self, tmp_path: Path) -> None:
        """`required_if` rejects an empty field when the other field has one of the listed values."""
        body = 'from = "fr_zjhm"\nrequired_if = { subject_category = ["法人及非法人组织", "个体工商户"] }'
        result = map_one(tmp_path, {"legal_rep_id_no": body}, {"fr_zjhm": ""})
        message = problems_of(result)["legal_rep_id_no"]
        assert "subject_category" in message

    def test_required_if_is_silent_otherwise(self, tmp_path: Path) -> None:
        """`required_if` does not apply when the condition does not hold."""
        body = 'from = "fr_zjhm"\nrequired_if = { subject_category = "个体工商户" }'
        result = map_one(tmp_path, {"legal_rep_id_no": body}, {"fr_zjhm": ""})
        assert "legal_rep_id_no" not in fields_of(result)

    def test_required_if_on_an_unknown_field_is_a_compile_error(self, tmp_path: Path) -> None:
        """A condition on a field the dataset does not have (a typo) can never hold: it must be refused."""
        body = 'from = "fr_zjhm"\nrequired_if = { subjct_category = "个体工商户" }'
        error = compile_errors(tmp_path, inbound_text({"legal_rep_id_no": body}))
        assert any(p.startswith("fields.legal_rep_id_no.required_if") for p in paths(error))


# ---------------------------------------------------------------- inbound: operation

OPERATION_TABLE = '[operation]\nfrom = "zt"\ncodes = "status_operation"\ndefault = "upsert"\n'


class TestOperation:
    @pytest.mark.parametrize("code", sorted(shipped_codes()["status_operation"]))
    def test_status_column_sets_the_operation(self, tmp_path: Path, code: str) -> None:
        """Each status code of the shipped table gives the operation that table names."""
        result = map_one(tmp_path, changes={"zt": code}, operation=OPERATION_TABLE,
                         head=f'include = ["{CODES_FILE.as_posix()}"]')
        assert result.record is not None
        assert result.record.operation == Operation(shipped_codes()["status_operation"][code])

    @pytest.mark.parametrize("cell", ["", None, "  "])
    def test_blank_status_uses_the_default(self, tmp_path: Path, cell: Any) -> None:
        """An empty status column gives the default operation."""
        result = map_one(tmp_path, changes={"zt": cell}, head=f'include = ["{CODES_FILE.as_posix()}"]',
                         operation=OPERATION_TABLE.replace('"upsert"', '"withdraw"'))
        assert result.record is not None
        assert result.record.operation is Operation.WITHDRAW

    def test_unknown_status_is_a_problem_of_the_operation(self, tmp_path: Path) -> None:
        """An unknown status code rejects the row with a problem named `operation` naming the table."""
        result = map_one(tmp_path, changes={"zt": "7"}, head=f'include = ["{CODES_FILE.as_posix()}"]',
                         operation=OPERATION_TABLE)
        assert "status_operation" in problems_of(result)["operation"]

    def test_status_mapped_to_a_non_operation_is_a_problem(self, tmp_path: Path) -> None:
        """A code table value that is not an operation is reported, not raised."""
        codes = codes_toml("ops", {"0": "upsert", "9": "delete"})
        result = map_one(tmp_path, changes={"zt": "9"}, codes=codes,
                         operation='[operation]\nfrom = "zt"\ncodes = "ops"\n')
        assert "operation" in problems_of(result)

    def test_without_operation_table_every_row_is_an_upsert(self, tmp_path: Path) -> None:
        """No [operation] table: rows are upserts."""
        result = map_one(tmp_path, changes={"zt": "1"})
        assert result.record is not None
        assert result.record.operation is Operation.UPSERT


# ---------------------------------------------------------------- inbound: the mapped row

class TestMappedRow:
    def test_natural_key_is_decision_number_and_authority_code(self, tmp_path: Path) -> None:
        """The record key joins the decision number and the deciding body's code."""
        result = map_one(tmp_path)
        assert result.record is not None
        expected = f"{PENALTY_ROW['decision_no']}|{PENALTY_ROW['authority_code']}"
        assert result.record.key == result.key == expected

    def test_rejected_row_still_has_its_key(self, tmp_path: Path) -> None:
        """A rejected row keeps the key as far as it could be read (for quarantine and replay)."""
        result = map_one(tmp_path, changes={"decision_date": "someday"})
        assert result.record is None
        assert result.key == f"{PENALTY_ROW['decision_no']}|{PENALTY_ROW['authority_code']}"

    def test_every_problem_names_a_field(self, tmp_path: Path) -> None:
        """A row with several faults lists each, every one under a field name (or `operation`)."""
        result = map_one(tmp_path, {"subject_category": 'from = "xdr_lb"\ncodes = "cat"'},
                         {"xdr_lb": "8", "decision_date": "2021/13/40", "content": "", "uscc": "91230500MA1B3N1N2X"},
                         codes=codes_toml("cat", {"1": "法人及非法人组织"}))
        problems = problems_of(result)
        assert {"subject_category", "decision_date", "content", "uscc"} <= problems.keys()
        assert problems.keys() <= {*PENALTY.by_name(), "operation"}

    def test_valid_row_has_no_problems(self, tmp_path: Path) -> None:
        """The base row is valid: the test fixtures themselves are sound."""
        fields = fields_of(map_one(tmp_path))
        assert fields["decision_date"] == dt.date.fromisoformat(PENALTY_ROW["decision_date"])
        assert fields["penalty_types"] == [PENALTY_ROW["penalty_types"]]


# ---------------------------------------------------------------- outbound

def sample_value(spec: FieldSpec, index: int) -> FieldValue:
    """A distinct canonical value for one field, by kind (validation does not run on the way out)."""
    if spec.kind == "date":
        return dt.date(2020, 1, 1) + dt.timedelta(days=31 * index)
    if spec.kind == "decimal":
        return Decimal(index) / Decimal(8)
    if spec.kind == "list":
        return list(spec.codes[:3])
    if spec.kind == "code":
        return spec.codes[index % len(spec.codes)]
    return f"{spec.name}-{index}"


def full_record(dataset: Dataset, operation: Operation = Operation.UPSERT) -> Record:
    fields = {spec.name: sample_value(spec, i) for i, spec in enumerate(dataset.fields)}
    return Record(dataset.name, "k|1", operation, fields, version=3)


def identifier(spec: FieldSpec) -> str:
    """The standard identifier a canonical field's label names (its last word)."""
    return spec.label.split()[-1]


def rendered(value: FieldValue) -> str:
    """What the 2019 mappings promise: ISO dates, ';'-joined lists, 6 decimal places."""
    if isinstance(value, dt.date):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, list):
        return ";".join(value)
    if isinstance(value, Decimal):
        return str(value.quantize(Decimal(1).scaleb(-6)))
    return str(value)


def load_outbound(path: Path) -> OutboundMapping:
    mapping = load_mapping(path)
    assert isinstance(mapping, OutboundMapping)
    return mapping


def status_codes(path: Path) -> dict[str, str]:
    with path.open("rb") as handle:
        table: dict[str, str] = tomllib.load(handle)["codes"]["status"]
    return table


OUTBOUND = [(PENALTY_OUT, PENALTY, STANDARD_CF), (LICENSE_OUT, LICENSE, STANDARD_XK)]


class TestOutbound:
    @pytest.mark.parametrize(("path", "dataset", "standard"), OUTBOUND, ids=["penalty", "license"])
    def test_2019_mapping_produces_every_standard_name(self, path: Path, dataset: Dataset,
                                                       standard: tuple[str, ...]) -> None:
        """A fully filled record maps to all the 2019 identifiers."""
        out = load_outbound(path).map_record(full_record(dataset))
        assert set(standard) <= out.keys()

    @pytest.mark.parametrize(("path", "dataset", "standard"), OUTBOUND, ids=["penalty", "license"])
    def test_each_standard_name_carries_its_canonical_field(self, path: Path, dataset: Dataset,
                                                            standard: tuple[str, ...]) -> None:
        """CF_*/XK_* names hold the canonical field whose label names them, rendered by the 2019 rules."""
        record = full_record(dataset)
        out = load_outbound(path).map_record(record)
        by_identifier = {identifier(spec): spec.name for spec in dataset.fields}
        checked = [name for name in standard if name in by_identifier]
        assert len(checked) >= len(standard) - 1  # all but the status, which comes from the operation
        for name in checked:
            assert out[name] == rendered(record.fields[by_identifier[name]]), name

    def test_dates_are_formatted(self) -> None:
        """Dates leave as YYYY-MM-DD text."""
        record = full_record(PENALTY)
        out = load_outbound(PENALTY_OUT).map_record(record)
        decided = record.fields["decision_date"]
        assert isinstance(decided, dt.date)
        assert out["CF_JDRQ"] == f"{decided.year:04d}-{decided.month:02d}-{decided.day:02d}"

    def test_lists_are_joined_with_semicolons(self) -> None:
        """处罚类别 with several types becomes one ';'-joined string."""
        types = ["警告", "罚款", "其他-责令改正"]
        record = Record("penalty", "k", Operation.UPSERT, {"penalty_types": types})
        assert load_outbound(PENALTY_OUT).map_record(record)["CF_CFLB"] == ";".join(types)

    @pytest.mark.parametrize("amount", ["0.5", "12.3456789", "3", "0.0001"])
    def test_decimals_have_six_places(self, amount: str) -> None:
        """Amounts in 万元 are written with exactly 6 decimal places."""
        record = Record("penalty", "k", Operation.UPSERT, {"fine_wan": Decimal(amount),
                                                           "confiscated_wan": Decimal(amount)})
        out = load_outbound(PENALTY_OUT).map_record(record)
        for name in ("CF_NR_FK", "CF_NR_WFFF"):
            _, _, places = out[name].partition(".")
            assert len(places) == 6
            assert Decimal(out[name]) == Decimal(amount).quantize(Decimal("0.000001"))

    @pytest.mark.parametrize("operation", list(Operation))
    def test_operation_becomes_cf_zt_via_the_code_table(self, operation: Operation) -> None:
        """@operation goes through the mapping's status table into CF_ZT."""
        out = load_outbound(PENALTY_OUT).map_record(full_record(PENALTY, operation))
        assert out["CF_ZT"] == status_codes(PENALTY_OUT)[operation.value]

    @pytest.mark.parametrize("operation", list(Operation))
    def test_operation_becomes_xk_zt_via_the_code_table(self, operation: Operation) -> None:
        """@operation goes through the licence mapping's status table into XK_ZT."""
        out = load_outbound(LICENSE_OUT).map_record(full_record(LICENSE, operation))
        assert out["XK_ZT"] == status_codes(LICENSE_OUT)[operation.value]

    def test_empty_fields_are_left_out(self) -> None:
        """Fields the record does not have produce no target field."""
        record = Record("penalty", "k", Operation.UPSERT, {"subject_name": "某公司"})
        out = load_outbound(PENALTY_OUT).map_record(record)
        assert out == {"CF_XDR_MC": "某公司", "CF_ZT": status_codes(PENALTY_OUT)["upsert"]}

    def test_fields_override_replaces_the_record_fields(self) -> None:
        """`fields=` (e.g. masked ID numbers) is mapped instead of the record's own fields."""
        record = Record("penalty", "k", Operation.UPSERT, {"id_no": "11010519491231002X"})
        out = load_outbound(PENALTY_OUT).map_record(record, {"id_no": "110105********002X"})
        assert out["CF_XDR_ZJHM"] == "110105********002X"

    def test_custom_date_format_and_special_sources(self, tmp_path: Path) -> None:
        """An outbound field may use its own date format and read @key / @version / @dataset."""
        text = ('[mapping]\nkind = "outbound"\ndataset = "penalty"\ntable_code = "XZCF"\n'
                + fields_text({"JDRQ": 'from = "decision_date"\ndate_format = "%Y/%m/%d"', "KEY": 'from = "@key"',
                               "VER": 'from = "@version"', "DS": 'from = "@dataset"', "SRC": 'value = "gateway"'}))
        record = full_record(PENALTY)
        out = load_outbound(write(tmp_path, text)).map_record(record)
        decided = record.fields["decision_date"]
        assert isinstance(decided, dt.date)
        assert out == {"JDRQ": decided.strftime("%Y/%m/%d"), "KEY": record.key, "VER": record.version,
                       "DS": record.dataset, "SRC": "gateway"}

    def test_outbound_unit_converts_wan_to_yuan(self, tmp_path: Path) -> None:
        """`unit = "wan_to_yuan"` on an outbound field converts 万元 to 元 for targets that want 元."""
        text = ('[mapping]\nkind = "outbound"\ndataset = "penalty"\ntable_code = "XZCF"\n'
                + fields_text({"FKJE_YUAN": 'from = "fine_wan"\nunit = "wan_to_yuan"\ndecimals = 2'}))
        record = Record("penalty", "k", Operation.UPSERT, {"fine_wan": Decimal("0.5")})
        out = load_outbound(write(tmp_path, text)).map_record(record)
        assert Decimal(out["FKJE_YUAN"]) == Decimal("0.5") * 10000

    def test_table_code_and_version(self) -> None:
        """The shipped mappings carry the platform's table codes."""
        assert (load_outbound(PENALTY_OUT).table_code, load_outbound(LICENSE_OUT).table_code) == ("XZCF", "XZXK")


# ---------------------------------------------------------------- compile errors

OUTBOUND_HEAD = '[mapping]\nkind = "outbound"\ndataset = "penalty"\ntable_code = "XZCF"\n'


class TestCompileErrors:
    def test_unknown_field_name(self, tmp_path: Path) -> None:
        """A field the dataset does not have is named with its TOML path, and the real fields are listed."""
        error = compile_errors(tmp_path, inbound_text({"subjct_name": 'from = "x"'}))
        problem = next(p for p in error.problems if p.path == "fields.subjct_name")
        assert "subject_name" in problem.message

    def test_unknown_transform(self, tmp_path: Path) -> None:
        """An unknown transform step is named at fields.NAME.transform."""
        error = compile_errors(tmp_path, inbound_text({"decision_no": 'from = "d"\ntransform = ["strip", "shout"]'}))
        problem = next(p for p in error.problems if p.path == "fields.decision_no.transform")
        assert "shout" in problem.message

    def test_unknown_code_table(self, tmp_path: Path) -> None:
        """A code table that is not defined is named at fields.NAME.codes."""
        error = compile_errors(tmp_path, inbound_text({"subject_category": 'from = "lb"\ncodes = "nosuch"'}))
        problem = next(p for p in error.problems if p.path == "fields.subject_category.codes")
        assert "nosuch" in problem.message

    def test_bad_unit(self, tmp_path: Path) -> None:
        """An unknown unit is named at fields.NAME.unit."""
        error = compile_errors(tmp_path, inbound_text({"fine_wan": 'from = "fkje"\nunit = "jin"'}))
        problem = next(p for p in error.problems if p.path == "fields.fine_wan.unit")
        assert "jin" in problem.message

    def test_bad_unit_in_outbound_mapping(self, tmp_path: Path) -> None:
        """An unknown unit on an outbound field is refused too."""
        error = compile_errors(tmp_path, OUTBOUND_HEAD + fields_text({"FK": 'from = "fine_wan"\nunit = "jin"'}))
        assert "fields.FK.unit" in paths(error)

    def test_missing_from_and_value(self, tmp_path: Path) -> None:
        """A field table with neither `from` nor `value` is named."""
        error = compile_errors(tmp_path, inbound_text({"subject_name": 'default = "x"'}))
        problem = next(p for p in error.problems if p.path == "fields.subject_name")
        assert "from" in problem.message and "value" in problem.message

    def test_unknown_key_in_field_table(self, tmp_path: Path) -> None:
        """A misspelt key (`form` for `from`) is reported with the field's path."""
        error = compile_errors(tmp_path, inbound_text({"remarks": 'from = "bz"\ndefualt = "无"'}))
        problem = next(p for p in error.problems if p.path == "fields.remarks")
        assert "defualt" in problem.message

    def test_missing_required_canonical_field(self, tmp_path: Path) -> None:
        """A required canonical field the mapping never fills is named."""
        error = compile_errors(tmp_path, inbound_text({"legal_basis": None}))
        problem = next(p for p in error.problems if p.path == "fields")
        assert "legal_basis" in problem.message

    def test_outbound_from_unknown_canonical_field(self, tmp_path: Path) -> None:
        """An outbound `from` that is not a canonical field nor a special one is named."""
        error = compile_errors(tmp_path, OUTBOUND_HEAD + fields_text({"CF_XDR_MC": 'from = "subjct_name"'}))
        problem = next(p for p in error.problems if p.path == "fields.CF_XDR_MC.from")
        assert "subjct_name" in problem.message

    def test_missing_table_code(self, tmp_path: Path) -> None:
        """An outbound mapping needs `table_code`."""
        text = '[mapping]\nkind = "outbound"\ndataset = "penalty"\n' + fields_text({"A": 'from = "subject_name"'})
        assert "mapping.table_code" in paths(compile_errors(tmp_path, text))

    def test_unknown_kind_and_dataset(self, tmp_path: Path) -> None:
        """A wrong kind and an unknown dataset are both named."""
        text = '[mapping]\nkind = "sideways"\ndataset = "parking"\n' + fields_text({"A": 'from = "a"'})
        error = compile_errors(tmp_path, text)
        assert {"mapping.kind", "mapping.dataset"} <= paths(error)

    def test_not_utf8_names_the_byte(self, tmp_path: Path) -> None:
        """A GBK-saved file is refused: the message says it is not UTF-8 and names the first bad byte."""
        text = inbound_text({"subject_name": 'from = "名称"'})
        data = text.encode("gbk")
        error = compile_errors(tmp_path, data)
        message = str(error)
        assert "UTF-8" in message
        assert f"byte {data.index('名'.encode('gbk'))}" in message
        assert error.source == str(tmp_path / "mapping.toml")

    def test_invalid_toml_has_the_line(self, tmp_path: Path) -> None:
        """A TOML syntax error is reported with its line."""
        lines = inbound_text().splitlines()
        broken = len(lines) + 1
        error = compile_errors(tmp_path, "\n".join([*lines, "[fields.remarks", 'from = "bz"']) + "\n")
        assert "invalid TOML" in str(error)
        assert f"line {broken}" in str(error)

    def test_all_problems_are_listed_together(self, tmp_path: Path) -> None:
        """Several mistakes in one file are all reported in one ConfigError, each with its path."""
        text = inbound_text({
            "subjct_name": 'from = "x"',
            "decision_no": 'from = "d"\ntransform = ["shout"]',
            "subject_category": 'from = "lb"\ncodes = "nosuch"',
            "fine_wan": 'from = "fkje"\nunit = "jin"',
            "remarks": 'default = "无"',
        })
        error = compile_errors(tmp_path, text)
        assert {"fields.subjct_name", "fields.decision_no.transform", "fields.subject_category.codes",
                "fields.fine_wan.unit", "fields.remarks"} <= paths(error)
        assert str(error).startswith(f"{tmp_path / 'mapping.toml'}: ")

    def test_code_table_problem_does_not_hide_field_problems(self, tmp_path: Path) -> None:
        """A broken code table entry and a broken field are reported together."""
        codes = '[codes.pt]\n"06" = [{ value = "暂扣许可证件", from = "2021-07-15" }]\n'
        error = compile_errors(tmp_path, inbound_text({"subjct_name": 'from = "x"'}, codes=codes))
        assert {"codes.pt.06[0].from", "fields.subjct_name"} <= paths(error)

    def test_missing_include_file(self, tmp_path: Path) -> None:
        """An include that cannot be read is named at mapping.include[N] with the file."""
        error = compile_errors(tmp_path, inbound_text(head='include = ["codes/missing.toml"]'))
        problem = next(p for p in error.problems if p.path == "mapping.include[0]")
        assert "missing.toml" in problem.message

    def test_include_given_as_one_string(self, tmp_path: Path) -> None:
        """`include = "file"` (a string, not a list) either works or is one problem, never one per character."""
        write(tmp_path, codes_toml("cat", {"9": "个体工商户"}), "codes/local.toml")
        text = inbound_text({"subject_category": 'from = "xdr_lb"\ncodes = "cat"'}, head='include = "codes/local.toml"')
        error: ConfigError | None = None
        try:
            mapping = compile_inbound(tmp_path, text)
        except ConfigError as exc:
            error = exc
        if error is not None:
            assert [p.path for p in error.problems] == ["mapping.include"], f"{len(error.problems)} problems"
        else:
            row = {**PENALTY_ROW, "xdr_lb": "9"}
            assert fields_of(mapping.map_row(row, TODAY))["subject_category"] == "个体工商户"

    def test_bad_code_table_entry(self, tmp_path: Path) -> None:
        """A code table entry that is neither a string nor a list of {value, from, until} is named."""
        codes = '[codes.cat]\n"1" = 1\n"2" = [{ from = 2021-01-01 }]\n_unknown = "maybe"\n'
        error = compile_errors(tmp_path, inbound_text(codes=codes))
        assert {"codes.cat.1", "codes.cat.2[0].value", "codes.cat._unknown"} <= paths(error)


EXTRA_FIELDS = {name: f'from = "{name}"' for name in ("remarks", "id_type", "id_no")}


class TestControlCharacters:
    @pytest.mark.parametrize(("name", "value", "code", "position"), [
        ("subject_name", "苏州\u0000测试有限公司", "U+0000", 3),
        ("decision_no", "\x1b[31m苏市监罚〔2024〕17号", "U+001B", 1),
        ("legal_rep", "张三\x07", "U+0007", 3),
        ("authority", "苏州市\x7f市场监督管理局", "U+007F", 4),
        ("content", "罚款\x855000元", "U+0085", 3),
        ("uscc", COMPANY_USCC[:5] + "\x00" + COMPANY_USCC[6:], "U+0000", 6),
        ("subject_category", "自然人\x00", "U+0000", 4),
        ("penalty_types", "罚款;其他-\x1b说明", "U+001B", 4),
    ])
    def test_a_control_character_is_refused_with_field_and_position(self, tmp_path: Path, name: str, value: str,
                                                                     code: str, position: int) -> None:
        """NUL, ESC, BEL, DEL and C1 are refused naming the field, the character and where (issue 17, 4)."""
        message = problems_of(map_both(tmp_path, changes={name: value}))[name]
        assert code in message and f"position {position}" in message

    @pytest.mark.parametrize("name", ["violation_facts", "content", "legal_basis", "remarks"])
    def test_tab_and_line_breaks_are_allowed_in_free_text(self, tmp_path: Path, name: str) -> None:
        """A paragraph may hold TAB, LF and CR; the value is kept as it is (inside; the ends are stripped)."""
        value = "第一条\t说明\r\n第二条\n结束"
        assert fields_of(map_both(tmp_path, EXTRA_FIELDS, {name: value}))[name] == value

    @pytest.mark.parametrize(("name", "value"), [
        ("subject_name", "苏州\t测试有限公司"), ("decision_no", "苏市监罚\n〔2024〕17号"),
        ("id_no", "11010519491231002\r1")])
    def test_tab_and_line_breaks_are_refused_in_names_and_numbers(self, tmp_path: Path, name: str, value: str) -> None:
        """A name, a document number or an ID number is one line."""
        changes = {name: value, "subject_category": "自然人", "id_type": "身份证"} if name == "id_no" else {name: value}
        assert "control character" in problems_of(map_both(tmp_path, EXTRA_FIELDS, changes))[name]

    def test_the_message_does_not_quote_an_id_number(self, tmp_path: Path) -> None:
        """The problem of an ID number with a control character names the position, never the digits."""
        changes = {"subject_category": "自然人", "id_type": "身份证", "id_no": "110105\x00194912310021"}
        message = problems_of(map_both(tmp_path, EXTRA_FIELDS, changes))["id_no"]
        assert "110105" not in message and "position 7" in message

    @pytest.mark.parametrize("value", ["苏州\u3000测试有限公司", "苏州\u00a0测试", "Zoë GmbH"])
    def test_other_unprintable_spaces_are_not_control_characters(self, tmp_path: Path, value: str) -> None:
        """An ideographic or no-break space is text (str.isprintable is only the quick test)."""
        assert fields_of(map_both(tmp_path, changes={"subject_name": value}))["subject_name"] == value


# An option of a field table with a value of the wrong type: (field, field table, TOML path of the problem).
WRONG_TYPES = [
    ("decision_date", 'from = "jdrq"\ndate_format = 42', "fields.decision_date.date_format"),
    ("decision_date", 'from = "jdrq"\ndate_format = [42]', "fields.decision_date.date_format"),
    ("decision_date", 'from = "jdrq"\ndate_format = []', "fields.decision_date.date_format"),
    ("fine_wan", 'from = "fkje"\nunit = ["yuan_to_wan"]', "fields.fine_wan.unit"),
    ("fine_wan", 'from = "fkje"\nunit = 10000', "fields.fine_wan.unit"),
    ("penalty_types", 'from = "cflb"\nsplit = ""', "fields.penalty_types.split"),
    ("penalty_types", 'from = "cflb"\nsplit = 1', "fields.penalty_types.split"),
    ("subject_category", 'from = "lb"\ncodes = ["cat"]', "fields.subject_category.codes"),
    ("decision_no", 'from = "d"\ntransform = 5', "fields.decision_no.transform"),
    ("decision_no", 'from = "d"\ntransform = [1, "strip"]', "fields.decision_no.transform"),
    ("remarks", "from = 3", "fields.remarks.from"),
    ("remarks", 'from = "bz"\nrequired = "yes"', "fields.remarks.required"),
    ("remarks", 'from = "bz"\ndefault = { a = 1 }', "fields.remarks.default"),
    ("remarks", "value = { a = 1 }", "fields.remarks.value"),
    ("remarks", 'value = "无\\u0000"', "fields.remarks.value"),  # a control character written as a TOML escape
    ("remarks", 'from = "bz"\ndefault = "\\u001b[2J"', "fields.remarks.default"),
    ("remarks", 'from = "bz"\ndescription = 1', "fields.remarks.description"),
    ("legal_rep", 'from = "fr"\nrequired_if = { subject_category = 1 }',
     "fields.legal_rep.required_if.subject_category"),
]

OUTBOUND_WRONG_TYPES = [
    ("CF_NR_FK", 'from = "fine_wan"\ndecimals = "six"', "fields.CF_NR_FK.decimals"),
    ("CF_NR_FK", 'from = "fine_wan"\ndecimals = 2.5', "fields.CF_NR_FK.decimals"),
    ("CF_NR_FK", 'from = "fine_wan"\ndecimals = -1', "fields.CF_NR_FK.decimals"),
    ("CF_JDRQ", 'from = "decision_date"\ndate_format = 42', "fields.CF_JDRQ.date_format"),
    ("CF_CFLB", 'from = "penalty_types"\njoin = 1', "fields.CF_CFLB.join"),
    ("CF_CFLB", 'from = "penalty_types"\ntransform = {}', "fields.CF_CFLB.transform"),
    ("CF_ZT", 'value = "0\\u0000"', "fields.CF_ZT.value"),
]


class TestOptionTypes:
    @pytest.mark.parametrize(("name", "body", "where"), WRONG_TYPES, ids=[w[2] + ":" + w[1].split("\n")[-1]
                                                                         for w in WRONG_TYPES])
    def test_wrong_type_in_an_inbound_field_is_a_config_error(self, tmp_path: Path, name: str, body: str,
                                                                where: str) -> None:
        """An option of the wrong type is a problem at its TOML path, not a traceback (issue 17, 10)."""
        codes = codes_toml("cat", {"1": "法人及非法人组织"})
        assert where in paths(compile_errors(tmp_path, inbound_text({name: body}, codes=codes)))

    @pytest.mark.parametrize(("name", "body", "where"), OUTBOUND_WRONG_TYPES, ids=[w[2] for w in OUTBOUND_WRONG_TYPES])
    def test_wrong_type_in_an_outbound_field_is_a_config_error(self, tmp_path: Path, name: str, body: str,
                                                                 where: str) -> None:
        """The outbound options too: decimals, date_format, join, transform."""
        assert where in paths(compile_errors(tmp_path, OUTBOUND_HEAD + fields_text({name: body})))

    @pytest.mark.parametrize(("table", "where"), [('from = 1', "operation.from"),
                                                  ('from = "zt"\ndefault = "delete"', "operation.default"),
                                                  ('from = "zt"\ncodes = 2', "operation.codes")])
    def test_wrong_operation_table(self, tmp_path: Path, table: str, where: str) -> None:
        """`[operation]` options are checked the same way, and its default must be an operation."""
        assert where in paths(compile_errors(tmp_path, inbound_text(operation=f"[operation]\n{table}")))

    @pytest.mark.parametrize(("head", "where"), [
        ('table_code = 5', "mapping.table_code"),
        ('table_code = "XZCF"\ntable_version = 2019', "mapping.table_version")])
    def test_wrong_outbound_head(self, tmp_path: Path, head: str, where: str) -> None:
        """The outbound `[mapping]` head: table_code and table_version are text."""
        text = f'[mapping]\nkind = "outbound"\ndataset = "penalty"\n{head}\n' + fields_text({"A": 'from = "uscc"'})
        assert where in paths(compile_errors(tmp_path, text))

    def test_mapping_test_with_no_such_today_is_a_usage_error(self, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
        """`mapping test --today 2026-02-30`: a usage error naming the option (exit 2), not a traceback."""
        from gateway.cli import main

        sample = write(tmp_path, "jdrq\n2021-07-15\n", "sample.csv")
        with pytest.raises(SystemExit) as stopped:
            main(["mapping", "test", str(write(tmp_path, inbound_text())), "--sample", str(sample), "--today",
                  "2026-02-30"])
        assert stopped.value.code == 2 and "--today" in capsys.readouterr().err

    def test_mapping_test_command_reports_it(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`credit-gateway mapping test` prints the problem with its path and exits 2, no traceback."""
        from gateway.cli import main

        path = write(tmp_path, inbound_text({"decision_date": 'from = "jdrq"\ndate_format = 42'}))
        sample = write(tmp_path, "jdrq\n2021-07-15\n", "sample.csv")
        assert main(["mapping", "test", str(path), "--sample", str(sample)]) == 2
        err = capsys.readouterr().err
        assert "fields.decision_date.date_format" in err and "Traceback" not in err


class TestShippedMappings:
    @pytest.mark.parametrize("path", sorted(MAPPINGS.glob("*.toml")), ids=lambda p: p.name)
    def test_shipped_mapping_loads(self, path: Path) -> None:
        """Every mapping file in mappings/ compiles and names its dataset. For 双公示 and sanction feedback,
        department-* are inbound and platform-* outbound; it is the other way round for what the platform sends
        to the department (credit lists, sanction cases)."""
        mapping = load_mapping(path)
        towards_department = mapping.dataset.name in ("credit_list", "sanction_case")
        inbound = path.name.startswith("platform-" if towards_department else "department-")
        assert isinstance(mapping, InboundMapping if inbound else OutboundMapping)
        assert mapping.dataset.name.replace("_", "-") in path.stem or mapping.dataset.name in path.stem

    def test_there_are_shipped_mappings(self) -> None:
        """The parametrised test above has files to check."""
        assert len(list(MAPPINGS.glob("*.toml"))) >= 4

    def test_shipped_penalty_mapping_on_a_department_row(self) -> None:
        """The shipped inbound penalty mapping turns a local row (元, local codes, slashes) into canonical fields."""
        mapping = load_mapping(MAPPINGS / "department-penalty.toml")
        assert isinstance(mapping, InboundMapping)
        codes = shipped_codes()
        row = {"cfjdswh": " 苏市监罚〔2024〕17号 ", "xdr_mc": "苏州示例科技有限公司", "xdr_lb": "1",
               "tyshxydm": fullwidth(COMPANY_USCC), "fddbr": "张三", "wfxwlx": "x", "wfss": "y", "cfyj": "z",
               "cflb": "03；01", "cfnr": "罚款5000元", "fkje": 5000.0, "jdrq": "2024/03/01", "cfyxq": "2024/09/01",
               "cfjg": "苏州市市场监督管理局", "cfjgdm": ORGAN_USCC, "zt": "1"}
        result = mapping.map_row(row, TODAY)
        fields = fields_of(result)
        assert fields["uscc"] == COMPANY_USCC
        assert fields["penalty_types"] == [codes["penalty_type"]["03"], codes["penalty_type"]["01"]]
        assert fields["fine_wan"] == Decimal("0.5")
        assert fields["decision_date"] == dt.date(2024, 3, 1)
        assert result.record is not None
        assert result.record.operation == Operation(codes["status_operation"]["1"])
        assert result.record.key == f"苏市监罚〔2024〕17号|{ORGAN_USCC}"


class TestFullWidthIdNumbers:
    def test_a_full_width_id_number_maps_to_the_same_record(self, tmp_path: Path) -> None:
        """An ID number typed in full-width digits (３２０５…) maps to the same canonical value, so the same
        person is one subject (and one key), not a quarantined row or a second person."""
        from tests.support.helpers import make_department_db, penalty_mapping, read_rows

        sample = make_department_db(tmp_path, penalties=200)
        rows = [r for r in read_rows(sample.path) if r["id"] in sample.valid_ids("xzcf") and r.get("zjhm")]
        assert rows, "the sample has natural persons with ID numbers"
        row = rows[0]
        wide = {**row, "zjhm": "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in row["zjhm"])}
        assert wide["zjhm"] != row["zjhm"]
        today = dt.date(2026, 11, 21)
        plain, fullwidth = penalty_mapping().map_row(row, today), penalty_mapping().map_row(wide, today)
        assert fullwidth.record is not None, fullwidth.problems
        assert plain.record is not None and fullwidth.record.fields["id_no"] == plain.record.fields["id_no"]
        assert fullwidth.key == plain.key
