"""The CLI masks personal ID numbers in what it prints, not the all-digit USCC of a deciding body inside a record key
(``文书号|113205000141174379``: an 18-digit code that looks like an ID number)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.cli.rules import cmd_records
from gateway.config import load_config
from gateway.domain.identifiers import check_resident_id, check_uscc
from gateway.logs import redact
from gateway.store import open_store
from gateway.testing.rows import make_uscc
from tests.conftest import TOKEN
from tests.support.helpers import make_department_db, read_rows, to_record, write_config

# A 机关 USCC (11 + Suzhou + organisation code) that is all digits: valid as a USCC, impossible as an ID number.
AUTHORITY = make_uscc("11", "320500", "01411743")
RESIDENT_ID = "11010519491231002X"  # GB 11643's own example
MISTYPED_ID = "110105194912310021"


def masked(number: str) -> str:
    return number[:6] + "*" * 8 + number[14:]


class TestRedact:
    def test_the_authority_code_is_what_the_test_needs(self) -> None:
        """The code used here is a valid USCC of digits only, and no valid ID number."""
        assert AUTHORITY.isdigit() and check_uscc(AUTHORITY) is None and check_resident_id(AUTHORITY) is not None

    def test_an_all_digit_uscc_in_a_record_key_is_left_alone(self) -> None:
        """In a key (after its '|') the deciding body's code stays readable, in text and in a key of three parts."""
        for key in (f"苏市监罚〔2026〕1号|{AUTHORITY}", f"RED-2026|{AUTHORITY}|", f"key {'X1'}|{AUTHORITY} sent"):
            assert redact(key) == key

    def test_id_numbers_in_keys_and_the_code_elsewhere_are_still_masked(self) -> None:
        """A valid or mistyped ID number after a '|' is masked; so is an all-digit USCC in free text (a mistyped ID
        number can pass the USCC check by chance, so only the key position is trusted)."""
        assert redact(f"RED-2026||{RESIDENT_ID}") == f"RED-2026||{masked(RESIDENT_ID)}"
        assert redact(f"RED-2026||{MISTYPED_ID}") == f"RED-2026||{masked(MISTYPED_ID)}"
        assert redact(f"机关代码 {AUTHORITY}") == f"机关代码 {masked(AUTHORITY)}"


class TestRecordsShow:
    async def test_key_printed_as_it_is_personal_id_masked(self, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
        """`records show` prints the key it was given, unmasked, and still masks the person's ID number."""
        sample = make_department_db(tmp_path, penalties=40, natural=1.0)
        row = next(r for r in read_rows(sample.path) if to_record_or_none(r) is not None)
        record = to_record({**row, "cfjgdm": AUTHORITY})
        id_no = str(record.fields["id_no"])
        assert record.key.endswith(f"|{AUTHORITY}") and len(id_no) == 18
        config = load_config(write_config(tmp_path, url="http://127.0.0.1:9/upload", db=sample.path, token=TOKEN))
        store = await open_store(config.store_url())
        try:
            await store.intake.commit_intake("department_penalties", [record], [], None, {}, 1)
        finally:
            await store.aclose()

        for extra in ([], ["--json"]):
            args = build_parser().parse_args(["-c", str(config.path), "records", "show", "penalty", record.key, *extra])
            assert await cmd_records(args) == 0
            printed = capsys.readouterr().out
            assert (f'"record_key": "{record.key}"' if extra else f"penalty {record.key}\n") in printed
            assert id_no not in printed and (masked(id_no) in printed) == bool(extra)  # JSON has the payload


def to_record_or_none(row: dict[str, object]) -> object:
    try:
        return to_record(dict(row))
    except AssertionError:
        return None
