"""Reading PEM certificates: pure (bytes in, certificates out), for the verdicts and the installer.

The caBundle checks of :mod:`vsphere_kale.policy.health` need only this; the certificate
*builders* and the file writer stay in :mod:`vsphere_kale.install.certs`.
"""

from __future__ import annotations

import base64
import binascii

from cryptography import x509

from vsphere_kale.errors import CertificateError


def load_ca_bundle(pem_bytes: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (e.g. a caBundle holding the old and the new CA
    during rotation). Raises :class:`CertificateError` when there is none or one is broken."""
    try:
        certs = x509.load_pem_x509_certificates(pem_bytes)
    except ValueError as exc:
        raise CertificateError(f"CA bundle is not valid PEM: {exc}") from exc
    if not certs:  # pragma: no cover - cryptography raises for an empty bundle already
        raise CertificateError("CA bundle holds no certificate")
    return certs


def decode_ca_bundle(ca_bundle: str) -> list[x509.Certificate]:
    """The certificates in a webhook ``caBundle`` (base64 of PEM); ``ValueError`` if none."""
    try:
        pem = base64.b64decode(ca_bundle, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("caBundle is not valid base64") from exc
    try:
        return load_ca_bundle(pem)
    except CertificateError as exc:
        raise ValueError("caBundle holds no valid PEM certificate") from exc
