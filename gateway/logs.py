"""Structured logging: one line per event, JSON by default, with secrets and ID numbers masked.

Every record passes :class:`Redactor`, which replaces registered secrets (API tokens, passwords) with
``***`` (the password of any URL with credentials too: ``postgresql://gw:***@db/gw``) and masks any
18-character resident ID number, valid or not, wherever it appears in the line (but not an all-digit USCC
where the text says it is one, which only looks like an ID number: a USCC is public). A malformed ID number of
another shape is masked where it is made: the identifier checks quote it masked.
Logging is the one piece of global state the gateway has (configured once by the daemon or CLI).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import orjson

from gateway.domain.identifiers import check_resident_id, check_uscc, mask_id
from gateway.text import escape_controls

# 18 characters, not part of a longer token; not after a decimal point (the digits of a float are no ID).
_ID_RUN = re.compile(r"(?<![0-9A-Za-z.])\d{17}[\dXx](?![0-9A-Za-z])")
# The password of a URL with credentials (postgresql://user:secret@host/db): it is never printed.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]*(@)")
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _ID_RUN.sub(_mask_run, _URL_PASSWORD.sub(r"\1***\2", text))


def _mask_run(match: re.Match[str]) -> str:
    run = match.group(0)
    return run if _public_uscc(match) else mask_id(run.upper())


def _public_uscc(match: re.Match[str]) -> bool:
    """An all-digit run that is a valid USCC and no possible resident ID number, where the text says it is a USCC:
    the whole text (a USCC field's value), right after a record key's ``|`` (a deciding body's code,
    ``文书号|113205000141174379``) or after ``USCC `` (the identifier checks' reasons). Not elsewhere: in free text
    a mistyped ID number can pass the USCC check by chance (1 in 31), and must stay masked."""
    start, end, text, run = match.start(), match.end(), match.string, match.group(0)
    labelled = (start == 0 and end == len(text)) or (start > 0 and text[start - 1] == "|") or \
        text[:start].endswith("USCC ")
    return labelled and check_uscc(run) is None and check_resident_id(run) is not None


class Redactor(logging.Filter):
    """Masks secrets and ID numbers in the message and in every extra field."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _RESERVED:
                setattr(record, key, self._clean(value))
        if record.exc_info:  # tracebacks quote messages and values: render them now, redacted
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, self.secrets)
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(v) for v in value]
        if value is None or isinstance(value, bool | float | dt.date | dt.time):
            return value
        if isinstance(value, int):  # an ID number may come as a number; counts stay numbers
            text = str(value)
            return value if (masked := redact(text, self.secrets)) == text else masked
        return redact(str(value), self.secrets)  # the formatters would print str(value): mask that text now


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "event", ...extra}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "event": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _RESERVED)
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%H:%M:%S")
        # One event a line here too: a line break or an ESC sequence in a value (a file name, a database's message)
        # is written as an escape, not obeyed by the terminal or split into a line of its own.
        line = escape_controls(f"{stamp} {record.levelname.lower():7} {record.getMessage()}"
                               + (f"  {extra}" if extra else ""))
        if record.exc_info:
            return line + "\n" + self.formatException(record.exc_info)
        return line + ("\n" + record.exc_text if record.exc_text else "")


def log_stray_output() -> None:
    """The daemon's log is one JSON object a line: Python's warnings and the tracebacks of exceptions nothing
    caught (in a thread, or the last one of the process) become log records instead of plain text on stderr."""
    logging.captureWarnings(True)
    crash = logging.getLogger("gateway.crash")

    def thread_failed(info: threading.ExceptHookArgs) -> None:
        if info.exc_type is not SystemExit and info.exc_value is not None:
            crash.error("uncaught exception in a thread", exc_info=(info.exc_type, info.exc_value, info.exc_traceback),
                        extra={"in_thread": info.thread.name if info.thread else ""})

    def process_failed(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        crash.critical("uncaught exception", exc_info=(kind, value, tb))

    threading.excepthook = thread_failed
    sys.excepthook = process_failed


def setup_logging(level: str = "info", fmt: str = "json", secrets: Iterable[str] = (),
                  stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(Redactor(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Database drivers log SQL parameters at DEBUG, and parameters hold personal ID numbers in full (passport
    # numbers, too, which no pattern recognises): they stay at WARNING even when the gateway logs at debug.
    for noisy in ("aiohttp.access", "sqlalchemy", "aiosqlite", "asyncpg"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # "skipped: still running" is expected
