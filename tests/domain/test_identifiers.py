"""Tests for gateway.domain.identifiers: USCC (GB 32100), organisation code (GB 11714), resident ID (GB 11643)."""

from __future__ import annotations

import datetime
import random

import pytest

from gateway.domain.identifiers import (
    USCC_ALPHABET,
    check_org_code,
    check_resident_id,
    check_uscc,
    id_check_char,
    is_placeholder,
    mask_id,
    mask_ids_in_text,
    uscc_check_char,
)

# Vectors from docs/domain.md §6.
VALID_USCCS = ["91230500MA1B3N1N2M", "11230500001755309F"]
VALID_IDS = [
    "11010519491231002X",  # GB 11643's own example
    "440524188001010014",  # born 1880-01-01, the earliest accepted date
    "360426199101010071",
    "44011320141005001X",
    "81000019980902013X",  # Hong Kong residence permit
    "820000200009100032",  # Macau residence permit
    "830000200209060065",  # Taiwan residence permit
    "932682198501010017",  # foreigner permanent residence card
]
TODAY = datetime.date(2025, 6, 1)
DIGITS = "0123456789"


def reference_uscc_check(first17: str) -> str:
    """GB 32100 check character written out from the standard, independent of the module's tables."""
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    weights = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]
    total = sum(alphabet.index(c) * w for c, w in zip(first17, weights, strict=True))
    c18 = 31 - total % 31
    return alphabet[0 if c18 == 31 else c18]


def reference_id_check(first17: str) -> str:
    """GB 11643 check character by python-stdnum's formula (1 - 2 * int(first17, 13)) mod 11."""
    value = (1 - 2 * int(first17, 13)) % 11
    return "X" if value == 10 else str(value)


def random_uscc_body(rng: random.Random) -> str:
    """17 random characters shaped like a USCC body: alphabet everywhere, digits in positions 3-8."""
    return (
        "".join(rng.choice(USCC_ALPHABET) for _ in range(2))
        + "".join(rng.choice(DIGITS) for _ in range(6))
        + "".join(rng.choice(USCC_ALPHABET) for _ in range(9))
    )


def with_id_check(first17: str) -> str:
    """An ID number completed with its correct check character (reference formula)."""
    return first17 + reference_id_check(first17)


class TestUsccAlphabet:
    def test_alphabet_is_31_chars_without_ioszv(self) -> None:
        """The alphabet is 0-9 and A-Y minus I, O, S, V, Z, in order, without repeats."""
        assert len(USCC_ALPHABET) == 31
        assert len(set(USCC_ALPHABET)) == 31
        assert not set("IOSVZ") & set(USCC_ALPHABET)
        assert sorted(USCC_ALPHABET) == list(USCC_ALPHABET)
        assert USCC_ALPHABET == "0123456789ABCDEFGHJKLMNPQRTUWXY"


class TestUsccCheckChar:
    @pytest.mark.parametrize("code", VALID_USCCS)
    def test_known_vectors(self, code: str) -> None:
        """The check character of the domain.md vectors is reproduced."""
        assert uscc_check_char(code[:17]) == code[17]

    def test_bad_vector_expected_check(self) -> None:
        """91110000600037341N's first 17 characters need check L (hand formula agrees)."""
        assert reference_uscc_check("91110000600037341") == "L"
        assert uscc_check_char("91110000600037341") == "L"

    def test_weights_are_powers_of_three(self) -> None:
        """The weights written in the reference are 3^(i-1) mod 31, as the standard defines them."""
        # Position i alone set to 1 contributes W_i, so its check char is 31 - W_i (mod 31).
        for i in range(17):
            body = "0" * i + "1" + "0" * (16 - i)
            assert uscc_check_char(body) == USCC_ALPHABET[(31 - pow(3, i, 31)) % 31]

    def test_matches_hand_formula_on_random_bodies(self) -> None:
        """For 50 random bodies the module and the hand-written formula agree."""
        rng = random.Random(20151001)
        for _ in range(50):
            body = "".join(rng.choice(USCC_ALPHABET) for _ in range(17))
            assert uscc_check_char(body) == reference_uscc_check(body), body

    def test_sum_divisible_by_31_gives_zero(self) -> None:
        """A weighted sum that is a multiple of 31 gives check 0, not an out-of-range 31."""
        assert uscc_check_char("0" * 17) == "0"

    @pytest.mark.parametrize(
        "body", ["9123050IMA1B3N1N2", "91230500ma1b3n1n2", "91230500MA1B3N1N-", "９1230500MA1B3N1N2"]
    )
    def test_rejects_characters_outside_alphabet(self, body: str) -> None:
        """Forbidden letters, lower case, punctuation and full-width digits raise ValueError."""
        with pytest.raises(ValueError, match="not allowed"):
            uscc_check_char(body)

    @pytest.mark.parametrize("body", ["", "91230500MA1B3N1N", "91230500MA1B3N1N2M"])
    def test_rejects_wrong_length(self, body: str) -> None:
        """Anything but 17 characters raises ValueError."""
        with pytest.raises(ValueError, match="expected 17"):
            uscc_check_char(body)


