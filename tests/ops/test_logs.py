"""Tests for gateway.logs: secrets and ID numbers never leave in a log line; JSON lines are valid JSON.

Each test logs through its own logger with a real handler writing to a StringIO (not propagated to the
root), so nothing here depends on pytest's log capture or on global logging state.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import logging
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

from gateway.logs import JsonFormatter, Redactor, TextFormatter, log_stray_output, redact, setup_logging

VALID_ID = "11010519491231002X"  # GB 11643's own example
INVALID_ID = "110105194912310021"  # same number, wrong check character
SECRET = "tok-3f9c2a71e6b84d05"
DIGIT_USCC = "913205053041720986"  # a valid USCC of digits only, and no possible ID number (no such birth date)
_names = itertools.count()


def masked(number: str) -> str:
    """How an 18-character number must look after masking: birth date starred."""
    return number[:6] + "*" * 8 + number[14:]


class Capture:
    """A logger with one handler (JSON or text) and the Redactor, writing into a buffer."""

    def __init__(self, formatter: logging.Formatter, secrets: tuple[str, ...] = (SECRET,)) -> None:
        self.buffer = io.StringIO()
        handler = logging.StreamHandler(self.buffer)
        handler.setFormatter(formatter)
        handler.addFilter(Redactor(secrets))
        self.logger = logging.getLogger(f"test.logs.{next(_names)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(handler)
        self.handler = handler

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.text.splitlines()]


@pytest.fixture
def json_log() -> Iterator[Capture]:
    capture = Capture(JsonFormatter())
    yield capture
    capture.close()


@pytest.fixture
def text_log() -> Iterator[Capture]:
    capture = Capture(TextFormatter())
    yield capture
    capture.close()


class TestRedact:
    @pytest.mark.parametrize("number", [VALID_ID, INVALID_ID, VALID_ID.lower(), "000000000000000000"])
    def test_any_18_character_id_is_masked(self, number: str) -> None:
        """Valid or not, lower-case x or not, an 18-character ID number loses its birth date."""
        text = redact(f"证件号码{number}的当事人")
        assert number not in text
        assert masked(number.upper()) in text

    def test_not_masked_inside_longer_runs_or_codes_with_letters(self) -> None:
        """A USCC with letters and a 19-digit number are not ID numbers."""
        text = "USCC 91230500MA1B3N1N2M order 1101051949123100212"
        assert redact(text) == text

    @pytest.mark.parametrize("text", [DIGIT_USCC, f"uscc: USCC {DIGIT_USCC}: check character should be 1, not 6",
                                      f"苏市监罚〔2026〕1号|{DIGIT_USCC}"])
    def test_an_all_digit_uscc_labelled_as_one_is_public(self, text: str) -> None:
        """A USCC is public: an all-digit one is left alone where the text says it is a USCC (a field's whole
        value, a USCC reason, a record key's authority part), not masked like an ID number (issue 17, 7)."""
        assert redact(text) == text

    def test_an_all_digit_uscc_in_free_text_stays_masked(self) -> None:
        """Unlabelled, it could be a mistyped ID number that passes the USCC check by chance: masked."""
        assert redact(f"证件号码 {DIGIT_USCC}") == f"证件号码 {masked(DIGIT_USCC)}"

    def test_a_whole_value_that_is_a_valid_id_is_masked(self) -> None:
        """A valid ID number is masked even as a whole value that happens to pass the USCC check too."""
        assert redact(VALID_ID) == masked(VALID_ID)

    def test_several_numbers_in_one_text(self) -> None:
        """Every number in the text is masked."""
        text = redact(f"{VALID_ID},{INVALID_ID}")
        assert text == f"{masked(VALID_ID)},{masked(INVALID_ID)}"

    def test_secrets_are_removed(self) -> None:
        """A registered secret is replaced wherever it appears."""
        text = redact(f"Authorization: Bearer {SECRET}; again {SECRET}", [SECRET])
        assert SECRET not in text
        assert text.count("***") == 2

    @pytest.mark.parametrize("url", ["postgresql://gw:s3cret-pw@db.local:5432/gw",
                                     "postgresql+asyncpg://gw:s3cret-pw@db.local/gw", "mysql://u:s3cret-pw@h/x"])
    def test_url_passwords_are_removed(self, url: str) -> None:
        """The password of a URL with credentials is never printed; user, host and database stay."""
        text = redact(f"store.url {url!r}: connection refused")
        assert "s3cret-pw" not in text and ":***@" in text

    def test_urls_without_passwords_are_left(self) -> None:
        """Ports, plain URLs and user-only URLs are not touched."""
        for text in ("http://127.0.0.1:8080/api/v1/upload", "sqlite:///spool/gateway.db", "https://u@h/x"):
            assert redact(text) == text

    def test_empty_secret_is_ignored(self) -> None:
        """An empty secret does not turn every gap into stars."""
        assert redact("plain text", [""]) == "plain text"


class TestRedactor:
    def test_message_with_arguments(self, json_log: Capture) -> None:
        """An ID passed as a %-argument is masked in the event."""
        json_log.logger.info("row for %s quarantined", VALID_ID)
        assert json_log.lines()[0]["event"] == f"row for {masked(VALID_ID)} quarantined"

    def test_invalid_id_in_message(self, json_log: Capture) -> None:
        """An ID number with a wrong check character is masked too."""
        json_log.logger.warning(f"bad id {INVALID_ID}")
        assert INVALID_ID not in json_log.text
        assert masked(INVALID_ID) in json_log.text

    def test_string_extra_fields(self, json_log: Capture) -> None:
        """ID numbers and secrets in string extra fields are masked."""
        json_log.logger.info("rejected", extra={"reasons": f"id_no: ID {INVALID_ID}: check", "auth": SECRET})
        line = json_log.lines()[0]
        assert line["reasons"] == f"id_no: ID {masked(INVALID_ID)}: check"
        assert line["auth"] == "***"

    def test_secret_in_message(self, json_log: Capture) -> None:
        """A registered secret in the message becomes ***."""
        json_log.logger.error("sent token %s", SECRET)
        assert SECRET not in json_log.text
        assert json_log.lines()[0]["event"] == "sent token ***"

    def test_nested_extra_fields(self, json_log: Capture) -> None:
        """ID numbers and secrets inside list or dict extra fields (e.g. a raw row) are masked too."""
        json_log.logger.warning("row quarantined", extra={"row": {"zjhm": VALID_ID, "token": SECRET},
                                                          "ids": [INVALID_ID]})
        assert VALID_ID not in json_log.text
        assert INVALID_ID not in json_log.text
        assert SECRET not in json_log.text

    def test_exception_text(self, json_log: Capture) -> None:
        """An exception whose message carries an ID number or a secret is masked in the logged traceback."""
        try:
            raise ValueError(f"cannot map {VALID_ID} with {SECRET}")
        except ValueError:
            json_log.logger.exception("mapping failed")
        assert "ValueError" in json_log.lines()[0]["exc"]
        assert VALID_ID not in json_log.text
        assert SECRET not in json_log.text

    def test_text_format_is_redacted_too(self, text_log: Capture) -> None:
        """The text formatter gets the same masking."""
        text_log.logger.info("id %s", VALID_ID, extra={"token": SECRET})
        assert VALID_ID not in text_log.text and SECRET not in text_log.text
        assert masked(VALID_ID) in text_log.text

    def test_text_format_keeps_one_event_a_line(self, text_log: Capture) -> None:
        """A line break or an ESC sequence in a value is written as an escape: no forged second line, nothing
        for the terminal to obey (issue 17, 4 and 13)."""
        text_log.logger.error("malformed file rejected", extra={"file": "a.csv\n12:00:00 info    all good\x1b[2J"})
        assert text_log.text.count("\n") == 1 and "\x1b" not in text_log.text
        assert "a.csv\\x0a12:00:00 info    all good\\x1b[2J" in text_log.text

    def test_secrets_given_to_the_redactor_only(self) -> None:
        """Without the secret registered it is not removed: the test above relies on registration."""
        capture = Capture(JsonFormatter(), secrets=())
        try:
            capture.logger.info("token %s", SECRET)
            assert SECRET in capture.text
        finally:
            capture.close()


class TestJsonFormatter:
    def test_one_line_of_valid_json_with_extras(self, json_log: Capture) -> None:
        """Each event is one line of JSON with ts, level, logger, event and the extra fields."""
        json_log.logger.info("batch delivered", extra={"target": "province", "delivered": 250, "ms": 12.5})
        assert json_log.text.count("\n") == 1
        line = json_log.lines()[0]
        assert line["event"] == "batch delivered"
        assert line["level"] == "info"
        assert line["logger"] == json_log.logger.name
        assert (line["target"], line["delivered"], line["ms"]) == ("province", 250, 12.5)
        assert dt.datetime.fromisoformat(line["ts"]).tzinfo is not None

    def test_newlines_stay_inside_the_json(self, json_log: Capture) -> None:
        """A multi-line message is still one line of output."""
        json_log.logger.warning("first\nsecond")
        assert len(json_log.text.splitlines()) == 1
        assert json_log.lines()[0]["event"] == "first\nsecond"

    def test_chinese_text_survives(self, json_log: Capture) -> None:
        """Chinese text round-trips unchanged."""
        json_log.logger.info("行政处罚已入库", extra={"source": "苏州市市场监督管理局"})
        line = json_log.lines()[0]
        assert (line["event"], line["source"]) == ("行政处罚已入库", "苏州市市场监督管理局")

    def test_values_json_cannot_hold_are_rendered(self, json_log: Capture) -> None:
        """Decimals, dates and other objects in extras are written as text, not dropped or crashing."""
        json_log.logger.info("x", extra={"amount": Decimal("0.5"), "day": dt.date(2024, 3, 1), "obj": object()})
        line = json_log.lines()[0]
        assert Decimal(str(line["amount"])) == Decimal("0.5")
        assert line["day"] == "2024-03-01"
        assert line["obj"].startswith("<object object")

    def test_each_event_is_its_own_line(self, json_log: Capture) -> None:
        """Three events give three parseable lines."""
        for i in range(3):
            json_log.logger.info("tick", extra={"i": i})
        assert [line["i"] for line in json_log.lines()] == [0, 1, 2]


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Restore the root logger after setup_logging replaced its handlers."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


class TestSetupLogging:
    def test_json_lines_with_redaction_and_level(self, root_logging: None) -> None:
        """setup_logging installs one JSON handler with the Redactor and the level."""
        stream = io.StringIO()
        setup_logging("warning", "json", [SECRET], stream=stream)
        log = logging.getLogger("test.logs.setup")
        log.info("dropped below the level")
        log.warning("token %s for %s", SECRET, VALID_ID)
        lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
        assert [line["event"] for line in lines] == [f"token *** for {masked(VALID_ID)}"]

    def test_text_format(self, root_logging: None) -> None:
        """log_format = "text" writes plain lines that are not JSON."""
        stream = io.StringIO()
        setup_logging("info", "text", stream=stream)
        logging.getLogger("test.logs.setup").info("hello", extra={"k": "v"})
        line = stream.getvalue().strip()
        assert "hello" in line and "k=v" in line
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(line)


class TestDriverLogs:
    async def test_sql_parameters_never_reach_the_log_at_debug(self, tmp_path: Any) -> None:
        """At log_level = debug the gateway's own debug lines appear, the database drivers' (which carry SQL
        parameters: ID and passport numbers in full) do not; a real aiosqlite query runs in between."""
        from gateway.store import open_store

        buffer = io.StringIO()
        root = logging.getLogger()
        saved = (list(root.handlers), root.level)
        try:
            setup_logging("debug", "json", (), stream=buffer)
            store = await open_store(f"sqlite:///{tmp_path / 'store.db'}")
            try:
                await store.intake.load_cursor("passport E12345678")
            finally:
                await store.aclose()
            logging.getLogger("gateway.test").debug("gateway debug line")
            logging.getLogger("aiosqlite").debug("executing %s with %r", "SELECT ?", ("E12345678",))
        finally:
            for handler in list(root.handlers):
                root.removeHandler(handler)
            for handler in saved[0]:
                root.addHandler(handler)
            root.setLevel(saved[1])
        text = buffer.getvalue()
        assert "gateway debug line" in text
        assert "E12345678" not in text and "aiosqlite" not in text


def _fail_in_thread() -> None:
    raise ValueError("boom in a thread")


class TestStrayOutput:
    def test_uncaught_exceptions_become_log_records(self, caplog: pytest.LogCaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """The daemon's log stays JSON: an exception nothing caught, in a thread or at the end of the process, is a
        log record with its traceback, not plain text on stderr (issue 17, 13)."""
        monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # restored afterwards
        monkeypatch.setattr(sys, "excepthook", sys.excepthook)
        try:
            log_stray_output()
            thread = threading.Thread(target=_fail_in_thread, name="doomed")
            with caplog.at_level(logging.ERROR, logger="gateway.crash"):
                thread.start()
                thread.join()
                sys.excepthook(RuntimeError, RuntimeError("the last one"), None)
        finally:
            logging.captureWarnings(False)
        found = [(r.getMessage(), getattr(r, "in_thread", None), _exception_text(r))
                 for r in caplog.records if r.name == "gateway.crash"]
        assert [(m, e) for m, _t, e in found] == [("uncaught exception in a thread", "ValueError: boom in a thread"),
                                                  ("uncaught exception", "RuntimeError: the last one")]
        assert found[0][1] == "doomed"


def _exception_text(record: logging.LogRecord) -> str:
    """The last line of a record's traceback (a Redactor installed by an earlier setup_logging renders it early)."""
    if record.exc_info and record.exc_info[1] is not None:
        return f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return (record.exc_text or "").splitlines()[-1] if record.exc_text else ""
