"""The two adapter roles, as small protocols, and the entry-point registry that finds adapters.

A **source** fetches rows after a cursor and is told when they are durably taken (``ack``); a **sink**
encodes a batch of target records into a body and delivers a body, answering with per-record outcomes.
The engine owns everything else: cursors, retries, dead letters, quarantine. Adapters are registered
under the entry-point groups ``credit_gateway.sources`` and ``credit_gateway.sinks``; ours are
registered the same way as a third party's. Adapters raise only :mod:`gateway.errors` exceptions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from gateway.errors import Problem

SOURCE_GROUP = "credit_gateway.sources"
SINK_GROUP = "credit_gateway.sinks"


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One row as the source has it: a stable identity within the source, and its columns."""

    key: str
    data: Mapping[str, Any]
    problems: tuple[Problem, ...] = ()  # found while reading (e.g. bytes not in the source's encoding)


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    """Marks a page as part of a full snapshot of one scope (e.g. one credit list) of a dataset.

    Every key the page's rows map to is noted under ``snapshot_id``; on the ``final`` page, keys of the
    scope (ledger keys whose first key part is ``scope``) that no page of this snapshot named are
    withdrawn, in the same transaction. A snapshot may span any number of pages and restarts.
    """

    dataset: str
    scope: str
    snapshot_id: str
    final: bool


@dataclass(frozen=True, slots=True)
class SourceBatch:
    rows: Sequence[SourceRow]
    cursor: Any  # JSON-serialisable position after these rows; saved in the intake transaction
    more: bool  # the source has more rows right now
    snapshot: SnapshotPage | None = None  # these rows belong to a full snapshot (committed even when empty)
    # row key -> the row's update value as text: kept in the ledger, so a look-back re-read recognises a row it has
    # taken already, and the source audit (Auditing) finds the rows whose update value differs from it
    marks: Mapping[str, str] | None = None
    # keys of rows the look-back window read at or before the cursor the page was read from: if one of them made a new
    # version, it was committed late and the window found it (counted: ``status``)
    behind: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """One record as a target receives it: identity, version, operation and mapped fields."""

    key: str
    version: int
    operation: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class OutgoingBatch:
    id: str  # also the idempotency key
    dataset: str
    body: bytes
    record_count: int
    content_type: str = "application/json"  # or a sealed envelope's type (application/pkcs7-mime, …)


@dataclass(frozen=True, slots=True)
class RecordResult:
    key: str
    version: int
    status: str  # accepted | duplicate | stale | rejected
    code: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Receipt:
    """The peer's answer to a batch: its id for the receipt, per-record results, and the raw answer."""

    receipt_id: str
    results: Sequence[RecordResult]
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class AdapterContext:
    """What an adapter may know about its surroundings when it is built."""

    name: str  # the source's or target's name in the config
    path: str  # its TOML path, e.g. "targets.province"
    base_dir: Path  # relative paths in settings are relative to the config file
    department_code: str
    department_name: str
    common_keys: frozenset[str] = frozenset()  # keys the engine takes itself (listed as known in problems)
    # A target's datasets → the field names its outbound mapping produces (e.g. a table sink's columns).
    fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@runtime_checkable
class Source(Protocol):
    """Reads rows from a department system.

    Optional abilities are declared by implementing a capability protocol below: :class:`PageReading`,
    :class:`ColumnListing`, :class:`Credentialed`."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    async def fetch(self, cursor: Any, limit: int) -> SourceBatch:
        """Rows after ``cursor`` (None = from the beginning), at most ``limit``."""
        ...

    async def ack(self, cursor: Any) -> None:
        """Called after the rows up to ``cursor`` were committed to the store."""
        ...


@runtime_checkable
class Sink(Protocol):
    """Delivers batches to a platform or system.

    Optional abilities are declared by implementing a capability protocol below: :class:`BatchEncoding`,
    :class:`Holdings`, :class:`Credentialed`."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    def encode(self, batch_id: str, dataset: str, table_code: str, records: Sequence[TargetRecord]) -> bytes:
        """The request body for a batch (pure, synchronous)."""
        ...

    async def deliver(self, batch: OutgoingBatch) -> Receipt:
        """Send one batch; raise RetryableError / PermanentError, or return the per-record results."""
        ...


# ------------------------------------------------------------------------------------------------------------
# Optional capabilities: an adapter has one when it implements the protocol; the core asks with isinstance.

PageReader = Callable[[Any, int], SourceBatch]  # (cursor, limit) -> the page, synchronous and picklable
BodyEncoder = Callable[[str, str, str, Sequence[TargetRecord]], bytes]  # (batch_id, dataset, table_code, records)


