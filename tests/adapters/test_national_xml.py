"""Tests for adapters/national/xmlfile.py: history files for the national system, checked by our XSD, then signed.

A valid batch is dropped signed and ``xmlsec1 --verify`` accepts it (and refuses it tampered); each kind of
invalid batch (a missing required element, a wrong code length, a bad date, an unknown dictionary value) drops
nothing and its error names the record and the element. The shipped XSDs are what the field tables give.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from adapters.national.xmlfile import XSD_DIR, XmlInvalid, check_xml, drop_history_file, write_schemas, write_xml
from gateway.domain.supervision import INSPECTION
from gateway.mapping import InboundMapping, OutboundMapping, load_mapping
from gateway.sealing.base import Credentials, Peer
from gateway.testing.national import supervision_rows
from tests.support.helpers import MAPPINGS
from tests.support.pki import CA, Issued, make_ca

TODAY = dt.date(2025, 6, 1)
SOURCE = "32000011320500014160151X"
Record = tuple[str, dict[str, Any]]


def inspections(count: int) -> list[Record]:
    """Valid sample inspections as (record key, national column → value)."""
    inbound, outbound = (load_mapping(MAPPINGS / "department-inspection.toml"),
                         load_mapping(MAPPINGS / "national-inspection.toml"))
    assert isinstance(inbound, InboundMapping) and isinstance(outbound, OutboundMapping)
    out = []
    for row in supervision_rows("inspection", count, broken_every=0, day=dt.date(2025, 3, 3)):
        record = inbound.map_row(row, TODAY).record
        assert record is not None
        out.append((record.key, outbound.map_record(record)))
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, Issued, Issued]:
    ca = make_ca(tmp_path_factory.mktemp("ca"), "rsa")
    return ca, ca.issue("department"), ca.issue("national")


def drop(tmp_path: Path, pki: tuple[CA, Issued, Issued], records: list[Record]) -> Path:
    ca, ours, theirs = pki
    return drop_history_file(tmp_path / "drop", "inspection", "b-1", SOURCE, records,
                             Credentials(ours.key_pem, ours.cert_pem, ours.passphrase),
                             Peer(theirs.cert_pem, (ca.root.cert_pem,)))


def xmlsec_verify(ca: CA, path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["xmlsec1", "--verify", "--trusted-pem", str(ca.root.cert_path), str(path)],
                          capture_output=True, check=False)


def changed(records: list[Record], n: int, **fields: Any) -> list[Record]:
    key, values = records[n]
    new = {k: v for k, v in values.items() if k not in fields or fields[k] is not None}
    new.update({k: v for k, v in fields.items() if v is not None})
    return [*records[:n], (key, new), *records[n + 1:]]


class TestValidFiles:
    def test_a_valid_batch_is_dropped_signed_and_xmlsec1_verifies_it(self, tmp_path: Path,
                                                                     pki: tuple[CA, Issued, Issued]) -> None:
        path = drop(tmp_path, pki, inspections(5))
        assert path.name == "tr_t_jgxw_check_action_b-1.xml"
        assert [p.name for p in (tmp_path / "drop").iterdir() if p.is_file()] == [path.name]
        assert check_xml(path, "inspection", []) == []  # the signed file is still valid against the XSD
        result = xmlsec_verify(pki[0], path)
        assert result.returncode == 0, result.stderr.decode()

    def test_xmlsec1_refuses_a_tampered_file(self, tmp_path: Path, pki: tuple[CA, Issued, Issued]) -> None:
        path = drop(tmp_path, pki, inspections(2))
        data = path.read_bytes()
        assert b"<check_result>" in data
        path.write_bytes(data.replace(b"<check_result>", b"<check_result>X", 1))
        assert xmlsec_verify(pki[0], path).returncode != 0

    def test_shipped_xsds_are_what_the_field_tables_give(self, tmp_path: Path) -> None:
        """mappings/xsd is up to date (python -m adapters.national.xmlfile rewrites it)."""
        for path in write_schemas(tmp_path):
            assert (XSD_DIR / path.name).read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


class TestInvalidFiles:
    @pytest.mark.parametrize(("change", "element"), [
        pytest.param({"supervise_object": None}, "supervise_object", id="missing-required"),
        pytest.param({"supervise_item_implement_code": "3205000100100"}, "supervise_item_implement_code",
                     id="code-length"),
        pytest.param({"area_number": "32050"}, "area_number", id="region-length"),
        pytest.param({"check_date": "2025-13-01"}, "check_date", id="bad-date"),
        pytest.param({"check_form": "随便看看"}, "check_form", id="unknown-dictionary-value"),
    ])
    def test_each_kind_fails_naming_record_and_element(self, tmp_path: Path, pki: tuple[CA, Issued, Issued],
                                                       change: dict[str, Any], element: str) -> None:
        """Nothing is dropped; the error names the broken record's key, position and element."""
        records = changed(inspections(4), 2, **change)
        with pytest.raises(XmlInvalid) as caught:
            drop(tmp_path, pki, records)
        assert len(caught.value.problems) == 1, caught.value.problems
        assert caught.value.problems[0].startswith(f"record {records[2][0]} (#3), element {element}: ")
        assert [p for p in (tmp_path / "drop").rglob("*") if p.is_file()] == []

    def test_all_problems_are_reported(self, tmp_path: Path, pki: tuple[CA, Issued, Issued]) -> None:
        records = changed(changed(inspections(4), 0, check_date="2025-02-30"), 3, check_type="无")
        with pytest.raises(XmlInvalid) as caught:
            drop(tmp_path, pki, records)
        assert [p.split(":")[0] for p in caught.value.problems] == [
            f"record {records[0][0]} (#1), element check_date", f"record {records[3][0]} (#4), element check_type"]


class TestStreaming:
    @staticmethod
    def peak(step: Any) -> int:
        tracemalloc.start()
        try:
            step()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def test_writing_keeps_memory_flat(self, tmp_path: Path) -> None:
        """Ten times the records take about the same peak memory to write (one record in memory at a time)."""
        base = inspections(50)

        def write(count: int) -> None:
            write_xml(tmp_path / f"{count}.xml", INSPECTION, "b", SOURCE, (base[n % 50] for n in range(count)), count)

        small, large = self.peak(lambda: write(1_000)), self.peak(lambda: write(10_000))
        assert large < small * 2, (small, large)

    def test_checking_keeps_memory_flat(self, tmp_path: Path) -> None:
        """Checking ten times the records takes about the same peak memory (each record dropped once checked)."""
        base = inspections(50)
        for count in (100, 1_000):
            write_xml(tmp_path / f"{count}.xml", INSPECTION, "b", SOURCE, (base[n % 50] for n in range(count)), count)
        check_xml(tmp_path / "100.xml", "inspection")  # the schema compiled outside the measurement
        small = self.peak(lambda: check_xml(tmp_path / "100.xml", "inspection"))
        large = self.peak(lambda: check_xml(tmp_path / "1000.xml", "inspection"))
        assert large < small * 2, (small, large)
