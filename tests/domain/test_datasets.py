"""Tests for gateway.domain.datasets: the canonical licence and penalty fields and their validation rules.

Records are built from the sample rows of domain.md §8; each test changes one thing and checks that
exactly that thing is reported (or not). ``today`` is always injected.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from gateway.domain.datasets import (
    ID_TYPES,
    INDIVIDUAL_BUSINESS,
    LICENSE,
    LICENSE_CATEGORIES,
    NATURAL_PERSON,
    ORGANISATION,
    PENALTY,
    PENALTY_TYPES,
    SUBJECT_CATEGORIES,
    Dataset,
    get_dataset,
    natural_key,
    validate,
)
from gateway.errors import Problem

TODAY = dt.date(2024, 6, 1)
COMPANY_USCC = "91230500MA1B3N1N2M"  # domain.md §8
ORGAN_USCC = "11230500001755309F"  # domain.md §8
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100: no I, O, Z, S, V
RESIDENT_ID = "11010519491231002X"  # GB 11643's own example
PERMITS = ["81000019980902013X", "820000200009100032", "830000200209060065"]  # HK, Macau, Taiwan
FOREIGNER_PR = "932682198501010017"


def penalty(**changes: Any) -> dict[str, Any]:
    """A valid penalty of a company (domain.md §8), with ``changes``; a value of None removes the field."""
    fields: dict[str, Any] = {
        "subject_name": "双鸭山智慧城市运营有限公司", "subject_category": ORGANISATION, "uscc": COMPANY_USCC,
        "legal_rep": "张三", "decision_no": "市场【2019】1号", "violation_type": "违反相关产品准入市场规定",
        "violation_facts": "违反相关产品准入市场规定", "legal_basis": "依据《行业准入规定》", "penalty_types": ["罚款"],
        "content": "罚款2000元", "fine_wan": Decimal("0.2"), "decision_date": dt.date(2019, 10, 10),
        "valid_until": dt.date(2019, 10, 17), "publicity_end": dt.date(2020, 10, 17), "authority": "双鸭山市公安局",
        "authority_code": ORGAN_USCC, "data_source": "双鸭山市公安局", "data_source_code": ORGAN_USCC,
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


def licence(**changes: Any) -> dict[str, Any]:
    """A valid licence of a company (domain.md §8, with a real organ code), with ``changes``."""
    fields: dict[str, Any] = {
        "subject_name": "双鸭山智慧城市运营有限公司", "subject_category": ORGANISATION, "uscc": COMPANY_USCC,
        "legal_rep": "张三", "document_name": "双环许可证书2019", "decision_no": "双环许可2019",
        "license_category": "普通", "content": "许可开展智慧城市建设", "decision_date": dt.date(2019, 9, 1),
        "valid_from": dt.date(2019, 9, 5), "valid_to": dt.date(2020, 9, 22), "authority": "双鸭山市公安局",
        "authority_code": ORGAN_USCC, "data_source": "双鸭山市公安局", "data_source_code": ORGAN_USCC,
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


def person(id_type: str | None = "身份证", id_no: str | None = RESIDENT_ID, **changes: Any) -> dict[str, Any]:
    """A valid penalty of a natural person."""
    return penalty(subject_category=NATURAL_PERSON, uscc=None, legal_rep=None, id_type=id_type, id_no=id_no,
                   subject_name="王某", **changes)


def problems(dataset: Dataset, fields: dict[str, Any], today: dt.date = TODAY) -> dict[str, str]:
    found = validate(dataset, fields, today)
    assert all(isinstance(p, Problem) for p in found)
    return {p.path: p.message for p in found}


def id_check(first17: str) -> str:
    """GB 11643 check character, written out from the standard."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return "10X98765432"[sum(int(d) * w for d, w in zip(first17, weights, strict=True)) % 11]


def flipped(code: str, alphabet: str) -> str:
    """``code`` with its last (check) character replaced by the next one of ``alphabet``."""
    return code[:-1] + alphabet[(alphabet.index(code[-1]) + 1) % len(alphabet)]


