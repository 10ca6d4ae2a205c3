"""Typed settings from TOML tables: frozen dataclasses checked field by field, every problem with its path.

An adapter declares ``Settings`` as a frozen dataclass; :func:`parse_settings` turns the TOML table into
an instance or a list of :class:`~gateway.errors.Problem` such as ``targets.province.url: expected a URL``.
Field metadata can add checks (``url``, ``positive``, ``choices``) and a help text; secrets are read with
:func:`read_secret` from an environment variable or a file, never from the config file itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from gateway.errors import Problem

T = TypeVar("T")


def setting(default: Any = dataclasses.MISSING, *, help: str = "", check: str = "",
            choices: tuple[str, ...] = ()) -> Any:
    """A dataclass field with a help text and an optional check (url | positive | path)."""
    meta = {"help": help, "check": check, "choices": choices}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def parse_settings(cls: type[T], raw: Mapping[str, Any], path: str,
                   also_known: frozenset[str] = frozenset()) -> tuple[T | None, list[Problem]]:
    """Build ``cls`` from a TOML table; return (instance, []) or (None, problems).

    ``also_known`` are keys of the same table that someone else takes (the engine's common keys): they
    are listed and suggested in "unknown setting" problems.
    """
    problems: list[Problem] = []
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)} | set(also_known)  # type: ignore[arg-type]
    for key in sorted(set(raw) - known):
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        problems.append(Problem(f"{path}.{key}", f"unknown setting; {hint}known: {', '.join(sorted(known))}"))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        where = f"{path}.{f.name}"
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(Problem(where, "required setting is missing"))
            continue
        value, problem = _coerce(raw[f.name], hints[f.name], where)
        problem = problem or _check(value, f.metadata, where)
        if problem:
            problems.append(problem)
        else:
            values[f.name] = value
    if problems:
        return None, problems
    return cls(**values), []


def _coerce(value: Any, hint: Any, where: str) -> tuple[Any, Problem | None]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None, None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            return None, Problem(where, f"expected a list, got {type(value).__name__}")
        items = [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        bad = next((p for _, p in items if p), None)
        return (origin(v for v, _ in items), bad) if not bad else (None, bad)
    if origin is dict:
        if not isinstance(value, dict):
            return None, Problem(where, f"expected a table, got {type(value).__name__}")
        return dict(value), None
    return _scalar(value, hint, where)


def _scalar(value: Any, hint: Any, where: str) -> tuple[Any, Problem | None]:
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), None
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value, None
    if hint is bool and isinstance(value, bool):
        return value, None
    if hint is str and isinstance(value, str):
        return value, None
    if hint is Any:
        return value, None
    name = getattr(hint, "__name__", str(hint))
    return None, Problem(where, f"expected {_NAMES.get(name, name)}, got {value!r}")


_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}


def _check(value: Any, meta: Mapping[str, Any], where: str) -> Problem | None:
    check = meta.get("check")
    choices = meta.get("choices")
    if choices and value not in choices:
        return Problem(where, f"expected one of {', '.join(choices)}, got {value!r}")
    if check == "url" and value is not None:
        parsed = urlparse(str(value))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            return Problem(where, f"expected an http(s) URL, got {value!r}")
    if check == "positive" and value is not None and value <= 0:
        return Problem(where, f"must be greater than 0, got {value!r}")
    return None


def read_secret(env: str | None, file: str | None, where: str, base: Path) -> tuple[str | None, Problem | None]:
    """A secret from an environment variable or a file (first line); the value is never put in a message."""
    if env:
        value = os.environ.get(env)
        if not value:
            return None, Problem(f"{where}_env", f"environment variable {env} is not set")
        return value, None
    if file:
        path = (base / file) if not Path(file).is_absolute() else Path(file)
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            return None, Problem(f"{where}_file", f"cannot read {path}: {exc.strerror}")
        if not value:
            return None, Problem(f"{where}_file", f"{path} is empty")
        return value, None
    return None, None


class SettingDoc(typing.NamedTuple):
    """One setting as the documentation shows it (docs/configuration.md is generated from these)."""

    name: str
    type: str
    default: str  # as written in TOML, or "required"
    help: str
    choices: tuple[str, ...]


def describe(cls: type[Any]) -> list[SettingDoc]:
    """Every setting of a settings dataclass: name, type, default (as TOML), help and choices."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = toml_value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = toml_value(f.default_factory())
        else:
            default = "required"
        rows.append(SettingDoc(f.name, type_name(hints[f.name]), default, str(f.metadata.get("help", "")),
                               tuple(f.metadata.get("choices", ()))))
    return rows


def toml_value(value: Any) -> str:
    """A default as one would write it in the TOML file (``None``, no value, as ``-``)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def type_name(hint: Any) -> str:
    """A type hint in the words of a TOML file: string, integer, number, boolean, date, list of …, table."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(type_name(a) for a in args if a is not type(None))
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}s" if args else "list"
    if origin is dict or hint is dict:
        return "table"
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "date": "date"}.get(
        getattr(hint, "__name__", ""), str(hint))


def read_token(env: str, file: str, where: str, base: Path) -> tuple[str | None, Problem | None]:
    """An API's bearer token from ``token_env`` or ``token_file``; a problem naming ``where`` if neither gives one."""
    token, problem = read_secret(env or None, file or None, f"{where}.token", base)
    if problem is None and token is None:
        problem = Problem(f"{where}.token_env", "give token_env or token_file: the API needs a token")
    return (None, problem) if problem else (token, None)


def resolve_sqlite_url(url: str, base: Path) -> str:
    """Make a relative SQLite path (``sqlite:///spool/x.db``) relative to ``base``, the config file's directory."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str((base / url[len(prefix):]).resolve())
    return url
