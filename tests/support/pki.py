"""Test PKIs: see :mod:`gateway.sealing.pki` (the same code makes `credit-gateway certs init`)."""

from gateway.sealing.pki import CA, KINDS, SM2_DEFAULT_ID, Issued, make_ca

__all__ = ["CA", "KINDS", "SM2_DEFAULT_ID", "Issued", "make_ca"]