class TestSamples:
    def test_valid_penalty(self) -> None:
        """The domain.md penalty sample has no problems."""
        assert validate(PENALTY, penalty(), TODAY) == []

    def test_valid_licence(self) -> None:
        """The domain.md licence sample (with a real organ code) has no problems."""
        assert validate(LICENSE, licence(), TODAY) == []

    def test_valid_natural_person(self) -> None:
        """A natural person with a checked ID number has no problems."""
        assert validate(PENALTY, person(), TODAY) == []

    def test_every_problem_is_returned(self) -> None:
        """Several independent faults are all reported, not just the first."""
        found = problems(PENALTY, penalty(content="", uscc="91230500MA1B3N1N2X", subject_category="公司",
                                          publicity_end=dt.date(2019, 1, 1)))
        assert {"content", "uscc", "subject_category", "publicity_end"} <= found.keys()

    def test_get_dataset(self) -> None:
        """Datasets are found by name; an unknown name lists the known ones."""
        assert get_dataset("penalty") is PENALTY
        with pytest.raises(KeyError, match="license"):
            get_dataset("parking")


REQUIRED = [(ds, spec.name) for ds in (PENALTY, LICENSE) for spec in ds.fields if spec.required]
SAMPLE = {"penalty": penalty, "license": licence}


class TestRequiredFields:
    @pytest.mark.parametrize(("dataset", "name"), REQUIRED, ids=[f"{d.name}.{n}" for d, n in REQUIRED])
    def test_missing_required_field(self, dataset: Dataset, name: str) -> None:
        """Removing a required field makes a problem at that field."""
        fields = SAMPLE[dataset.name]()
        del fields[name]
        assert name in problems(dataset, fields)

    @pytest.mark.parametrize("empty", ["", []])
    def test_empty_counts_as_missing(self, empty: Any) -> None:
        """An empty string or an empty list is as good as missing."""
        assert "penalty_types" in problems(PENALTY, penalty(penalty_types=empty))
        assert "content" in problems(PENALTY, penalty(content=empty))

    def test_required_lists_match_the_standard(self) -> None:
        """The 2019 standard's required penalty fields (domain.md §1.2) are required here."""
        required = {spec.name for spec in PENALTY.fields if spec.required}
        assert {"subject_name", "subject_category", "decision_no", "violation_type", "violation_facts",
                "legal_basis", "penalty_types", "content", "decision_date", "valid_until", "authority",
                "authority_code", "data_source", "data_source_code"} <= required


MAX_LENGTHS = [(ds, spec.name, spec.max_len) for ds in (PENALTY, LICENSE) for spec in ds.fields
               if spec.max_len and not spec.check and spec.kind == "text" and not spec.personal_id]


class TestMaxLengths:
    @pytest.mark.parametrize(("dataset", "name", "limit"), MAX_LENGTHS,
                             ids=[f"{d.name}.{n}" for d, n, _ in MAX_LENGTHS])
    def test_at_the_limit_is_fine(self, dataset: Dataset, name: str, limit: int) -> None:
        """A value of exactly max_len characters (Chinese characters count one each) passes."""
        fields = SAMPLE[dataset.name](**{name: "字" * limit})
        assert name not in problems(dataset, fields)

    @pytest.mark.parametrize(("dataset", "name", "limit"), MAX_LENGTHS,
                             ids=[f"{d.name}.{n}" for d, n, _ in MAX_LENGTHS])
    def test_over_the_limit(self, dataset: Dataset, name: str, limit: int) -> None:
        """One character more is a problem that names both lengths."""
        fields = SAMPLE[dataset.name](**{name: "字" * (limit + 1)})
        message = problems(dataset, fields)[name]
        assert str(limit + 1) in message and str(limit) in message

    def test_there_are_length_limits(self) -> None:
        """The parametrised tests above have fields to check (subject name 200, decision number 128…)."""
        assert ("subject_name", 200) in {(n, m) for _, n, m in MAX_LENGTHS}
        assert ("decision_no", 128) in {(n, m) for _, n, m in MAX_LENGTHS}


USCC_FIELDS = ["uscc", "authority_code", "data_source_code"]


