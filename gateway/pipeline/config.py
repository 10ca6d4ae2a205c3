"""What the pipeline is built from: each source and target as the configuration file describes it, with its
adapter, mappings, retry and circuit settings, and the daemon's own settings. Parsed by gateway.config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.adapter import Sink, Source
from gateway.mapping import InboundMapping, OutboundMapping
from gateway.sealing.target import Sealing
from gateway.settings import setting


@dataclass(frozen=True)
class DaemonSettings:
    max_concurrency: int = setting(8, check="positive", help="adapter calls in flight at once, all adapters")
    adapter_timeout_s: float = setting(120.0, check="positive",
                                       help="upper bound on any single adapter call (a timeout is retried)")
    shutdown_grace_s: float = setting(30.0, check="positive", help="time in-flight work gets after SIGTERM")
    heartbeat_s: float = setting(5.0, check="positive", help="how often the daemon records it is alive")
    idle_check_s: float = setting(1.0, check="positive", help="how often idle delivery workers look for due retries")
    map_workers: int = setting(1, help="worker processes for mapping and validation, and for encoding and sealing "
                                          "large batches (0 = all in the daemon itself)")
    reload_check_s: float = setting(5.0, check="positive",
                                    help="how often mapping files (and their includes) are checked for changes")
    unhealthy_after_failed_polls: int = setting(3, check="positive",
                                                help="a source that failed this many polls in a row makes `health` "
                                                     "and /healthz fail until a poll succeeds")
    log_format: str = setting("json", choices=("json", "text"), help="json: one object per line")
    log_level: str = setting("info", choices=("debug", "info", "warning", "error"),
                             help="the least severe level logged")


@dataclass(frozen=True)
class RetrySettings:
    initial_s: float = setting(1.0, check="positive", help="first backoff")
    max_s: float = setting(300.0, check="positive", help="longest backoff")
    multiplier: float = setting(2.0, check="positive", help="backoff growth per attempt")
    jitter_s: float = setting(1.0, help="random extra delay, 0..jitter_s")
    max_attempts: int = setting(50, check="positive", help="then the batch goes to the dead letters")
    max_age_s: float = setting(7 * 86400.0, check="positive", help="…or when its first attempt is this old")


@dataclass(frozen=True)
class CircuitSettings:
    failure_threshold: int = setting(5, check="positive", help="consecutive failures that open the circuit")
    reset_s: float = setting(30.0, check="positive", help="how long it stays open before one trial batch")


@dataclass(frozen=True)
class SourceConfig:
    name: str
    type: str
    mappings: Mapping[str, InboundMapping]  # usually one; keyed by dataset
    poll_interval_s: float
    batch_size: int
    adapter: Source
    audit_interval_s: float = 3600.0  # 0: never (gateway.pipeline.audit)


@dataclass(frozen=True)
class TargetConfig:
    name: str
    type: str
    mappings: Mapping[str, OutboundMapping]  # dataset -> outbound mapping
    batch_size: int
    max_in_flight: int
    personal_ids: str  # mask | full | omit
    external: bool
    retry: RetrySettings
    circuit: CircuitSettings
    adapter: Sink
    sealing: Sealing = field(default_factory=lambda: Sealing("none"))
    omit_fields: frozenset[str] = frozenset()  # canonical fields this route may not receive
    public: bool = False  # a public-facing route: gets the automatic withdrawal when publicity ends
    changes_only: frozenset[str] = frozenset()  # datasets it gets changes of (records it holds) but no new records