class TestCheckUscc:
    @pytest.mark.parametrize("code", VALID_USCCS)
    def test_valid_vectors(self, code: str) -> None:
        """The domain.md valid vectors pass, with and without the org-code check."""
        assert check_uscc(code) is None
        assert check_uscc(code, strict_org_code=True) is None

    def test_letter_registration_authority_is_accepted(self) -> None:
        """A code starting with Y (其他) passes: the python-stdnum first-8-digits pitfall."""
        body = "Y1230500MA1B3N1N2"
        code = body + reference_uscc_check(body)
        assert check_uscc(code) is None

    def test_bad_check_character(self) -> None:
        """91110000600037341N is rejected with the computed check character named."""
        assert (
            check_uscc("91110000600037341N") == "USCC 91110000600037341N: check character should be L, not N"
        )

    def test_forbidden_letters(self) -> None:
        """9111000060003IOZSV is rejected at its first forbidden letter."""
        assert check_uscc("9111000060003IOZSV") == (
            "USCC 9111000060003IOZSV: character 'I' at position 14 is not allowed"
        )

    @pytest.mark.parametrize("letter", list("IOZSV"))
    def test_each_forbidden_letter(self, letter: str) -> None:
        """Each of I, O, Z, S, V in the body is reported with its 1-based position."""
        code = "91230500MA1B3N1" + letter + "2M"
        assert check_uscc(code) == f"USCC {code}: character {letter!r} at position 16 is not allowed"

    @pytest.mark.parametrize(
        "code", ["00000000000000000X", "000000000000000000", "111111111111111111", "无", ""]
    )
    def test_placeholders(self, code: str) -> None:
        """Placeholders are rejected as such, even 000000000000000000 whose check digit is right."""
        assert check_uscc(code) == f"USCC {code}: placeholder code"

    @pytest.mark.parametrize(("code", "length"), [("91230500MA1B3N1N2", 17), ("91230500MA1B3N1N2MM", 19)])
    def test_wrong_length(self, code: str, length: int) -> None:
        """Too short and too long codes name their length."""
        assert check_uscc(code) == f"USCC {code}: length {length}, expected 18"

    def test_surrounding_whitespace(self) -> None:
        """Unstripped input is reported as such rather than as a length problem."""
        reason = check_uscc(" 91230500MA1B3N1N2M")
        assert reason is not None
        assert "whitespace" in reason

    @pytest.mark.parametrize("code", ["91230500ma1b3n1n2m", "91230500MA1B3N1N2m"])
    def test_lower_case_is_an_error(self, code: str) -> None:
        """Lower-case input is rejected with 'must be upper case', not silently fixed."""
        reason = check_uscc(code)
        assert reason is not None
        assert "must be upper case" in reason

    def test_division_code_must_be_digits(self) -> None:
        """A letter in positions 3-8 is rejected even when the check character matches."""
        body = "9123050AMA1B3N1N2"
        code = body + reference_uscc_check(body)
        assert check_uscc(code) == (
            f"USCC {code}: administrative division code '23050A' (positions 3-8) must be digits"
        )

    def test_org_code_checked_only_when_strict(self) -> None:
        """A wrong embedded org-code check passes by default and fails with strict_org_code=True."""
        body = "91230500MA1B3N1N3"  # the org code MA1B3N1N needs check 2
        code = body + reference_uscc_check(body)
        assert check_uscc(code) is None
        assert check_uscc(code, strict_org_code=True) == (
            f"USCC {code}: embedded organisation code MA1B3N1N3 (positions 9-17): "
            "check character should be 2, not 3"
        )

    def test_very_long_input_is_cut_in_reason(self) -> None:
        """A huge cell does not end up whole in the reason."""
        reason = check_uscc("9" * 10_000 + "1")
        assert reason is not None
        assert len(reason) < 100

    def test_property_random_bodies(self) -> None:
        """For 500 random bodies the computed check passes and every other check character fails."""
        rng = random.Random(32100)
        for _ in range(500):
            body = random_uscc_body(rng)
            good = uscc_check_char(body)
            assert check_uscc(body + good) is None, body + good
            for other in USCC_ALPHABET:
                if other != good:
                    code = body + other
                    assert check_uscc(code) == (f"USCC {code}: check character should be {good}, not {other}")


