"""The generated parts of docs/: the configuration reference and the canonical fields of every dataset.

``python -m gateway.cli.docs`` (``make docs``) rewrites the blocks between ``<!-- generated: NAME -->`` and
``<!-- end generated -->`` in docs/configuration.md and docs/mappings.md; the prose around them is written
by hand. ``--check`` only compares and exits 1 when a block is out of date (tests/ops/test_docs.py does the
same). The configuration reference comes from the settings dataclasses' own help texts
(:func:`gateway.settings.describe`), the adapters' through their entry points (each adapter class names its
``Settings``), so a setting documented nowhere cannot be added. The output is deterministic: sections in a
fixed order, adapters sorted by name, only first-party adapters (``adapters.*``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from gateway.adapter import SINK_GROUP, SOURCE_GROUP
from gateway.cli.datasets import field_rows
from gateway.config import (
    ListsSettings,
    ReportsSettings,
    SanctionsSettings,
    SourceKeys,
    TargetKeys,
)
from gateway.domain.calendar import CalendarSettings
from gateway.domain.datasets import DATASETS
from gateway.domain.publicity import PublicityKeys
from gateway.instance import GatewaySettings, StoreSettings
from gateway.pipeline.config import CircuitSettings, DaemonSettings, RetrySettings
from gateway.sealing.target import EnvelopeSettings
from gateway.settings import describe
from gateway.web.config import AdminSettings, ChannelSettings, InboundSettings

ROOT = Path(__file__).resolve().parents[2]
END = "<!-- end generated -->"


@dataclass(frozen=True)
class Section:
    """One TOML table of the reference: where it sits in the file and the dataclass that parses it."""

    table: str  # e.g. "targets.NAME.retry"
    cls: type[Any]
    note: str = ""
    adapter: str = ""  # the adapter type whose table this is


CORE: tuple[Section, ...] = (
    Section("gateway", GatewaySettings),
    Section("store", StoreSettings),
    Section("daemon", DaemonSettings),
    Section("sources.NAME", SourceKeys, "Every source; the other keys of the table are its adapter's (below)."),
    Section("targets.NAME", TargetKeys, "Every target; the other keys of the table are its adapter's (below)."),
    Section("targets.NAME.retry", RetrySettings, "Exponential backoff with jitter; a `Retry-After` wins."),
    Section("targets.NAME.circuit", CircuitSettings, "One circuit breaker per target."),
    Section("targets.NAME.envelope", EnvelopeSettings, "Sealing and receipt checks (docs/security.md)."),
    Section("publicity", PublicityKeys, "The rules themselves are `[[publicity.rules]]` (docs/publication.md)."),
    Section("calendar", CalendarSettings, "Only for a year the `chinesecalendar` package does not cover yet."),
    Section("sanctions", SanctionsSettings),
    Section("lists", ListsSettings),
    Section("reports", ReportsSettings, "The monthly report (docs/dashboard.md)."),
    Section("inbound", InboundSettings, "Off unless the table is there (docs/inbound.md)."),
    Section("inbound.channels.NAME", ChannelSettings),
    Section("admin", AdminSettings, "Off unless the table is there; tokens are `[admin.tokens.NAME]` "
                                    '(`role` = "read" or "operator", `token_env` or `token_file`).'),
)


def adapter_sections() -> Iterator[Section]:
    """The settings of every first-party adapter, found through the entry points (gateway never imports adapters)."""
    for group, kind in ((SOURCE_GROUP, "sources"), (SINK_GROUP, "targets")):
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            if not ep.value.startswith("adapters."):
                continue
            factory = ep.load()
            yield Section(f"{kind}.NAME", factory.Settings, adapter=ep.name)
            subs: Mapping[str, type[Any]] = getattr(factory, "Subsettings", {})
            for sub, cls in subs.items():
                yield Section(f"{kind}.NAME.{sub}", cls, adapter=ep.name)


def all_sections() -> list[Section]:
    return [*CORE, *adapter_sections()]


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def settings_table(section: Section) -> list[str]:
    module = section.cls.__module__.replace(".", "/") + ".py"
    title = f"### `[{section.table}]`" + (f' with `type = "{section.adapter}"`' if section.adapter else "")
    lines = [title, "", f"`{section.cls.__name__}` in `{module}`." + (
        f" {section.note}" if section.note else ""), "",
        "| key | type | default | meaning |", "|---|---|---|---|"]
    for doc in describe(section.cls):
        meaning = doc.help + (f" (one of: {', '.join(doc.choices)})" if doc.choices else "")
        default = "**required**" if doc.default == "required" else f"`{_escape(doc.default)}`"
        lines.append(f"| `{doc.name}` | {doc.type} | {default} | {_escape(meaning)} |")
    return [*lines, ""]


def configuration_block() -> str:
    return "\n".join(line for section in all_sections() for line in settings_table(section)).rstrip() + "\n"


def datasets_block() -> str:
    lines: list[str] = []
    for dataset in DATASETS.values():
        lines += [f"### `{dataset.name}`: {dataset.label}", "",
                  f"Natural key: {' + '.join(f'`{k}`' for k in dataset.key_fields)}; dated by "
                  f"`{dataset.date_field}`. `credit-gateway datasets show {dataset.name}` prints this table.", "",
                  "| field | label | identifier | required | type |", "|---|---|---|---|---|"]
        for row in field_rows(dataset):
            cells = [f"`{row['field']}`", row["label"], f"`{row['identifier']}`" if row["identifier"] != "-" else "-",
                     row["required"], row["type"]]
            lines.append("| " + " | ".join(_escape(str(c)) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# file under docs/ → {block name: its content}
def blocks() -> dict[str, dict[str, str]]:
    return {"configuration.md": {"settings": configuration_block()}, "mappings.md": {"datasets": datasets_block()}}


def replace_block(text: str, name: str, content: str) -> str:
    """``text`` with the block ``name`` holding ``content``; ValueError when its markers are missing."""
    start = f"<!-- generated: {name} (make docs; edit the source, not this block) -->"
    pattern = re.compile(re.escape(start) + r"\n.*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no block {start} … {END}")
    return pattern.sub(lambda _: f"{start}\n{content}{END}", text, count=1)


def stale(docs: Path, wanted: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The files under ``docs`` whose generated blocks differ from ``wanted``."""
    out = []
    for file, named in wanted.items():
        text = (docs / file).read_text(encoding="utf-8")
        updated = text
        for name, content in named.items():
            updated = replace_block(updated, name, content)
        if updated != text:
            out.append(file)
    return out


def write(docs: Path, wanted: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Rewrite the out-of-date files; return their names."""
    changed = stale(docs, wanted)
    for file in changed:
        path = docs / file
        text = path.read_text(encoding="utf-8")
        for name, content in wanted[file].items():
            text = replace_block(text, name, content)
        path.write_text(text, encoding="utf-8")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.cli.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="the docs folder (default: ./docs)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is out of date")
    args = parser.parse_args(argv)
    wanted = blocks()
    if args.check:
        late = stale(args.docs, wanted)
        for file in late:
            print(f"{file}: generated block out of date; run make docs", file=sys.stderr)
        return 1 if late else 0
    for file in write(args.docs, wanted):
        print(f"rewrote the generated block of docs/{file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
