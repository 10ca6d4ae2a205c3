"""The gateway's exception tree, typed by what the runtime must do.

::

    GatewayError                      root: everything the gateway raises on purpose
    ├── ConfigError                   bad configuration or mapping file; carries every problem with its path
    ├── StoreError                    the store failed (disk full, database gone); the daemon stops cleanly
    ├── AdapterError                  raised by adapters at their boundary, translated from aiohttp/DB/OS errors
    │   ├── RetryableError            try again later (timeouts, 5xx, 429, dropped connections);
    │   │   │                         ``retry_after_s`` when the peer said how long to wait
    │   │   └── AwaitingAnswer        the peer holds the batch but has not answered every record yet: ask
    │   │                             again; not a failure (no circuit trip, max_attempts does not count it)
    │   ├── PermanentError            the same batch will never succeed (401, 400 on the envelope); dead letter
    │   └── RejectedError             one record is refused; it goes to quarantine with ``reason``
    └── ValidationError               a row failed mapping or validation; carries (field, message) problems

Adapters must translate library exceptions into this tree; the engine never catches a bare
``aiohttp`` or ``sqlalchemy`` exception from an adapter call (a test checks the translation).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem with a configuration or a row: where it is and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(GatewayError):
    """Configuration or mapping problems, all collected, each with its file and TOML path."""

    def __init__(self, problems: Iterable[Problem | str], source: str = "") -> None:
        self.problems: list[Problem] = [p if isinstance(p, Problem) else Problem("", p) for p in problems]
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        head = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return head + str(self.problems[0])
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"{head}{len(self.problems)} problems\n{lines}"


class StoreError(GatewayError):
    """The store could not be opened, migrated or written."""


class AdapterError(GatewayError):
    """An adapter call failed; subclasses say whether to retry."""


class RetryableError(AdapterError):
    """Transient failure: the engine backs off and tries again."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AwaitingAnswer(RetryableError):
    """The peer has the whole batch but has not processed it yet (e.g. the national 前置库's rows): the engine
    asks again after ``retry_after_s``; the link is fine, so the circuit stays closed and only ``max_age_s``
    (not ``max_attempts``) bounds the wait."""


class PermanentError(AdapterError):
    """The request can never succeed as it is: the batch goes to the dead letters."""


class RejectedError(AdapterError):
    """A single record was refused by the peer; it is quarantined with the reason."""

    def __init__(self, reason: str, code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class ValidationError(GatewayError):
    """A row could not be mapped or validated; ``problems`` name each field."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))