class TestCheckOrgCode:
    @pytest.mark.parametrize("code", ["MA1B3N1N2", "001755309", "123456788"])
    def test_valid(self, code: str) -> None:
        """Org codes embedded in the valid USCCs (and 12345678-8) pass."""
        assert check_org_code(code) is None

    def test_remainder_ten_gives_x(self) -> None:
        """Weighted sum 23 (mod 11 = 1) needs check 11 - 1 = 10, written X."""
        assert check_org_code("70000001X") is None
        assert (
            check_org_code("700000010") == "organisation code 700000010: check character should be X, not 0"
        )

    def test_remainder_eleven_gives_zero(self) -> None:
        """Weighted sum 11 (mod 11 = 0) needs check 11, written 0."""
        assert check_org_code("100000040") is None
        assert (
            check_org_code("10000004X") == "organisation code 10000004X: check character should be 0, not X"
        )

    def test_wrong_check(self) -> None:
        """A wrong check character names the expected one."""
        assert (
            check_org_code("MA1B3N1N3") == "organisation code MA1B3N1N3: check character should be 2, not 3"
        )

    def test_lower_case_x(self) -> None:
        """A lower-case x check character is an upper-case error."""
        reason = check_org_code("70000001x")
        assert reason is not None
        assert "must be upper case" in reason

    @pytest.mark.parametrize(
        ("code", "fragment"), [("MA1B3N1N", "length 8, expected 9"), ("MA1B-N1N2", "'-'")]
    )
    def test_malformed(self, code: str, fragment: str) -> None:
        """Wrong length and characters outside 0-9A-Z are reported."""
        reason = check_org_code(code)
        assert reason is not None
        assert fragment in reason

    def test_placeholder(self) -> None:
        """000000000 satisfies the arithmetic but is a placeholder."""
        assert check_org_code("000000000") == "organisation code 000000000: placeholder code"


class TestIsPlaceholder:
    @pytest.mark.parametrize(
        "value",
        [
            "00000000000000000X", "000000000000000000", "111111111111111111", "XXXXXXXXXXXXXXXXXX",
            "无", "空", "暂无", "/", "-", "--", "——", "NULL", "null", " Null ", "N/A", "none", "",
            "   ", "\u3000无\u3000", "***", "0",
        ],
    )  # fmt: skip
    def test_junk_is_placeholder(self, value: str) -> None:
        """Typical stand-ins for an unknown identifier are recognised."""
        assert is_placeholder(value) is True

    @pytest.mark.parametrize(
        "value", [*VALID_USCCS, *VALID_IDS, "91110000600037341N", "110105********002X", "E12345678", "NA1"]
    )
    def test_real_values_are_not_placeholders(self, value: str) -> None:
        """Real and merely invalid identifiers are not mistaken for placeholders."""
        assert is_placeholder(value) is False


class TestIdCheckChar:
    @pytest.mark.parametrize("number", VALID_IDS)
    def test_known_vectors(self, number: str) -> None:
        """The check character of every domain.md vector is reproduced."""
        assert id_check_char(number[:17]) == number[17]

    def test_matches_stdnum_formula(self) -> None:
        """For 200 random bodies the result equals (1 - 2 * int(first17, 13)) mod 11."""
        rng = random.Random(11643)
        seen = set()
        for _ in range(200):
            body = "".join(rng.choice(DIGITS) for _ in range(17))
            check = id_check_char(body)
            assert check == reference_id_check(body), body
            seen.add(check)
        assert "X" in seen  # the 10 -> X branch was exercised

    @pytest.mark.parametrize("body", ["1101051949123100A", "1101051949123100x", "110105194912310٠2", ""])
    def test_rejects_non_digits_and_bad_length(self, body: str) -> None:
        """Letters, non-ASCII digits and wrong lengths raise ValueError."""
        with pytest.raises(ValueError, match=r"digit|expected 17"):
            id_check_char(body)


BIRTH = "birth date (positions 7-14)"  # a reason names where, never the digits


