"""Tests for gateway.domain.timeliness, Store.timeliness_rows and the CLI around them, on SQLite and PostgreSQL.

Records go into the ledger through ``commit_intake``, are leased and acknowledged through ``lease_batch`` and
``complete_batch``; only the receipt's time is then set directly, to the moment a test needs. Due dates are
counted by hand on the 2026 calendar (see tests/domain/test_calendar.py): a decision of 02-10 is due 02-26, of
02-12 due 02-28 (a worked Saturday), of 02-13 due 03-02, of 02-24 due 03-04, of 02-25 due 03-05.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from sqlalchemy import update

from gateway.cli import build_parser
from gateway.cli import ops as cli_ops
from gateway.domain.calendar import Official, WorkCalendar
from gateway.domain.timeliness import LATE_KEYS, TimelinessReport, timeliness_report
from gateway.errors import ConfigError
from gateway.records import Operation, Record
from gateway.store import Store
from gateway.store import schema as s
from gateway.store.outbox import Outcome
from tests.support.helpers import json_encoder, outbox, write_config

D = dt.date.fromisoformat
MARKET = "苏州市市场监督管理局"
POLICE = "苏州市公安局"
TODAY = D("2026-03-02")  # a Monday
ROUTES = {"penalty": ["province"], "license": ["province"]}
TWO_TARGETS = {"penalty": ["province", "national"]}
CALENDAR = WorkCalendar()


def record(key: str, decision: str, authority: str = MARKET, dataset: str = "penalty", note: str = "") -> Record:
    return Record(dataset, key, Operation.UPSERT, {"decision_no": key, "decision_date": D(decision),
                                                   "authority": authority, "content": f"罚款{note}"})


async def intake(store: Store, records: Sequence[Record], routes: dict[str, list[str]] = ROUTES) -> None:
    await store.intake.commit_intake("test", records, [], None, routes, len(records))


async def deliver(store: Store, keys: Sequence[str], at: str, dataset: str = "penalty",
                  target: str = "province") -> None:
    """Lease what is pending, acknowledge ``keys`` (the rest goes back to pending), receipt dated ``at``."""
    batch = await store.outbox.lease_batch(target, dataset, 1000, json_encoder())
    assert batch is not None
    leased = [(r["record_key"], r["version"]) for r in await outbox(store) if r["batch_id"] == batch.id]
    await store.outbox.complete_batch(batch, [Outcome(k, v, "accepted") for k, v in leased if k in keys], {}, "r", 1.0)
    async with store.db.tx() as conn:
        await conn.execute(update(s.receipts).where(s.receipts.c.batch_id == batch.id)
                           .values(received_at=dt.datetime.fromisoformat(at).timestamp()))


async def build_ledger(store: Store) -> None:
    """Penalties of two departments and one licence, some delivered on time, some late, some not at all."""
    await intake(store, [record("p-on-time", "2026-02-12"), record("p-late-utc", "2026-02-12"),
                         record("p-b-early", "2026-02-10", POLICE),
                         record("l-on-time", "2026-02-13", dataset="license")])
    await deliver(store, ["p-on-time"], "2026-02-28T23:59:00+08:00")  # the last minute of the due date
    await deliver(store, ["p-late-utc"], "2026-03-01T07:00:00+08:00")  # still 02-28 in UTC, but late in China
    await deliver(store, ["p-b-early"], "2026-02-11T10:00:00+08:00")
    await deliver(store, ["l-on-time"], "2026-03-02T09:00:00+08:00", dataset="license")
    await intake(store, [record("p-overdue", "2026-02-12"), record("p-at-risk", "2026-02-24"),
                         record("p-pending", "2026-02-25"), record("p-b-overdue", "2026-02-10", POLICE)])


def counts(report: TimelinessReport) -> dict[tuple[str, str], dict[str, int]]:
    return {(g.dataset, g.department): {k: v for k, v in g.counts.items() if v} for g in report.groups}


def late_keys(report: TimelinessReport) -> dict[tuple[str, str], list[str]]:
    return {(g.dataset, g.department): g.late_keys for g in report.groups}


class TestClassification:
    async def test_counts_per_department_and_dataset(self, store: Store) -> None:
        """Each record lands in its class, counted per deciding body and dataset."""
        await build_ledger(store)
        report = await timeliness_report(store.reports, CALENDAR, today=TODAY)
        assert counts(report) == {
            ("license", MARKET): {"on_time": 1},
            ("penalty", MARKET): {"on_time": 1, "late": 2, "at_risk": 1, "pending": 1},
            ("penalty", POLICE): {"on_time": 1, "late": 1},
        }
        assert report.totals()["penalty"] == {"on_time": 2, "late": 3, "at_risk": 1, "pending": 1, "uncovered": 0}
        assert report.uncovered == []

    async def test_late_keys_name_the_late_records(self, store: Store) -> None:
        """Late delivered and overdue undelivered records are listed, oldest decision first, then by key."""
        await build_ledger(store)
        report = await timeliness_report(store.reports, CALENDAR, today=TODAY)
        assert late_keys(report) == {("license", MARKET): [], ("penalty", MARKET): ["p-late-utc", "p-overdue"],
                                     ("penalty", POLICE): ["p-b-overdue"]}

    @pytest.mark.parametrize(("days", "expected"), [
        (0, {"at_risk": 0, "pending": 2}),  # 02-24 is due 03-04: two working days away
        (2, {"at_risk": 1, "pending": 1}),
        (3, {"at_risk": 2, "pending": 0}),  # 02-25 is due 03-05: three working days away
    ])
    async def test_at_risk_window(self, store: Store, days: int, expected: dict[str, int]) -> None:
        """Undelivered records due within --at-risk-days working days are at risk, later ones pending."""
        await build_ledger(store)
        total = (await timeliness_report(store.reports, CALENDAR, today=TODAY, at_risk_days=days)).totals()["penalty"]
        assert {k: total[k] for k in expected} == expected

    async def test_due_today_is_at_risk_and_the_day_after_late(self, store: Store) -> None:
        """On the due date itself an undelivered record is at risk; the next day it is late."""
        await intake(store, [record("p", "2026-02-24")])  # due 03-04
        on_due = await timeliness_report(store.reports, CALENDAR, today=D("2026-03-04"), at_risk_days=0)
        after = await timeliness_report(store.reports, CALENDAR, today=D("2026-03-05"))
        assert counts(on_due) == {("penalty", MARKET): {"at_risk": 1}}
        assert counts(after) == {("penalty", MARKET): {"late": 1}}

    async def test_first_delivery_counts_not_the_latest_version(self, store: Store) -> None:
        """A record published on time stays on time when a corrected version is sent after the due date."""
        await intake(store, [record("p", "2026-02-12")])
        await deliver(store, ["p"], "2026-02-13T10:00:00+08:00")
        await intake(store, [record("p", "2026-02-12", note="（更正）")])
        await deliver(store, ["p"], "2026-03-10T10:00:00+08:00")
        await intake(store, [record("p", "2026-02-12", note="（再更正）")])  # v3 not delivered yet
        assert counts(await timeliness_report(store.reports, CALENDAR, today=TODAY)) == {("penalty",
                                                                                          MARKET): {"on_time": 1}}

    async def test_dataset_filter(self, store: Store) -> None:
        """datasets limits the report to those datasets."""
        await build_ledger(store)
        report = await timeliness_report(store.reports, CALENDAR, today=TODAY, datasets=["license"])
        assert counts(report) == {("license", MARKET): {"on_time": 1}}


class TestTargets:
    async def test_any_target_or_one_target(self, store: Store) -> None:
        """By default the first delivery to any target counts; with a target, only deliveries to it."""
        await intake(store, [record("a", "2026-02-12"), record("b", "2026-02-12")], TWO_TARGETS)
        await deliver(store, ["a"], "2026-02-20T10:00:00+08:00", target="national")
        await deliver(store, ["a", "b"], "2026-03-01T10:00:00+08:00", target="province")
        anywhere = await timeliness_report(store.reports, CALENDAR, today=TODAY)
        province = await timeliness_report(store.reports, CALENDAR, today=TODAY, target="province")
        national = await timeliness_report(store.reports, CALENDAR, today=TODAY, target="national")
        assert counts(anywhere) == {("penalty", MARKET): {"on_time": 1, "late": 1}}
        assert counts(province) == {("penalty", MARKET): {"late": 2}}
        assert counts(national) == {("penalty", MARKET): {"on_time": 1, "late": 1}}
        assert late_keys(national) == {("penalty", MARKET): ["b"]}  # never delivered there, and overdue


class TestLimitsAndGaps:
    async def test_late_keys_are_capped_oldest_first(self, store: Store) -> None:
        """Only the first LATE_KEYS late keys are listed, the oldest decisions first; the count is complete."""
        early = [f"k{i:02d}" for i in range(5)]
        later = [f"j{i:02d}" for i in range(17)]
        await intake(store, [record(k, "2026-02-02") for k in early] + [record(k, "2026-02-10") for k in later])
        report = await timeliness_report(store.reports, CALENDAR, today=TODAY)
        group, = report.groups
        assert group.counts["late"] == 22
        assert group.late_keys == early + later[:LATE_KEYS - 5]

    async def test_dates_the_calendar_lacks_are_uncovered_not_guessed(self, store: Store) -> None:
        """A decision whose due date runs into a year without a schedule is counted apart and explained."""
        cal = WorkCalendar(official=Official.from_package(until_year=2026))
        await intake(store, [record("dec", "2026-12-28"), record("feb", "2026-02-12")])
        report = await timeliness_report(store.reports, cal, today=TODAY)
        assert counts(report) == {("penalty", MARKET): {"uncovered": 1, "late": 1}}
        message, = report.uncovered
        assert "2027-01-01" in message and "[calendar]" in message

    async def test_rows_are_grouped_in_the_store(self, store: Store) -> None:
        """One row per department and decision date: records, delivered, in time; a deadline asked once per date."""
        await intake(store, [record(k, "2026-02-12") for k in ("a", "b", "c", "d")] + [record("e", "2026-02-10")]
                     + [record("f", "2026-02-09")])
        await deliver(store, ["a", "b", "f"], "2026-02-28T23:30:00+08:00")
        await deliver(store, ["c"], "2026-03-01T00:00:00+08:00")  # the deadline itself is late
        asked: list[str] = []
        midnight = dt.datetime.fromisoformat("2026-03-01T00:00:00+08:00").timestamp()

        def deadline(decision: str | None) -> float | None:
            asked.append(str(decision))
            return midnight if decision == "2026-02-12" else None  # 02-09: no deadline known

        rows = sorted(await store.reports.timeliness_rows(deadline))
        assert sorted(asked) == ["2026-02-09", "2026-02-12"]  # only dates with deliveries need a deadline
        assert rows == [("penalty", MARKET, "2026-02-09", 1, 1, 0), ("penalty", MARKET, "2026-02-10", 1, 0, 0),
                        ("penalty", MARKET, "2026-02-12", 4, 3, 2)]


def config_for(tmp_path: Path, store_url: str) -> Path:
    path = write_config(tmp_path, url="http://127.0.0.1:9/api", db=tmp_path / "department.db", token="t" * 24)
    text = path.read_text(encoding="utf-8").replace('url = "sqlite:///spool/gateway.db"', f'url = "{store_url}"')
    path.write_text(text, encoding="utf-8")
    return path


class TestCommands:
    async def test_timeliness_prints_the_table_and_late_keys(self, store: Store, store_url: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
        """`credit-gateway timeliness` prints counts per department and dataset, then the late keys."""
        await build_ledger(store)
        args = build_parser().parse_args(["-c", str(config_for(tmp_path, store_url)), "timeliness",
                                          "--today", "2026-03-02"])
        assert await cli_ops.cmd_timeliness(args) == 0
        lines = [line.split() for line in capsys.readouterr().out.splitlines()]
        assert ["penalty", MARKET, "1", "2", "1", "1", "0"] in lines
        assert ["penalty", POLICE, "1", "1", "0", "0", "0"] in lines
        assert ["late", "penalty", f"{MARKET}:", "p-late-utc,", "p-overdue"] in lines

    async def test_timeliness_json(self, store: Store, store_url: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
        """--json prints totals per dataset and the departments with their late keys."""
        await build_ledger(store)
        args = build_parser().parse_args(["-c", str(config_for(tmp_path, store_url)), "timeliness", "--json",
                                          "--today", "2026-03-02", "--at-risk-days", "3", "--dataset", "penalty"])
        await cli_ops.cmd_timeliness(args)
        report = orjson.loads(capsys.readouterr().out)
        assert report["datasets"] == {"penalty": {"on_time": 2, "late": 3, "at_risk": 2, "pending": 0, "uncovered": 0}}
        assert {d["department"]: d["late_keys"] for d in report["departments"]} == {
            MARKET: ["p-late-utc", "p-overdue"], POLICE: ["p-b-overdue"]}

    async def test_unknown_target_is_a_usage_error(self, store_url: str, tmp_path: Path) -> None:
        """--target must name a configured target."""
        args = build_parser().parse_args(["-c", str(config_for(tmp_path, store_url)), "timeliness",
                                          "--target", "nowhere"])
        with pytest.raises(ConfigError, match="unknown target 'nowhere'; configured: platform"):
            await cli_ops.cmd_timeliness(args)

    async def test_status_shows_one_line_per_dataset(self, store: Store, store_url: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
        """`status` prints on time / late / at risk per dataset (as of today: every due date has passed)."""
        await build_ledger(store)
        config = str(config_for(tmp_path, store_url))
        await cli_ops.cmd_status(build_parser().parse_args(["-c", config, "status"]))
        text = capsys.readouterr().out
        assert "timeliness license: on time 1, late 0, at risk 0\n" in text
        assert "timeliness penalty: on time 2, late 5, at risk 0\n" in text
        await cli_ops.cmd_status(build_parser().parse_args(["-c", config, "status", "--json"]))
        # Only the "timeliness" member is decoded: out() masks any 18-digit run as an ID number, and now and
        # then the fraction of a small float elsewhere (oldest_pending_s) is one.
        text = capsys.readouterr().out
        status, _ = json.JSONDecoder().raw_decode(text, text.index('"timeliness": ') + len('"timeliness": '))
        assert status["datasets"]["penalty"]["late"] == 5
