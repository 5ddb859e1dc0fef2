"""The serving certificate: load a pair into an ``SSLContext``, and refuse a bad one.

A pair is refused (:class:`~vsphere_kale.errors.ConfigError` naming the flag) when a file does
not parse, the key does not match the certificate, or the certificate is outside its validity
window: expired, or not valid yet (issue 10, finding 5: hot reload accepted a certificate that
had expired the day before). On start that is an error before anything listens; on a reload
:class:`~vsphere_kale.webhook.server.WebhookServer` keeps serving the previous pair, logs an
ERROR and counts ``vsphere_kale_webhook_certificate_reloads_total{result="failure"}``.
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

from vsphere_kale.errors import CertificateError, ConfigError
from vsphere_kale.install import certs

CLOCK_SKEW = datetime.timedelta(minutes=5)
"""A certificate whose notBefore is this little ahead of our clock is accepted: issuers on
other nodes backdate by less than that (ours by an hour, cert-manager by none) and node clocks
drift. Go's TLS client (the API server) applies no tolerance of its own to notAfter."""


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def decide_validity(
    not_before: datetime.datetime, not_after: datetime.datetime, *, now: datetime.datetime
) -> str | None:
    """Why a certificate cannot be served at ``now`` (None: it can). Pure."""
    if now >= not_after:
        return f"the certificate expired at {not_after.isoformat()}"
    if now + CLOCK_SKEW < not_before:
        return f"the certificate is not valid before {not_before.isoformat()}"
    return None


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(flag, f"cannot read {path}: {exc.strerror or exc}") from exc


def file_signature(paths: Sequence[Path]) -> tuple[object, ...]:
    """What changes when a file is replaced: the resolved target (a Secret volume swaps the
    ``..data`` symlink), its inode, mtime and size. A missing file is part of the state too."""
    parts: list[object] = []
    for path in paths:
        try:
            st = os.stat(path)
            parts.append((os.path.realpath(path), st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError as exc:
            parts.append((str(path), exc.errno))
    return tuple(parts)


class TlsMaterial:
    """A loaded ``SSLContext`` plus what we log and export about its certificate."""

    def __init__(self, context: ssl.SSLContext, subject: str, expires: datetime.datetime) -> None:
        self.context = context
        self.subject = subject
        self.expires = expires


def build_tls_context(
    cert_file: Path,
    key_file: Path,
    *,
    client_ca_file: Path | None = None,
    clock: Callable[[], datetime.datetime] = _utcnow,
) -> TlsMaterial:
    """A server ``SSLContext`` (TLS >= 1.2) from the files; ConfigError names the bad flag."""
    cert_pem = _read(cert_file, "--cert-file")
    key_pem = _read(key_file, "--key-file")
    try:
        certs.load_ca_bundle(cert_pem)  # the whole chain parses
    except CertificateError as exc:
        raise ConfigError("--cert-file", f"{cert_file} holds no valid PEM certificate") from exc
    try:
        subject = certs.describe_pair(cert_pem, key_pem)
        expires = certs.not_after(cert_pem)
    except CertificateError as exc:
        raise ConfigError("--key-file", f"{key_file}: {exc}") from exc
    problem = decide_validity(certs.not_before(cert_pem), expires, now=clock())
    if problem is not None:
        raise ConfigError("--cert-file", f"{cert_file}: {problem}; it cannot be served")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # tornado speaks HTTP/1.1 only; saying so stops a Go client from trying h2 first.
    context.set_alpn_protocols(["http/1.1"])
    try:
        # The files are read a second time here (ssl loads from paths only). A rotation in
        # between gives either a consistent newer pair or an SSLError, never a mixed context.
        context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("--cert-file", f"cannot load {cert_file} / {key_file}: {exc}") from exc
    if client_ca_file is not None:
        _read(client_ca_file, "--client-ca-file")
        try:
            context.load_verify_locations(cafile=str(client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "--client-ca-file", f"{client_ca_file} holds no usable CA certificate: {exc}"
            ) from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return TlsMaterial(context, subject, expires)