class TestUscc:
    @pytest.mark.parametrize("field", USCC_FIELDS)
    @pytest.mark.parametrize("code", [COMPANY_USCC, ORGAN_USCC])
    def test_valid_codes(self, field: str, code: str) -> None:
        """Real codes with letters in the body (91…) and of a government organ (11…) pass."""
        assert field not in problems(PENALTY, penalty(**{field: code}))

    @pytest.mark.parametrize("field", USCC_FIELDS)
    @pytest.mark.parametrize("code", [COMPANY_USCC, ORGAN_USCC])
    def test_wrong_check_character(self, field: str, code: str) -> None:
        """Any other 18th character is refused at that field."""
        bad = flipped(code, USCC_ALPHABET)
        assert bad in problems(PENALTY, penalty(**{field: bad}))[field]

    @pytest.mark.parametrize("field", USCC_FIELDS)
    def test_placeholder(self, field: str) -> None:
        """The placeholder 00000000000000000X is refused as a placeholder."""
        assert "placeholder" in problems(PENALTY, penalty(**{field: "00000000000000000X"}))[field]

    def test_licence_sample_placeholder_is_refused(self) -> None:
        """The domain.md licence sample itself carries the placeholder organ code: both fields are refused."""
        found = problems(LICENSE, licence(authority_code="00000000000000000X", data_source_code="00000000000000000X"))
        assert {"authority_code", "data_source_code"} <= found.keys()

    @pytest.mark.parametrize("bad", [COMPANY_USCC.lower(), COMPANY_USCC[:17], COMPANY_USCC + "1",
                                     "9111000060003IOZSV"])
    def test_malformed_codes(self, bad: str) -> None:
        """Lower case, wrong length and forbidden letters are refused."""
        assert "uscc" in problems(PENALTY, penalty(uscc=bad))

    def test_uscc_is_optional_for_natural_persons(self) -> None:
        """A natural person needs no USCC."""
        assert "uscc" not in problems(PENALTY, person())


class TestResidentId:
    def test_valid_resident_id(self) -> None:
        """GB 11643's example passes for 身份证."""
        assert "id_no" not in problems(PENALTY, person("身份证", RESIDENT_ID))

    def test_flipped_check_character(self) -> None:
        """Any other check character is refused at id_no."""
        bad = flipped(RESIDENT_ID, "0123456789X")
        assert "id_no" in problems(PENALTY, person("身份证", bad))

    @pytest.mark.parametrize("number", PERMITS)
    def test_residence_permits(self, number: str) -> None:
        """Hong Kong, Macau and Taiwan residence permits pass with id_type 港澳台居民居住证."""
        assert "id_no" not in problems(PENALTY, person("港澳台居民居住证", number))

    @pytest.mark.parametrize("number", PERMITS)
    def test_residence_permits_are_checked(self, number: str) -> None:
        """A residence permit with a wrong check character is refused."""
        assert "id_no" in problems(PENALTY, person("港澳台居民居住证", flipped(number, "0123456789X")))

    def test_foreigner_permanent_residence_card(self) -> None:
        """The 9-prefixed card passes with id_type 外国人永久居留身份证, and is checked."""
        assert "id_no" not in problems(PENALTY, person("外国人永久居留身份证", FOREIGNER_PR))
        assert "id_no" in problems(PENALTY, person("外国人永久居留身份证", flipped(FOREIGNER_PR, "0123456789X")))

    def test_passport_numbers_are_not_checked(self) -> None:
        """Passports have no national check character: any number passes."""
        assert "id_no" not in problems(PENALTY, person("护照号", "E12345678"))

    def test_birth_date_after_today(self) -> None:
        """An ID number whose birth date is after the injected today is refused; a day later it passes."""
        first17 = "320505" + "20240702" + "123"
        number = first17 + id_check(first17)
        assert "id_no" in problems(PENALTY, person("身份证", number), today=dt.date(2024, 7, 1))
        assert "id_no" not in problems(PENALTY, person("身份证", number, decision_date=dt.date(2024, 7, 2),
                                                       valid_until=dt.date(2024, 8, 1), publicity_end=None),
                                       today=dt.date(2024, 7, 2))

    def test_legal_representative_id_is_checked(self) -> None:
        """法定代表人证件号码 is checked like the subject's own number."""
        good = penalty(legal_rep_id_type="身份证", legal_rep_id_no=RESIDENT_ID)
        bad = penalty(legal_rep_id_type="身份证", legal_rep_id_no=flipped(RESIDENT_ID, "0123456789X"))
        assert "legal_rep_id_no" not in problems(PENALTY, good)
        assert "legal_rep_id_no" in problems(PENALTY, bad)


