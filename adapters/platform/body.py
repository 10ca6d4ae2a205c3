"""The credit platform's upload request body (adapters.platform.upload), in a module of its own: large
batches are encoded in a mapping worker (gateway.pipeline.workers), which imports this and not the HTTP client.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from gateway.adapter import TargetRecord


def upload_body(department: str, table_version: str, batch_id: str, dataset: str, table_code: str,
                records: Sequence[TargetRecord]) -> bytes:
    """The upload request: one dataset's records with their keys, versions and operations."""
    return orjson.dumps({"batchId": batch_id, "tableCode": table_code, "departmentCode": department,
                         "tableVersionId": table_version,
                         "records": [{"recordKey": r.key, "version": r.version, "operation": r.operation,
                                      "data": r.fields} for r in records]})
