"""Tests for the national 互联网+监管 supervision datasets (gateway.domain.supervision) and their validation rules.

Each test breaks one thing of a valid 行政检查行为 / 行政处罚行为 and checks that exactly that field is reported,
and the department mappings (mappings/department-*.toml) turn the sample tables into records or quarantine
problems naming the field.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from gateway.domain.datasets import get_dataset, natural_key, validate
from gateway.domain.regions import check_region, is_province, shipped_regions
from gateway.domain.supervision import ENFORCEMENT, INSPECTION, SUPERVISION, USCC_DOCUMENT
from gateway.mapping import InboundMapping, load_mapping
from gateway.testing.national import BODY, BREAKS, CHECK_LIST_CODE, ITEM_CODE, TABLES, late_report, supervision_rows
from tests.support.helpers import MAPPINGS

TODAY = dt.date(2025, 6, 1)
COMPANY_USCC = "91230500MA1B3N1N2M"  # domain.md §8


def inspection(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "item_code": ITEM_CODE, "check_list_code": CHECK_LIST_CODE, "action_name": "日常检查",
        "action_code": "JCXW-1", "implementing_body": BODY[0], "implementing_body_code": BODY[1],
        "supervised_object": "双鸭山智慧城市运营有限公司", "subject_name": "双鸭山智慧城市运营有限公司",
        "subject_nature": "法人及非法人组织", "subject_doc_type": USCC_DOCUMENT, "subject_code": COMPANY_USCC,
        "area_number": "230500", "check_form": "日常检查", "check_type": "现场检查", "check_result": "未发现问题",
        "check_date": dt.date(2025, 3, 3), "inspectors": "王某，陈某", "submitted_date": dt.date(2025, 3, 4)}
    return fields | changes


def enforcement(**changes: Any) -> dict[str, Any]:
    base = {k: v for k, v in inspection().items() if k in ENFORCEMENT.by_name()}
    fields = base | {"action_code": "CFXW-1", "action_name": "处罚", "inspection_code": "JCXW-1",
                     "violation_facts": "未按规定公示年度报告", "legal_basis": "《市场主体登记管理条例》",
                     "decision_no": "苏市监罚〔2025〕1号", "decision_date": dt.date(2025, 3, 10),
                     "penalty_kinds": ["罚款"], "submitted_date": dt.date(2025, 3, 11)}
    return fields | changes


def paths(dataset: Any, fields: dict[str, Any]) -> list[str]:
    return [p.path for p in validate(dataset, fields, TODAY)]


class TestSupervisionDatasets:
    def test_valid_records_have_no_problem(self) -> None:
        """The sample inspection and the penalty that followed it are valid."""
        assert validate(INSPECTION, inspection(), TODAY) == []
        assert validate(ENFORCEMENT, enforcement(), TODAY) == []

    def test_the_four_actions_are_registered_with_action_and_body_keys(self) -> None:
        """inspection, enforcement, coercion, other_action: keyed by action code and implementing body."""
        assert [get_dataset(d.name) for d in SUPERVISION] == list(SUPERVISION)
        assert {d.key_fields for d in SUPERVISION} == {("action_code", "implementing_body_code")}
        assert natural_key(INSPECTION, inspection()) == ["JCXW-1", BODY[1]]

    @pytest.mark.parametrize("code", ["3205000100100", "320500010010011", "3205000100100A",
                                      "３２０５０００１００１００１"])
    def test_item_code_is_14_digits(self, code: str) -> None:
        """监管事项目录编码: exactly 14 ASCII digits."""
        assert paths(INSPECTION, inspection(item_code=code)) == ["item_code"]

    @pytest.mark.parametrize(("code", "why"), [
        (BODY[1] + "6" + "0001", "19th character"), (BODY[1] + "0", "19th character"),
        (BODY[1][:17] + "0" + "1", "first 18 characters"), (BODY[1], "at least 19")])
    def test_check_list_code_is_a_uscc_and_1_to_5(self, code: str, why: str) -> None:
        """检查实施清单编码: a valid USCC of 18 characters, then a 19th character 1–5."""
        problems = validate(INSPECTION, inspection(check_list_code=code), TODAY)
        assert [p.path for p in problems] == ["check_list_code"] and why in problems[0].message

    @pytest.mark.parametrize("digit", "12345")
    def test_each_19th_character_1_to_5_passes(self, digit: str) -> None:
        assert paths(INSPECTION, inspection(check_list_code=BODY[1] + digit)) == []

    @pytest.mark.parametrize("code", ["329999", "32050", "3205055", "ABCDEF"])
    def test_area_number_is_in_the_gbt2260_table(self, code: str) -> None:
        """行政区划代码: 6 digits that the shipped table holds."""
        assert paths(INSPECTION, inspection(area_number=code)) == ["area_number"]

    def test_abolished_codes_are_accepted_for_history(self) -> None:
        """A history load carries codes of its time: 320502 (沧浪区, until 2012) is in the table."""
        assert shipped_regions()["320502"].until == 2012
        assert check_region("320502") is None and check_region("320508") is None
        assert is_province("320000") and not is_province("320500")
        assert len([c for c in shipped_regions() if c.endswith("0000")]) == 34

    @pytest.mark.parametrize(("field", "value"), [
        ("check_form", "随便查查"), ("check_type", "x"), ("check_result", "良好"), ("subject_nature", "公司"),
        ("subject_doc_type", "军官证"), ("object_type", "外星人")])
    def test_dictionary_fields_take_only_their_values(self, field: str, value: str) -> None:
        assert paths(INSPECTION, inspection(**{field: value})) == [field]

    def test_subject_code_is_checked_by_its_document_type(self) -> None:
        """行政相对人编码: a USCC for 统一社会信用代码, an ID number (with its check) for 身份证."""
        assert paths(INSPECTION, inspection(subject_code="91110000600037341N")) == ["subject_code"]
        person = {"subject_nature": "自然人", "subject_doc_type": "身份证"}
        assert paths(INSPECTION, inspection(subject_code="11010519491231002X", **person)) == []
        assert paths(INSPECTION, inspection(subject_code="110105194912310021", **person)) == ["subject_code"]

    def test_submitted_not_before_the_check(self) -> None:
        """报送时间 after 检查时间: a day earlier is a problem of submitted_date; the same day is not."""
        problems = validate(INSPECTION, inspection(submitted_date=dt.date(2025, 3, 2)), TODAY)
        assert [(p.path, p.message) for p in problems] == [
            ("submitted_date", "2025-03-02 is before check_date 2025-03-03")]
        assert paths(INSPECTION, inspection(submitted_date=dt.date(2025, 3, 3))) == []

    def test_a_penalty_names_its_inspection(self) -> None:
        """A 处罚行为 without 检查行为编号 is a problem of inspection_code."""
        assert paths(ENFORCEMENT, enforcement(inspection_code="")) == ["inspection_code"]
        fields = enforcement()
        del fields["inspection_code"]
        assert paths(ENFORCEMENT, fields) == ["inspection_code"]


class TestDepartmentMappings:
    @pytest.mark.parametrize("dataset", list(TABLES))
    def test_sample_rows_map_and_each_break_names_its_field(self, dataset: str) -> None:
        """Valid rows become records; each broken row is refused with a problem naming the broken field."""
        mapping = load_mapping(MAPPINGS / f"department-{dataset.replace('_', '-')}.toml")
        assert isinstance(mapping, InboundMapping)
        rows = supervision_rows(dataset, 80, day=dt.date(2025, 3, 3))
        seen = set()
        for row in rows:
            out = mapping.map_row(row, TODAY)
            if "_broken" not in row:
                assert out.record is not None, out.problems
                continue
            assert out.record is None
            assert BREAKS[row["_broken"]][2] in {p.path for p in out.problems}, (row["_broken"], out.problems)
            seen.add(row["_broken"])
        assert seen == set(BREAKS)

    @pytest.mark.parametrize("dataset", list(TABLES))
    def test_a_report_before_the_action_is_refused(self, dataset: str) -> None:
        mapping = load_mapping(MAPPINGS / f"department-{dataset.replace('_', '-')}.toml")
        assert isinstance(mapping, InboundMapping)
        row = late_report(supervision_rows(dataset, 1)[0])
        assert [p.path for p in mapping.map_row(row, TODAY).problems] == ["submitted_date"]

    def test_the_penalty_row_links_to_its_inspection_row(self) -> None:
        """Penalty n names inspection n's 检查行为编号 (one event reported as both)."""
        inspections = load_mapping(MAPPINGS / "department-inspection.toml")
        penalties = load_mapping(MAPPINGS / "department-enforcement.toml")
        assert isinstance(inspections, InboundMapping) and isinstance(penalties, InboundMapping)
        checked = inspections.map_row(supervision_rows("inspection", 1)[0], TODAY).record
        punished = penalties.map_row(supervision_rows("enforcement", 1)[0], TODAY).record
        assert checked is not None and punished is not None
        assert punished.fields["inspection_code"] == checked.fields["action_code"]
        assert punished.fields["penalty_kinds"] == ["警告", "罚款"]