class TestCheckResidentId:
    @pytest.mark.parametrize("number", VALID_IDS)
    def test_valid_vectors(self, number: str) -> None:
        """The domain.md vectors pass with a fixed and with the default today."""
        assert check_resident_id(number, today=TODAY) is None
        assert check_resident_id(number) is None

    @pytest.mark.parametrize("number", VALID_IDS)
    def test_flipped_check_character(self, number: str) -> None:
        """Every other check character is rejected with the right one named."""
        for other in "0123456789X":
            if other != number[17]:
                bad = number[:17] + other
                assert check_resident_id(bad, today=TODAY) == (
                    f"ID {mask_id(bad)}: check character should be {number[17]}, not {other}"
                )

    def test_check_character_outside_set(self) -> None:
        """A letter other than X as check character is reported as a wrong check character."""
        assert check_resident_id("11010519491231002Y", today=TODAY) == (
            "ID 110105********002Y: check character should be X, not Y"
        )

    def test_lower_case_x(self) -> None:
        """A lower-case x is an upper-case error even though its value is right."""
        reason = check_resident_id("11010519491231002x", today=TODAY)
        assert reason is not None
        assert "must be upper case" in reason

    def test_impossible_birth_date(self) -> None:
        """19990230 is rejected as not a real date even with a correct check character."""
        number = with_id_check("11010519990230001")
        assert (
            check_resident_id(number, today=TODAY) == f"ID {mask_id(number)}: {BIRTH} is not a real date"
        )

    def test_birth_date_before_1880(self) -> None:
        """A birth date before 1880-01-01 is rejected; 1880-01-01 itself is accepted."""
        number = with_id_check("44052418791231001")
        assert (
            check_resident_id(number, today=TODAY) == f"ID {mask_id(number)}: {BIRTH} is before 1880-01-01"
        )
        assert check_resident_id(with_id_check("44052418800101001"), today=TODAY) is None

    def test_future_birth_date(self) -> None:
        """A birth date after the injected today is rejected; one equal to today is accepted."""
        number = with_id_check("11010520250602001")
        assert check_resident_id(number, today=TODAY) == f"ID {mask_id(number)}: {BIRTH} is in the future"
        assert check_resident_id(number, today=datetime.date(2025, 6, 2)) is None

    def test_fifteen_digit_legacy_number(self) -> None:
        """15-digit numbers get the 'ask for the 18-digit number' reason."""
        assert check_resident_id("110105491231002", today=TODAY) == (
            "ID 11***********02: 15-digit ID numbers are no longer valid; ask for the 18-digit number"
        )

    @pytest.mark.parametrize(
        "number", ["00000000000000000X", "000000000000000000", "111111111111111111", "无"]
    )
    def test_placeholders(self, number: str) -> None:
        """Placeholders are rejected as such."""
        assert check_resident_id(number, today=TODAY) == f"ID {number}: placeholder number"

    @pytest.mark.parametrize(
        ("number", "fragment"),
        [
            ("1101051949123100X", "length 17, expected 18"),
            ("1101051949123100200X", "length 20, expected 18"),
            ("11010519491231A02X", "'A' at position 15"),
            (" 11010519491231002X", "whitespace"),
        ],
    )
    def test_malformed(self, number: str, fragment: str) -> None:
        """Wrong lengths, letters in the body and unstripped input are reported."""
        reason = check_resident_id(number, today=TODAY)
        assert reason is not None
        assert fragment in reason

    @pytest.mark.parametrize("number", [
        "110105194912310021",  # a wrong check character
        "11010519491231OO2X",  # the letter O for a zero
        "110105491231002",  # 15 digits
        "1101051949123100210",  # 19 digits
        "110105 19491231 002X",  # digits with spaces
        " 11010519491231002X",  # unstripped
        "11010519991302001X",  # no such birth date
        "11010519491231002x",  # lower-case x
    ])
    def test_a_reason_never_shows_the_number(self, number: str) -> None:
        """Whatever its shape, a malformed number appears masked in its reason: no run of its birth-date digits
        nor the whole of it (issue 17, 7)."""
        reason = check_resident_id(number, today=TODAY)
        assert reason is not None and number.strip() not in reason
        assert number.strip()[6:14] not in reason and mask_id(number) in reason

    @pytest.mark.parametrize("prefix", ["00", "10", "16", "20", "38", "47", "55", "66", "72", "80", "84"])
    def test_unknown_province_prefix(self, prefix: str) -> None:
        """Address codes outside the province table are rejected even with a correct check."""
        number = with_id_check(prefix + "010519491231002")
        assert check_resident_id(number, today=TODAY) == (
            f"ID {mask_id(number)}: address code {prefix}0105 has unknown province prefix {prefix}"
        )

    @pytest.mark.parametrize(
        "prefix", ["11", "15", "21", "23", "31", "37", "41", "46", "50", "54", "61", "65", "71"]
    )
    def test_province_prefix_bounds(self, prefix: str) -> None:
        """The first and last province of each block is accepted."""
        assert check_resident_id(with_id_check(prefix + "010519491231002"), today=TODAY) is None

    def test_residence_permit_address_is_fixed(self) -> None:
        """An 81/82/83 prefix must be followed by 0000 (the permits' fixed address codes)."""
        number = with_id_check("81010119980902013")
        assert check_resident_id(number, today=TODAY) == (
            f"ID {mask_id(number)}: address code 810101 should be 810000 for a residence permit"
        )

    def test_foreigner_card_any_nine_prefix(self) -> None:
        """Any 9xxxxx address code (foreigner permanent residence card) is accepted."""
        assert check_resident_id(with_id_check("90000019850101001"), today=TODAY) is None
        assert check_resident_id(with_id_check("99999919850101001"), today=TODAY) is None


