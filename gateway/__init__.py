"""credit-gateway: the public adapter API.

What an adapter author needs is importable from here: the ``Source`` and ``Sink`` Protocols and their data
types (gateway.adapter), the error tree (gateway.errors) and declared settings (gateway.settings). Nothing
heavier is imported: a mapping worker process runs this module first and starts in about 0.2 s.
"""

from gateway.adapter import (
    SINK_GROUP,
    SOURCE_GROUP,
    AdapterContext,
    AdapterFactory,
    Holdings,
    OutgoingBatch,
    Receipt,
    RecordResult,
    Sink,
    SnapshotPage,
    Source,
    SourceBatch,
    SourceRow,
    TargetRecord,
    load_adapter,
)
from gateway.errors import (
    AdapterError,
    ConfigError,
    GatewayError,
    PermanentError,
    Problem,
    RejectedError,
    RetryableError,
    StoreError,
    ValidationError,
)
from gateway.settings import describe, parse_settings, read_secret, read_token, resolve_sqlite_url, setting

__all__ = [
    "SINK_GROUP",
    "SOURCE_GROUP",
    "AdapterContext",
    "AdapterError",
    "AdapterFactory",
    "ConfigError",
    "GatewayError",
    "Holdings",
    "OutgoingBatch",
    "PermanentError",
    "Problem",
    "Receipt",
    "RecordResult",
    "RejectedError",
    "RetryableError",
    "Sink",
    "SnapshotPage",
    "Source",
    "SourceBatch",
    "SourceRow",
    "StoreError",
    "TargetRecord",
    "ValidationError",
    "describe",
    "load_adapter",
    "parse_settings",
    "read_secret",
    "read_token",
    "resolve_sqlite_url",
    "setting",
]
