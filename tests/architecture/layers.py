"""The layer table of docs/architecture.md, as data: which modules each module may import."""

from __future__ import annotations

KERNEL = ("gateway", "gateway.errors", "gateway.records", "gateway.stored", "gateway.settings", "gateway.clock",
          "gateway.adapter", "gateway.tuning", "gateway.files", "gateway.startup", "gateway.text",
          "gateway.instance", "gateway.instance_lock")

# (layer number, module patterns): a pattern ending in ".*" covers a package and everything in it
LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (0, KERNEL),
    (1, ("gateway.domain.*", "gateway.logs")),
    (2, ("gateway.mapping.*", "gateway.sealing.*")),
    (3, ("gateway.store.*",)),
    (4, ("gateway.pipeline.*", "gateway.inbound.*", "gateway.web.config", "gateway.scheduler")),
    (5, ("gateway.config",)),
    (6, ("gateway.operations", "gateway.figures", "gateway.monthly", "gateway.xlsx", "gateway.health", "gateway.report",
         "gateway.jobs", "gateway.certs", "gateway.web.*", "gateway.daemon")),
    (7, ("gateway.cli.*", "gateway.demo.*", "gateway.__main__")),
]
SANDBOX = "gateway.sandbox.*"
TESTING = "gateway.testing.*"
# what the side packages may import besides themselves
SANDBOX_MAY = ("gateway.domain.*", "gateway.logs", "gateway.sealing.*", "gateway.inbound.batch",
               "gateway.inbound.client")
# adapters: the public adapter API (the kernel), the pure rules, sealing and the kit -- never the pipeline or store
ADAPTERS_MAY = (*KERNEL, "gateway.domain.*", "gateway.sealing.*", "gateway.testing.*")


def matches(module: str, pattern: str) -> bool:
    if pattern.endswith(".*"):
        base = pattern[:-2]
        return module == base or module.startswith(base + ".")
    return module == pattern


def layer_of(module: str) -> int | None:
    """The layer of a gateway module (the side packages and adapters have none)."""
    found = None
    for number, patterns in LAYERS:
        if any(matches(module, p) for p in patterns):
            found = number  # the most specific rule is the later one (gateway.web.config before gateway.web.*)
            if module == "gateway.web.config":
                return 4
    return found


def allowed(source: str, target: str) -> bool:
    """May ``source`` import ``target`` (both modules of the tree)?"""
    if target.split(".")[0] != "gateway":
        return source.startswith("adapters") and target.startswith("adapters")
    if source.startswith("adapters"):
        return any(matches(target, p) for p in ADAPTERS_MAY)
    if matches(source, SANDBOX):
        return matches(target, SANDBOX) or layer_of(target) == 0 or any(matches(target, p) for p in SANDBOX_MAY)
    if matches(source, TESTING):
        return (matches(target, TESTING) or matches(target, SANDBOX)
                or (layer_of(target) is not None and layer_of(target) <= 3))  # type: ignore[operator]
    mine, theirs = layer_of(source), layer_of(target)
    if mine is None:
        return False
    if matches(target, SANDBOX) or matches(target, TESTING):
        return mine >= 6
    return theirs is not None and theirs <= mine