class TestMaskId:
    def test_standard_example(self) -> None:
        """An 18-character number keeps the first 6 and the last 4."""
        assert mask_id("11010519491231002X") == "110105********002X"

    @pytest.mark.parametrize("number", VALID_IDS)
    def test_birth_date_never_shown(self, number: str) -> None:
        """The 8 birth-date digits are gone and the length is kept."""
        masked = mask_id(number)
        assert len(masked) == 18
        assert masked[6:14] == "********"
        assert number[6:14] not in masked

    @pytest.mark.parametrize(
        ("value", "masked"),
        [("", ""), ("A", "*"), ("AB", "**"), ("ABCD", "****"), ("ABCDE", "AB*DE"), ("E12345678", "E1*****78"),
         ("110105491231002", "11***********02")],
    )  # fmt: skip
    def test_other_lengths(self, value: str, masked: str) -> None:
        """Other lengths keep 2 + 2 characters; 4 or fewer become all stars."""
        assert mask_id(value) == masked

    @pytest.mark.parametrize(
        "value", [*VALID_IDS, "", "AB", "ABCD", "E12345678", "110105491231002", "x" * 30]
    )
    def test_idempotent(self, value: str) -> None:
        """Masking a masked value changes nothing."""
        once = mask_id(value)
        assert mask_id(once) == once
        if len(value) > 4:
            assert once != value


class TestMaskIdsInText:
    def test_masks_id_in_chinese_sentence(self) -> None:
        """An ID number between CJK characters is found (no \\b) and masked."""
        text = "申请人张三，身份证号11010519491231002X已核验。"
        assert mask_ids_in_text(text) == "申请人张三，身份证号110105********002X已核验。"

    def test_leaves_uscc_untouched(self) -> None:
        """A USCC with letters is not an ID candidate."""
        text = "统一社会信用代码91230500MA1B3N1N2M，法定代表人身份证号440524188001010014"
        assert (
            mask_ids_in_text(text)
            == "统一社会信用代码91230500MA1B3N1N2M，法定代表人身份证号440524********0014"
        )

    def test_masks_several_and_lower_case_x(self) -> None:
        """Several numbers are masked, including one with a lower-case x check."""
        text = "ID 11010519491231002x and 360426199101010071 rejected"
        assert mask_ids_in_text(text) == "ID 110105********002x and 360426********0071 rejected"

    def test_invalid_check_not_masked(self) -> None:
        """Eighteen digits whose check character fails are left alone (likely another number)."""
        text = "order 360426199101010072 shipped"
        assert mask_ids_in_text(text) == text

    @pytest.mark.parametrize("text", ["a11010519491231002X", "11010519491231002XY", "911010519491231002X"])
    def test_glued_to_ascii_alnum_not_masked(self, text: str) -> None:
        """Candidates adjacent to ASCII letters or digits are part of something longer."""
        assert mask_ids_in_text(text) == text

    def test_idempotent(self) -> None:
        """Masking masked text changes nothing."""
        once = mask_ids_in_text("身份证号11010519491231002X")
        assert "19491231" not in once
        assert mask_ids_in_text(once) == once