class TestSubjectRules:
    @pytest.mark.parametrize("category", [ORGANISATION, INDIVIDUAL_BUSINESS])
    def test_uscc_required(self, category: str) -> None:
        """Organisations and 个体工商户 need a USCC."""
        assert "uscc" in problems(PENALTY, penalty(subject_category=category, uscc=None))

    def test_legal_rep_required_for_organisations(self) -> None:
        """法人及非法人组织 need a 法定代表人."""
        assert "legal_rep" in problems(PENALTY, penalty(legal_rep=None))

    def test_legal_rep_optional_for_individual_business(self) -> None:
        """个体工商户 need no 法定代表人."""
        assert problems(PENALTY, penalty(subject_category=INDIVIDUAL_BUSINESS, legal_rep=None)) == {}

    def test_organisation_missing_uscc_and_legal_rep_gets_both(self) -> None:
        """An organisation without USCC and without 法定代表人 is told about both."""
        assert {"uscc", "legal_rep"} <= problems(PENALTY, penalty(uscc=None, legal_rep=None)).keys()

    @pytest.mark.parametrize("missing", ["id_type", "id_no"])
    def test_natural_person_needs_id_type_and_number(self, missing: str) -> None:
        """A natural person without 证件类型 or 证件号码 is refused."""
        found = problems(PENALTY, person(**{missing: None}))
        assert found.keys() & {"id_type", "id_no"}

    def test_category_must_be_one_of_the_three(self) -> None:
        """行政相对人类别 outside the triad is refused, listing the allowed values."""
        message = problems(PENALTY, penalty(subject_category="企业"))["subject_category"]
        assert all(category in message for category in SUBJECT_CATEGORIES)


class TestDates:
    def test_decision_date_in_the_future(self) -> None:
        """A decision date after the injected today is refused."""
        tomorrow = TODAY + dt.timedelta(days=1)
        fields = penalty(decision_date=tomorrow, valid_until=tomorrow, publicity_end=None)
        assert "decision_date" in problems(PENALTY, fields, today=TODAY)

    def test_decision_date_today_is_fine(self) -> None:
        """A decision taken today is not in the future."""
        fields = penalty(decision_date=TODAY, valid_until=TODAY, publicity_end=None)
        assert problems(PENALTY, fields, today=TODAY) == {}

    def test_future_is_relative_to_the_injected_today(self) -> None:
        """The same record is fine when validated a day later."""
        tomorrow = TODAY + dt.timedelta(days=1)
        fields = penalty(decision_date=tomorrow, valid_until=tomorrow, publicity_end=None)
        assert problems(PENALTY, fields, today=tomorrow) == {}

    def test_licence_decision_date_in_the_future(self) -> None:
        """The licence decision date is checked too."""
        later = TODAY + dt.timedelta(days=3)
        assert "decision_date" in problems(LICENSE, licence(decision_date=later, valid_from=later, valid_to=later))

    @pytest.mark.parametrize("name", ["valid_until", "publicity_end"])
    def test_penalty_dates_before_the_decision(self, name: str) -> None:
        """处罚有效期 and 公示截止期 before the decision date are refused."""
        fields = penalty()
        fields[name] = fields["decision_date"] - dt.timedelta(days=1)
        assert name in problems(PENALTY, fields)

    @pytest.mark.parametrize("name", ["valid_until", "publicity_end"])
    def test_penalty_dates_on_the_decision_day(self, name: str) -> None:
        """The decision day itself is allowed."""
        fields = penalty()
        fields[name] = fields["decision_date"]
        assert name not in problems(PENALTY, fields)

    def test_licence_valid_to_before_valid_from(self) -> None:
        """有效期至 before 有效期自 is refused."""
        fields = licence()
        fields["valid_to"] = fields["valid_from"] - dt.timedelta(days=1)
        assert "valid_to" in problems(LICENSE, fields)

    def test_licence_valid_to_equal_valid_from(self) -> None:
        """A licence valid for one day is fine."""
        fields = licence()
        fields["valid_to"] = fields["valid_from"]
        assert "valid_to" not in problems(LICENSE, fields)

    def test_text_in_a_date_field(self) -> None:
        """A date field holding text (not mapped) is refused."""
        assert "valid_until" in problems(PENALTY, penalty(valid_until="2019-10-17"))