@runtime_checkable
class PageReading(Protocol):
    """Source capability: ``fetch`` of a page after the first of a poll as a picklable, synchronous callable,
    so that a mapping worker process reads and maps the pages of a backlog itself (gateway.pipeline.intake.Intake).
    When it gives None (e.g. not a SQLite file), the daemon fetches every page and the worker maps it. The
    reader's module must import no database driver or HTTP client: the worker starts in about 0.2 s."""

    def page_reader(self) -> PageReader | None: ...


@runtime_checkable
class Auditing(Protocol):
    """Source capability: the source audit (gateway.pipeline.audit). ``audit_marks`` lists the key, the key values
    and the update value as text (the mark ``SourceBatch.marks`` gives) of every row behind the watermark
    ``cursor`` (less any look-back window: what is after it is the polls' to read), in key order, without reading
    the rest of the row; ``fetch_keys`` reads the whole rows of the given key values, as a batch of marked rows."""

    async def audit_marks(self, cursor: Any) -> list[tuple[str, tuple[Any, ...], str]]: ...

    async def fetch_keys(self, keys: Sequence[tuple[Any, ...]]) -> SourceBatch: ...


@runtime_checkable
class Advising(Protocol):
    """Adapter capability: settings that are valid but risky, as warnings ``credit-gateway check`` prints (each
    starting with the setting's TOML path)."""

    def warnings(self) -> list[str]: ...


@runtime_checkable
class BatchEncoding(Protocol):
    """Sink capability: ``encode`` as a picklable function giving the same bytes, so that large batches are
    encoded in a worker process (gateway.pipeline.encode). Its module must import no driver or HTTP client."""

    def batch_encoder(self) -> BodyEncoder: ...


@runtime_checkable
class ColumnListing(Protocol):
    """Source capability: the columns the source has (inside ``async with``); ``credit-gateway check --connect``
    compares them with the columns the mapping reads."""

    async def columns(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Credential:
    """A credential an adapter reads, for ``credit-gateway certs list``: the setting that names it (relative
    to the adapter's TOML path), its kind, and where it comes from."""

    setting: str  # e.g. "token_env", "peer_cert", "trusted_cas[0]"
    kind: str  # token | key | certificate
    origin: str  # an environment variable's name or a file's path
    path: Path | None = None  # the file, for a key or certificate (so its expiry can be read)


@runtime_checkable
class Credentialed(Protocol):
    """Adapter capability: the secrets it holds (redacted from every log line) and the credentials it reads."""

    secrets: tuple[str, ...]

    def credential_sources(self) -> list[Credential]: ...


@runtime_checkable
class Holdings(Protocol):
    """Optional sink capability: read back what the target holds, to compare it and repair drift.

    ``expected`` says, for target records as the engine would send them, which row identity each becomes at
    the target and the digest of that row's content, or None when the target should not hold it at all
    (e.g. a withdraw applied as a delete). ``held`` reads the target's rows of one scope (target field →
    value, e.g. a list's code) as identity → digest, computed the same way. ``discard`` removes rows of
    the target the gateway never sent.
    """

    async def expected(self, dataset: str, records: Sequence[TargetRecord]) -> list[tuple[str, str | None]]: ...

    async def held(self, dataset: str, scope: Mapping[str, Any]) -> Mapping[str, str]: ...

    async def discard(self, dataset: str, identities: Sequence[str]) -> int: ...


class AdapterFactory(Protocol):
    """What an entry point names: a class with ``from_settings`` building the adapter or listing problems, and
    ``Settings``, the frozen dataclass of its settings (``credit-gateway adapters describe NAME`` prints it)."""

    Settings: type[Any]

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any], ctx: AdapterContext) -> tuple[Any, list[Problem]]: ...


def installed(group: str) -> dict[str, Any]:
    """Installed adapters of a group: name → entry point."""
    return {ep.name: ep for ep in entry_points(group=group)}


def load_adapter(group: str, kind: str, where: str) -> tuple[AdapterFactory | None, Problem | None]:
    """The adapter class registered as ``kind``, or a problem listing the installed names."""
    eps = installed(group)
    if kind not in eps:
        names = ", ".join(sorted(eps)) or "none"
        return None, Problem(f"{where}.type", f"unknown type {kind!r}; installed: {names}")
    try:
        return eps[kind].load(), None
    except (ImportError, AttributeError) as exc:
        return None, Problem(f"{where}.type", f"adapter {kind!r} failed to load: {exc}")
