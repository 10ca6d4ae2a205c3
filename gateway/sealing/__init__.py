"""Sealing: signing, encrypting and opening what crosses the boundary, by envelope profile.

The profiles are named here as strings and imported on first use (a lazy registry): a process that seals
nothing, or only with one profile, never loads the others' libraries (signxml and lxml for ``xmldsig``, the
SM2 arithmetic for ``sm``). ``gateway.sealing.base`` holds what every profile shares; each profile is its
own module.
"""

from __future__ import annotations

import importlib

from gateway.sealing.base import EnvelopeError, Profile

PROFILES = {
    "cms": "gateway.sealing.cms:CmsProfile",
    "none": "gateway.sealing.base:NoneProfile",
    "sm": "gateway.sealing.sm:SmProfile",
    "xmldsig": "gateway.sealing.xmldsig:XmlDsigProfile",
}


def profile_names() -> tuple[str, ...]:
    return tuple(sorted(PROFILES))


def get_profile(name: str) -> Profile:
    """The profile called ``name``: "cms", "sm", "xmldsig" or "none"."""
    if name not in PROFILES:
        raise EnvelopeError(f"unknown envelope profile {name!r}; known: {', '.join(profile_names())}")
    module, _, attr = PROFILES[name].partition(":")
    profile: Profile = getattr(importlib.import_module(module), attr)()
    return profile
