"""What a TLS server actually serves, read the way its clients see it."""

from __future__ import annotations

import datetime as dt
import ssl

from cryptography import x509


def served_certificate_expiry(port: int, host: str = "127.0.0.1") -> dt.datetime:
    """notAfter of the certificate the server on ``port`` presents now (no verification: the
    point is which certificate it serves, not whether we trust it)."""
    pem = ssl.get_server_certificate((host, port), timeout=10)
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc
