"""``credit-gateway inbound``: the batches partners pushed to us, and our signed receipts for them.

``inbound list`` shows each received batch (channel, batch id, signer, counts, snapshot page, our receipt id);
``inbound show ID`` one batch with our answer. ``inbound show ID --receipt FILE`` writes our receipt and the body
as received as an evidence file in the format of ``spool evidence`` (gateway.sealing.evidence), so ``credit-gateway
verify FILE --trusted-ca ca.crt`` checks it offline: ``sent.bin`` is what the partner sent us (its sealed,
signed batch), ``answer.json`` our answer, ``receipt.json``/``receipt.sig`` our receipt and its signature.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from gateway.cli.ops import read_config
from gateway.config import Config
from gateway.errors import ConfigError, Problem
from gateway.files import write_private
from gateway.operations import cell
from gateway.report import out, table
from gateway.sealing.evidence import receipt_signer
from gateway.sealing.target import CONTENT_TYPES, receipt_bytes
from gateway.store import Store, open_store

LIST_COLUMNS = ["received", "channel", "batch", "signer", "records", "accepted", "unchanged", "rejected",
                "snapshot", "receipt"]


def add_parser(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("inbound", help="batches pushed to our inbound endpoint, with our signed receipts")
    config_arg(p)
    s = p.add_subparsers(dest="inbound_command", required=True)
    ls = s.add_parser("list", help="received batches, newest first")
    ls.add_argument("--channel", help="only this channel")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    show = s.add_parser("show", help="one received batch: signer, counts, per-record results, our receipt")
    show.add_argument("id", help="the batch id")
    show.add_argument("--channel", help="the channel (needed when two channels received the same batch id)")
    show.add_argument("--receipt", metavar="FILE", help="write our signed receipt and the body received as an "
                                                        "evidence file (ZIP; check it with credit-gateway verify)")
    show.add_argument("--json", action="store_true")


async def cmd_inbound(args: argparse.Namespace) -> int:
    config = read_config(args)
    store = await open_store(config.store_url())
    try:
        if args.inbound_command == "list":
            rows = await store.inbound.batches(args.channel, args.limit)
            _print_list(rows, args.json)
            return 0
        return await _show(store, config, args)
    finally:
        await store.aclose()


def _snapshot_cell(snapshot: Mapping[str, Any] | None) -> str:
    if not snapshot:
        return "-"
    return f"{snapshot['scope']} {snapshot['id']} p{snapshot['page']}{' last' if snapshot['last'] else ''}"


def _print_list(rows: Sequence[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        out(orjson.dumps({"batches": list(rows)}, option=orjson.OPT_INDENT_2).decode())
        return
    table([{**r, "received": r["received_at"], "batch": r["batch_id"], "snapshot": _snapshot_cell(r["snapshot"]),
            "receipt": r["receipt_id"]} for r in rows], LIST_COLUMNS)


async def _show(store: Store, config: Config, args: argparse.Namespace) -> int:
    channel = args.channel or await _channel_of(store, args.id)
    if channel is None:
        out(f"no inbound batch {args.id}")
        return 1
    row, answer_text = await store.inbound.show_inbound(channel, args.id), await store.inbound.answer_text(channel,
                                                                                                           args.id)
    if row is None or answer_text is None:
        out(f"no inbound batch {args.id} on channel {channel}")
        return 1
    snapshot = await store.inbound.batch_snapshot(channel, args.id)
    if args.receipt:
        return _write_evidence(inbound_evidence(row, answer_text, _profile(config, channel), _us(config, channel)),
                               args.id, Path(args.receipt))
    _print_batch(row, snapshot, args.json)
    return 0


def _write_evidence(data: bytes, batch_id: str, path: Path) -> int:
    write_private(path, data)  # every record of the batch, ID numbers included: 0600
    out(f"evidence for inbound batch {batch_id} written to {path} ({len(data)} bytes)")
    return 0


async def _channel_of(store: Store, batch_id: str) -> str | None:
    channels = await store.inbound.channels_of(batch_id)
    if len(channels) > 1:
        raise ConfigError([Problem("--channel", f"batch {batch_id} was received on channels "
                                                f"{', '.join(channels)}: name one")])
    return channels[0] if channels else None


def _us(config: Config, channel: str) -> dict[str, Any] | None:
    """Who signs an inbound batch's receipt: we do, with the channel's certificate."""
    found = config.inbound.channels.get(channel) if config.inbound is not None else None
    return receipt_signer("us", [found.ours.cert_pem]) if found is not None and found.ours is not None else None


def _profile(config: Config, channel: str) -> str:
    found = config.inbound.channels.get(channel) if config.inbound is not None else None
    return found.profile if found is not None else "unknown (the channel is no longer configured)"


def _print_batch(row: Mapping[str, Any], snapshot: Mapping[str, Any] | None, as_json: bool) -> None:
    answer: dict[str, Any] = row["answer"]
    receipt = answer.get("receipt") or {}
    if as_json:
        doc = {k: v for k, v in row.items() if k not in ("body", "answer", "id")}
        out(orjson.dumps({**doc, "snapshot": snapshot, "answer": answer}, option=orjson.OPT_INDENT_2).decode())
        return
    for key in ("channel", "batch_id", "dataset", "signer", "received_at", "records", "accepted", "unchanged",
                "rejected", "content_sha256", "body_sha256"):
        out(f"{key:15} {cell(row.get(key))}")
    out(f"{'snapshot':15} {_snapshot_cell(snapshot)}")
    out(f"our receipt:    {receipt.get('receiptId')} at {receipt.get('receivedAt')}, "
        f"{'signed' if answer.get('receiptSignature') else 'NOT signed'} by us as {receipt.get('receiver')}")
    results = answer.get("results") or []
    states: dict[str, int] = {}
    for result in results:
        states[result["status"]] = states.get(result["status"], 0) + 1
    out("records: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    for result in [r for r in results if r["status"] == "rejected"][:20]:
        reasons = "; ".join(f"{e['field']}: {e['message']}" for e in result.get("errors") or [])
        out(f"  rejected #{result['index']} {result['recordKey']}: {reasons}")


def inbound_evidence(row: Mapping[str, Any], answer_text: str, profile: str,
                     signer: Mapping[str, Any] | None = None) -> bytes:
    """The evidence ZIP for a received batch: the body as received, our answer, our receipt and its signature
    (``signer``: :func:`gateway.sealing.evidence.receipt_signer` for us)."""
    answer = orjson.loads(answer_text)
    receipt = answer.get("receipt") or {}
    body: bytes = row["body"]
    manifest = {"direction": "inbound", "batchId": row["batch_id"], "channel": row["channel"],
                "dataset": row["dataset"], "profile": profile, "contentType": CONTENT_TYPES.get(profile, ""),
                "records": row["records"], "signer": row["signer"], "receivedAt": row["received_at"],
                "sentSha256": hashlib.sha256(body).hexdigest(), "receiptId": receipt.get("receiptId")}
    if signer is not None:
        manifest["receiptSigner"] = dict(signer)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        z.writestr("sent.bin", body)
        z.writestr("answer.json", answer_text)
        z.writestr("receipt.json", receipt_bytes(receipt))
        if answer.get("receiptSignature"):
            z.writestr("receipt.sig", base64.b64decode(answer["receiptSignature"]))
    return buffer.getvalue()