class TestCodeValues:
    def test_unknown_license_category(self) -> None:
        """许可类别 outside the list is refused, listing the allowed values."""
        message = problems(LICENSE, licence(license_category="特别"))["license_category"]
        assert all(category in message for category in LICENSE_CATEGORIES)

    @pytest.mark.parametrize("value", ["其他-责令改正", "其他-限期整改"])
    def test_other_with_detail_is_allowed_in_penalty_types(self, value: str) -> None:
        """处罚类别 "其他-xxx" is allowed."""
        assert problems(PENALTY, penalty(penalty_types=["警告", value])) == {}

    def test_other_with_detail_is_allowed_in_license_category(self) -> None:
        """许可类别 "其他-xxx" is allowed (其他 needs a detail)."""
        assert problems(LICENSE, licence(license_category="其他-备案")) == {}

    @pytest.mark.parametrize("value", ["其它-责令改正", "其他责令改正", "没收"])
    def test_near_misses_are_refused(self, value: str) -> None:
        """Values that only look like allowed ones (其它, no dash, a truncated type) are refused and named."""
        assert value in problems(PENALTY, penalty(penalty_types=["罚款", value]))["penalty_types"]

    def test_every_penalty_type_is_allowed(self) -> None:
        """All 行政处罚法 第九条 types together pass."""
        assert problems(PENALTY, penalty(penalty_types=list(PENALTY_TYPES))) == {}

    def test_unknown_id_type(self) -> None:
        """证件类型 outside the list is refused."""
        assert "id_type" in problems(PENALTY, person(id_type="驾驶证"))

    @pytest.mark.parametrize("id_type", ID_TYPES)
    def test_every_id_type_is_known(self, id_type: str) -> None:
        """Every listed 证件类型 is accepted as a value (its number checked only where a check exists)."""
        number = {"港澳台居民居住证": PERMITS[0], "外国人永久居留身份证": FOREIGNER_PR}.get(id_type, RESIDENT_ID)
        assert "id_type" not in problems(PENALTY, person(id_type=id_type, id_no=number))

    def test_unknown_severity(self) -> None:
        """失信严重程度 outside 一般/较重/严重 is refused."""
        assert "severity" in problems(PENALTY, penalty(severity="特别严重"))


class TestAmounts:
    def test_zero_and_positive_amounts(self) -> None:
        """Zero and positive amounts pass."""
        assert problems(PENALTY, penalty(fine_wan=Decimal(0), confiscated_wan=Decimal("12.5"))) == {}

    def test_negative_amount(self) -> None:
        """A negative fine is refused."""
        assert "fine_wan" in problems(PENALTY, penalty(fine_wan=Decimal("-0.2")))

    def test_float_amount(self) -> None:
        """A float (not mapped to Decimal) is refused."""
        assert "fine_wan" in problems(PENALTY, penalty(fine_wan=0.2))

    @pytest.mark.parametrize("value", ["NaN", "Infinity"])
    def test_non_finite_amount_is_a_problem(self, value: str) -> None:
        """NaN and Infinity are reported as problems, without raising."""
        assert "fine_wan" in problems(PENALTY, penalty(fine_wan=Decimal(value)))


class TestNaturalKey:
    @pytest.mark.parametrize("dataset", [PENALTY, LICENSE], ids=lambda d: d.name)
    def test_key_is_decision_number_and_authority_code(self, dataset: Dataset) -> None:
        """The natural key is (decision number, deciding body code)."""
        fields = SAMPLE[dataset.name]()
        assert list(natural_key(dataset, fields)) == [fields["decision_no"], fields["authority_code"]]

    def test_missing_parts_are_empty(self) -> None:
        """Missing key parts are empty strings."""
        assert list(natural_key(PENALTY, {"decision_no": "x"})) == ["x", ""]
