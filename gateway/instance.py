"""Which instance and which store: ``[gateway]`` and ``[store]``, read without the rest of the configuration.

What ``credit-gateway health`` needs and all it reads, so a broken mapping file or adapter setting cannot make a
probe report a working daemon as dead, and the probe imports nothing heavy (gateway.config builds adapters,
mappings and sealing; this module only parses TOML).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, Problem
from gateway.settings import parse_settings, resolve_sqlite_url, setting


@dataclass(frozen=True)
class GatewaySettings:
    department_code: str = setting(help="部门编码 / the department's USCC, sent as departmentCode")
    department_name: str = setting(help="the department's name")
    instance: str = setting("gateway", help="this instance's name in logs and heartbeats (`health` checks it); "
                                            "unique per instance")
    region_code: str = setting("", help="GB/T 2260 region code of the department")


@dataclass(frozen=True)
class StoreSettings:
    url: str = setting("sqlite:///spool/gateway.db",
                       help="sqlite:///path (relative to the config file) or postgresql://user@host/db")


def load_instance(path: str | Path) -> tuple[str, str]:
    """(instance name, store URL) from ``[gateway]`` and ``[store]`` alone."""
    path = Path(path).resolve()
    doc = read_toml(path)
    problems: list[Problem] = []
    raw = doc.get("gateway", {})
    instance = raw.get("instance", GatewaySettings.instance) if isinstance(raw, dict) else None
    if not isinstance(instance, str) or not instance:
        problems.append(Problem("gateway.instance", f"expected a name, got {instance!r}"))
    store = section(StoreSettings, doc, "store", problems)
    if problems or store is None or not isinstance(instance, str):
        raise ConfigError(problems, str(path))
    return instance, resolve_sqlite_url(store.url, path.parent)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([Problem("", "file not found (copy config.example.toml)")], str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem("", f"not UTF-8 at byte {exc.start}")], str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem("", f"invalid TOML: {exc}")], str(path)) from None


def section(cls: type[Any], doc: Mapping[str, Any], name: str, problems: list[Problem]) -> Any:
    """A settings table parsed into ``cls``, its problems added to ``problems`` (None when it is not a table)."""
    raw = doc.get(name, {})
    if not isinstance(raw, dict):
        problems.append(Problem(name, "must be a table"))
        return None
    value, found = parse_settings(cls, raw, name)
    problems += found
    return value
