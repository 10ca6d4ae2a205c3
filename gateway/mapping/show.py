"""``python -m gateway.mapping FILE``: the generated source of an inbound mapping file, then what each name in it
stands for (tracebacks show its lines under ``<fastmap PATH>``)."""

from __future__ import annotations

import sys

from gateway.mapping import InboundMapping, load_mapping
from gateway.mapping.fast import generated_source


def main(argv: list[str]) -> int:
    """``python -m gateway.mapping FILE``: the generated source of an inbound mapping file."""
    if len(argv) != 1:
        print("usage: python -m gateway.mapping MAPPING.toml", file=sys.stderr)
        return 2
    mapping = load_mapping(argv[0])
    if not isinstance(mapping, InboundMapping):
        print(f"{argv[0]} is not an inbound mapping", file=sys.stderr)
        return 2
    print(generated_source(mapping), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
