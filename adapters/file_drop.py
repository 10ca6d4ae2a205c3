"""File drop: batches written as files for a department system, and files a department system drops for us.

For systems that exchange files in a shared directory rather than by API or database (格式文件导入).

**Sink** (``targets.NAME.type = "file_drop"``): each batch becomes one data file in ``directory``, JSON Lines
or CSV in the configured encoding (e.g. GBK for old systems), named ``<tableCode>_<batchId>.<jsonl|csv>``,
then a manifest ``<tableCode>_<batchId>.manifest.json`` (UTF-8) with the record count and the data file's
SHA-256. Both are written to a temporary name, fsynced and renamed, the manifest last, and the directory is
fsynced: **a data file is complete when its manifest exists** — readers must wait for the manifest. Each
record carries ``_key``, ``_version`` and ``_operation`` besides its mapped fields. Writing is idempotent by
batch id: a batch sent again whose manifest exists is answered from the manifest (records ``duplicate``), a
different body under the same id is refused. A record that cannot be written in the encoding (a character
GBK lacks) is rejected with the field named; the rest of the batch is written.

**Source** (``sources.NAME.type = "file_drop"``): reads the files the department system drops in ``inbox``
(``*.jsonl`` / ``*.csv`` by default; ``format = "auto"`` goes by extension), in name order, decoded with
``encoding``. Nothing half-written is read: with ``ready = "marker"`` (default) a file is read only once a
marker ``<file>.done`` exists beside it (write the file, close it, then create the marker); with
``ready = "rename"`` a file is read once it has its final name (write to ``<file>.part``, ``.tmp`` or a
name starting with ``.``, then rename). The cursor (file, its size and mtime, rows taken) is saved with the
rows; only after that commit does the file move to ``done/`` (a restart between the two finishes the move and
reads nothing twice). A file that cannot be parsed — bytes not in the encoding, a line that is not a JSON
object, a CSV row with the wrong number of fields — is not read at all: it moves to ``rejected/`` beside a
``<file>.error`` that names the file and line, and the log says the same. Rows whose values are wrong are
mapped and quarantined one by one, keyed ``<file>:<line>``.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import datetime as dt
import hashlib
import io
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import orjson

from gateway.adapter import AdapterContext, OutgoingBatch, Receipt, RecordResult, SourceBatch, SourceRow, TargetRecord
from gateway.errors import PermanentError, Problem, RetryableError
from gateway.settings import parse_settings, setting

log = logging.getLogger("adapters.file_drop")
META = ("_key", "_version", "_operation")
EXTENSIONS = {"jsonl": "jsonl", "csv": "csv"}


def _check_encoding(encoding: str, where: str) -> list[Problem]:
    try:
        codecs.lookup(encoding)
    except LookupError:
        return [Problem(f"{where}.encoding", f"unknown encoding {encoding!r}")]
    return []


def _resolve(base: Path, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else base / path


def _write_atomically(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename: a reader sees the whole file under its name, or nothing."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- sink

@dataclass(frozen=True)
class FileDropSinkSettings:
    directory: str = setting(help="where batch files are written (the department system reads them there)")
    format: str = setting("jsonl", choices=("jsonl", "csv"), help="jsonl: one JSON object per line; csv: a header")
    encoding: str = setting("utf-8", help="text encoding of the data files (utf-8, gbk, gb18030)")


@dataclass(frozen=True)
class _Rendered:
    data: bytes
    results: list[dict[str, Any]]  # per record: recordKey, version, status, errorCode, errorMsg
    written: int


class FileDropSink:
    """Writes each batch as a data file plus a manifest, atomically and once per batch id."""

    Settings: ClassVar[type] = FileDropSinkSettings  # its TOML table, documented in docs/configuration.md

    def __init__(self, settings: FileDropSinkSettings, directory: Path, name: str) -> None:
        self.settings, self.directory, self.name = settings, directory, name

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any], ctx: AdapterContext) -> tuple[FileDropSink | None, list[Problem]]:
        settings, problems = parse_settings(FileDropSinkSettings, raw, ctx.path, ctx.common_keys)
        if settings is None:
            return None, problems
        problems += _check_encoding(settings.encoding, ctx.path)
        directory = _resolve(ctx.base_dir, settings.directory)
        if directory.exists() and not directory.is_dir():
            problems.append(Problem(f"{ctx.path}.directory", f"{directory} is not a directory"))
        return (cls(settings, directory, ctx.name), []) if not problems else (None, problems)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    def encode(self, batch_id: str, dataset: str, table_code: str, records: Sequence[TargetRecord]) -> bytes:
        """The stored body is UTF-8 JSON; the file's format and encoding are applied when it is written."""
        return orjson.dumps({"batchId": batch_id, "dataset": dataset, "tableCode": table_code, "records": [
            {"key": r.key, "version": r.version, "operation": r.operation, "fields": r.fields} for r in records]})

    async def deliver(self, batch: OutgoingBatch) -> Receipt:
        try:
            return await asyncio.to_thread(self._deliver, batch)
        except OSError as exc:
            raise RetryableError(f"target {self.name}: cannot write in {self.directory}: {exc}") from exc

    def _deliver(self, batch: OutgoingBatch) -> Receipt:
        try:
            body = orjson.loads(batch.body)
        except orjson.JSONDecodeError as exc:
            raise PermanentError(f"target {self.name}: the batch body is not JSON (a file drop takes no envelope)") \
                from exc
        base = f"{body['tableCode'] or body['dataset']}_{batch.id}"
        data_path = self.directory / f"{base}.{EXTENSIONS[self.settings.format]}"
        manifest_path = self.directory / f"{base}.manifest.json"
        body_sha256 = hashlib.sha256(batch.body).hexdigest()
        if manifest_path.exists():
            return self._again(manifest_path, body_sha256, batch.id)
        rendered = self._render(body["records"])
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_atomically(data_path, rendered.data)
        manifest = {
            "batchId": batch.id, "dataset": body["dataset"], "tableCode": body["tableCode"], "file": data_path.name,
            "format": self.settings.format, "encoding": self.settings.encoding, "records": rendered.written,
            "sha256": hashlib.sha256(rendered.data).hexdigest(), "bodySha256": body_sha256,
            "createdAt": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "results": rendered.results}
        _write_atomically(manifest_path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        _fsync_dir(self.directory)
        return _receipt(manifest, manifest_path.name, again=False)

    def _again(self, manifest_path: Path, body_sha256: str, batch_id: str) -> Receipt:
        """The batch was written before (its answer was lost): answer from the manifest, write nothing."""
        manifest = orjson.loads(manifest_path.read_bytes())
        if manifest.get("bodySha256") != body_sha256:
            raise PermanentError(f"target {self.name}: batch {batch_id} was written before with a different body")
        return _receipt(manifest, manifest_path.name, again=True)

    def _render(self, records: Sequence[Mapping[str, Any]]) -> _Rendered:
        if self.settings.format == "jsonl":
            return self._render_lines(records)
        return self._render_csv(records)

    def _render_lines(self, records: Sequence[Mapping[str, Any]]) -> _Rendered:
        chunks: list[bytes] = []
        results = []
        for rec in records:
            line = orjson.dumps({"_key": rec["key"], "_version": rec["version"], "_operation": rec["operation"],
                                 **rec["fields"]}).decode() + "\n"
            results.append(self._encode_into(chunks, line, rec))
        return _Rendered(b"".join(chunks), results, sum(r["status"] == "accepted" for r in results))

    def _render_csv(self, records: Sequence[Mapping[str, Any]]) -> _Rendered:
        columns = list(META)
        for rec in records:
            columns += [name for name in rec["fields"] if name not in columns]
        chunks = [self._encoded_row(columns)]
        results = []
        for rec in records:
            values = {"_key": rec["key"], "_version": rec["version"], "_operation": rec["operation"], **rec["fields"]}
            results.append(self._encode_into(chunks, _csv_line([_cell(values.get(c)) for c in columns]), rec))
        return _Rendered(b"".join(chunks), results, sum(r["status"] == "accepted" for r in results))

    def _encoded_row(self, cells: Sequence[str]) -> bytes:
        return _csv_line(cells).encode(self.settings.encoding)

    def _encode_into(self, chunks: list[bytes], text: str, rec: Mapping[str, Any]) -> dict[str, Any]:
        result = {"recordKey": rec["key"], "version": rec["version"]}
        try:
            chunks.append(text.encode(self.settings.encoding))
        except UnicodeEncodeError:
            encoding = self.settings.encoding
            field = next((name for name, value in rec["fields"].items() if not _encodable(value, encoding)), "")
            return {**result, "status": "rejected", "errorCode": "encoding",
                    "errorMsg": f"{field}: a character cannot be written in {self.settings.encoding}"}
        return {**result, "status": "accepted", "errorCode": "", "errorMsg": ""}


def _encodable(value: Any, encoding: str) -> bool:
    try:
        str(value).encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _csv_line(cells: Sequence[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


def _receipt(manifest: Mapping[str, Any], name: str, again: bool) -> Receipt:
    results = [RecordResult(str(r["recordKey"]), int(r["version"]),
                            "duplicate" if again and r["status"] == "accepted" else str(r["status"]),
                            str(r.get("errorCode") or ""), str(r.get("errorMsg") or ""))
               for r in manifest.get("results", [])]
    receipt = {"receiptId": name, "batchId": manifest["batchId"], "file": manifest["file"],
               "records": manifest["records"], "sha256": manifest["sha256"], "bodySha256": manifest["bodySha256"]}
    return Receipt(name, results, {"receipt": receipt, "results": manifest.get("results", []), "again": again})


# ---------------------------------------------------------------- source

@dataclass(frozen=True)
class FileDropSourceSettings:
    inbox: str = setting(help="directory the department system drops its files into")
    format: str = setting("auto", choices=("auto", "jsonl", "csv"), help="auto: .jsonl/.json are JSON Lines, .csv CSV")
    encoding: str = setting("utf-8", help="text encoding of the files (utf-8, gbk, gb18030)")
    ready: str = setting("marker", choices=("marker", "rename"),
                         help="marker: read <file> once <file>.done exists; rename: read files under their final name")
    patterns: list[str] = setting(["*.jsonl", "*.csv"], help="which files in the inbox are data files")
    done_dir: str = setting("done", help="processed files move here (relative to the inbox)")
    rejected_dir: str = setting("rejected", help="malformed files move here, each with a <file>.error")


class MalformedFile(ValueError):
    """A dropped file that cannot be parsed; the message names the file and line."""


@dataclass(frozen=True)
class _Position:
    file: str
    id: str  # size:mtime_ns: a new file under an old name is a new file
    rows: int
    done: bool

    @classmethod
    def parse(cls, cursor: Any) -> _Position | None:
        if not isinstance(cursor, dict) or "file" not in cursor:
            return None
        return cls(str(cursor["file"]), str(cursor.get("id", "")), int(cursor.get("rows", 0)),
                   bool(cursor.get("done")))

    def cursor(self) -> dict[str, Any]:
        return {"file": self.file, "id": self.id, "rows": self.rows, "done": self.done}


class FileDropSource:
    """Reads complete files from an inbox, page by page; a file leaves the inbox after its rows are committed."""

    Settings: ClassVar[type] = FileDropSourceSettings  # its TOML table, documented in docs/configuration.md

    def __init__(self, settings: FileDropSourceSettings, inbox: Path, name: str) -> None:
        self.settings, self.inbox, self.name = settings, inbox, name
        self.done_dir = _resolve(inbox, settings.done_dir)
        self.rejected_dir = _resolve(inbox, settings.rejected_dir)
        self._resumed = False  # the engine's first fetch starts from the committed cursor: finish its file
        self._parsed: tuple[str, str, list[tuple[int, dict[str, Any]]]] | None = None  # (file, id, rows)
        # Files whose last page was handed out and is not acknowledged yet (name -> id): the engine reads ahead
        # while earlier pages commit, and the cursor names only the newest file, so these must not be read again.
        self._taken: dict[str, str] = {}
        self._handed: Any = None  # the cursor of the last page handed out: a fetch from elsewhere is a new poll

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any],
                      ctx: AdapterContext) -> tuple[FileDropSource | None, list[Problem]]:
        settings, problems = parse_settings(FileDropSourceSettings, raw, ctx.path, ctx.common_keys)
        if settings is None:
            return None, problems
        problems += _check_encoding(settings.encoding, ctx.path)
        if not settings.patterns:
            problems.append(Problem(f"{ctx.path}.patterns", "at least one file pattern is needed"))
        inbox = _resolve(ctx.base_dir, settings.inbox)
        if inbox.exists() and not inbox.is_dir():
            problems.append(Problem(f"{ctx.path}.inbox", f"{inbox} is not a directory"))
        return (cls(settings, inbox, ctx.name), []) if not problems else (None, problems)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    async def fetch(self, cursor: Any, limit: int) -> SourceBatch:
        try:
            return await asyncio.to_thread(self._fetch, cursor, limit)
        except OSError as exc:
            raise RetryableError(f"source {self.name}: cannot read {self.inbox}: {exc}") from exc

    async def ack(self, cursor: Any) -> None:
        """The rows up to ``cursor`` are committed: a file they finished leaves the inbox."""
        try:
            await asyncio.to_thread(self._finish, _Position.parse(cursor))
        except OSError as exc:  # it stays in the inbox; read again later, its rows are recognised as unchanged
            log.error("cannot move a processed file", extra={"source": self.name, "error": str(exc)})

    # ------------------------------------------------------------ reading

    def _fetch(self, cursor: Any, limit: int) -> SourceBatch:
        if not self._resumed:
            self._resumed = True
            self._finish(_Position.parse(cursor))  # a restart between a commit and its ack
        if cursor != self._handed:  # not reading ahead: whatever was handed out after ``cursor`` was not committed
            self._taken.clear()
        pos = _Position.parse(cursor)
        for path in self._ready_files():
            try:
                ident = _identity(path)
            except FileNotFoundError:  # moved by the ack of an earlier page meanwhile
                continue
            same = pos is not None and pos.file == path.name and pos.id == ident
            if (same and pos is not None and pos.done) or self._taken.get(path.name) == ident:
                continue  # taken; it moves once its rows are committed
            start = pos.rows if same and pos is not None else 0
            try:
                rows = self._rows(path, ident)
            except MalformedFile as exc:
                self._reject(path, str(exc))
                continue
            page = rows[start:start + limit]
            if not page:  # an empty file: nothing to take
                self._move(path, self.done_dir)
                continue
            end = start + len(page)
            position = _Position(path.name, ident, end, end >= len(rows))
            if position.done:
                self._taken[path.name] = ident
            self._handed = position.cursor()
            return SourceBatch([SourceRow(f"{path.name}:{line}", data) for line, data in page], self._handed, True)
        self._handed = cursor
        return SourceBatch([], cursor, False)

    def _ready_files(self) -> list[Path]:
        if not self.inbox.is_dir():
            return []
        found = []
        for path in sorted(self.inbox.iterdir()):
            name = path.name
            if name.startswith(".") or name.endswith((".part", ".tmp", ".done", ".error")) or not path.is_file():
                continue
            if not any(path.match(p) for p in self.settings.patterns):
                continue
            if self.settings.ready == "marker" and not _marker(path).exists():
                continue
            found.append(path)
        return found

    def _rows(self, path: Path, ident: str) -> list[tuple[int, dict[str, Any]]]:
        if self._parsed is not None and self._parsed[:2] == (path.name, ident):
            return self._parsed[2]
        text = self._decode(path)
        rows = _parse_csv(path.name, text) if self._format(path) == "csv" else _parse_lines(path.name, text)
        self._parsed = (path.name, ident, rows)
        return rows

    def _format(self, path: Path) -> str:
        if self.settings.format != "auto":
            return self.settings.format
        return "csv" if path.suffix.lower() == ".csv" else "jsonl"

    def _decode(self, path: Path) -> str:
        data = path.read_bytes()
        encoding = self.settings.encoding
        try:
            return data.decode("utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding)
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            hint = ""
            if codecs.lookup(encoding).name == "utf-8" and _decodes(data, "gb18030"):
                hint = ' (it decodes as GBK: set encoding = "gbk" for this source)'
            raise MalformedFile(f"{path.name} line {line}: not {encoding} at byte {exc.start}{hint}") from None

    # ------------------------------------------------------------ moving files

    def _finish(self, pos: _Position | None) -> None:
        """Move the file ``pos`` finished out of the inbox (if it is still there, unchanged). If it cannot be
        moved it is read again later (its rows are recognised as unchanged) and moved then."""
        if pos is None or not pos.done:
            return
        path = self.inbox / pos.file
        try:
            if path.is_file() and _identity(path) == pos.id:
                self._move(path, self.done_dir)
        finally:
            self._taken.pop(pos.file, None)

    def _reject(self, path: Path, reason: str) -> None:
        log.error("malformed file rejected", extra={"source": self.name, "file": path.name, "error": reason})
        target = self._move(path, self.rejected_dir)
        _write_atomically(target.with_name(target.name + ".error"), (reason + "\n").encode("utf-8"))

    def _move(self, path: Path, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / path.name
        n = 1
        while target.exists():  # a file of the same name was processed before: keep both
            target = directory / f"{path.stem}.{n}{path.suffix}"
            n += 1
        os.replace(path, target)
        _marker(path).unlink(missing_ok=True)
        if self._parsed is not None and self._parsed[0] == path.name:
            self._parsed = None
        return target


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def _identity(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _parse_lines(name: str, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    # JSON Lines end at "\n" only: str.splitlines() would also split at U+2028, U+2029 and U+0085, which JSON
    # allows unescaped inside strings (a "\r" before the "\n" is JSON whitespace and parses).
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise MalformedFile(f"{name} line {number}: invalid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise MalformedFile(f"{name} line {number}: expected a JSON object, got {type(value).__name__}")
        rows.append((number, value))
    return rows


def _parse_csv(name: str, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header or not all(h.strip() for h in header):
            raise MalformedFile(f"{name} line 1: a header row with a name for every column is needed")
        names = [h.strip() for h in header]
        if len(set(names)) != len(names):
            raise MalformedFile(f"{name} line 1: duplicate column names")
        rows = []
        start = reader.line_num + 1
        for cells in reader:
            if cells and any(c.strip() for c in cells):
                if len(cells) != len(names):
                    hint = " (a quote is not closed where it should be)" if any("\n" in c for c in cells) else ""
                    raise MalformedFile(f"{name} line {start}: {len(cells)} fields, the header has {len(names)}"
                                        + hint)
                rows.append((start, dict(zip(names, cells, strict=True))))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise MalformedFile(f"{name} line {reader.line_num}: {exc}") from None
    return rows
