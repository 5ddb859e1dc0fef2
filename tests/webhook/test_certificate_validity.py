"""Issue 10, finding 5: a certificate outside its validity window is never served.

On main, start and hot reload accepted a certificate that expired yesterday or is valid only
from tomorrow; the API server would then have failed every TLS handshake with the webhook.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Shared helpers live in tests/helpers (on sys.path through pytest's `pythonpath`).
from test_webhook_server import (
    _handshake_ok,
    _run_cli,
    _wait_for,
    make_certs,
    metric,
    new_server,
    running,
)
from tls_helpers import served_certificate_expiry

from vsphere_kale.errors import ConfigError
from vsphere_kale.webhook.tls import CLOCK_SKEW, decide_validity

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def write_pair(
    directory: Path, *, not_before: datetime.datetime, not_after: datetime.datetime
) -> None:
    """A self-signed serving pair for 127.0.0.1 with the given validity window."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vsphere-kale.vsphere-kale.svc")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("vsphere-kale.vsphere-kale.svc")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


WINDOWS = {
    "expired-yesterday": (NOW - 30 * DAY, NOW - DAY, "expired at"),
    "valid-from-tomorrow": (NOW + DAY, NOW + 30 * DAY, "not valid before"),
}


@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_start_is_refused_with_one_sentence(tmp_path: Path, window: str) -> None:
    not_before, not_after, fragment = WINDOWS[window]
    write_pair(tmp_path, not_before=not_before, not_after=not_after)
    code, stderr = _run_cli(
        "webhook", "--cert-file", str(tmp_path / "tls.crt"), "--key-file",
        str(tmp_path / "tls.key"), "--rwx-storage-class", "nfs-client",
    )  # fmt: skip
    assert code == 2
    assert "--cert-file" in stderr and fragment in stderr and "cannot be served" in stderr
    assert "Traceback" not in stderr
    with pytest.raises(ConfigError, match=fragment):
        new_server(tmp_path)


@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_reload_keeps_the_old_certificate_logs_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, window: str
) -> None:
    live = make_certs(tmp_path / "live")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes((live / "ca.crt").read_bytes())
    server = new_server(live, reload_interval=0.1)
    with (
        running(server) as (server, _),
        caplog.at_level(logging.ERROR, logger="vsphere_kale.webhook.server"),
    ):
        port = server.port
        expires = served_certificate_expiry(port)
        # When the files are replaced by a complete, matching pair outside its window,
        not_before, not_after, fragment = WINDOWS[window]
        write_pair(live, not_before=not_before, not_after=not_after)
        # then the failure is counted,
        assert _wait_for(
            lambda: (
                metric(
                    port,
                    ca_file,
                    "vsphere_kale_webhook_certificate_reloads_total",
                    result="failure",
                )
                >= 1
            )
        )
        # the old certificate is still served (and exported),
        assert _handshake_ok(port, ca_file)
        assert served_certificate_expiry(port) == expires
        # and an ERROR says why.
        assert any(
            "keeping the current serving certificate" in r.getMessage()
            and fragment in r.getMessage()
            for r in caplog.records
        )


@pytest.mark.parametrize(
    ("offset_before", "offset_after", "ok"),
    [
        (-DAY, DAY, True),
        (CLOCK_SKEW / 2, DAY, True),  # a little ahead: clock skew between nodes
        (CLOCK_SKEW * 2, DAY, False),
        (-DAY, -datetime.timedelta(seconds=1), False),
        (-DAY, datetime.timedelta(0), False),  # notAfter is exclusive here: expiring now
    ],
)
def test_decide_validity(
    offset_before: datetime.timedelta, offset_after: datetime.timedelta, ok: bool
) -> None:
    assert (decide_validity(NOW + offset_before, NOW + offset_after, now=NOW) is None) is ok
