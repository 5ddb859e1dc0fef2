"""CA and serving certificates for the webhook, with ``cryptography``.

This replaces the earlier tool's cfssl + Go + ``certificates.k8s.io/v1beta1`` CSR steps (that
API is gone since Kubernetes 1.22): we are our own small CA, and the API server trusts it
through the webhook configuration's ``caBundle``.

Everything here is pure (PEM bytes in, PEM bytes out) except :func:`write_cert_files`, so
the installer (rotation) and the sandbox (``--tls``) reuse the same functions.

Keys are EC P-256: every supported Kubernetes version accepts ECDSA serving certificates,
and handshakes are several times cheaper than with RSA, which matters for a webhook the API
server calls on every PVC CREATE.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vsphere_kale.errors import CertificateError

# Re-exported: the webhook and rotation read bundles through certs, as before.
from vsphere_kale.policy.pem import load_ca_bundle as load_ca_bundle

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
TLS_CERT_FILE = "tls.crt"
TLS_KEY_FILE = "tls.key"

# Certificates start a little in the past: a node whose clock lags the one that issued the
# certificate would otherwise reject it as "not yet valid" for a few minutes.
_BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class CertBundle:
    """The four PEM blobs a webhook deployment needs (names as in a kubernetes.io/tls Secret
    plus the CA, which goes into the webhook configuration's caBundle)."""

    ca_cert: bytes
    ca_key: bytes
    tls_cert: bytes
    tls_key: bytes


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _serial() -> int:
    # RFC 5280: positive, at most 20 octets; 159 random bits satisfies both.
    return secrets.randbits(159) | 1


def _check_days(days: int) -> None:
    if days <= 0:
        raise CertificateError(f"certificate lifetime must be at least one day, got {days}")


def _load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertificateError(f"{what} is not a PEM certificate: {exc}") from exc


SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _load_key(pem: bytes, what: str) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{what} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertificateError(f"{what} must be an EC or RSA private key")
    return key


def _spki(key: SigningKey | x509.Certificate) -> bytes:
    public = key.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def build_ca(common_name: str, *, days: int) -> tuple[bytes, bytes]:
    """A self-signed CA that may sign leaf certificates only (path length 0).

    Returns ``(cert_pem, key_pem)``.
    """
    _check_days(days)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _build_leaf(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    *,
    common_name: str,
    sans: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
) -> tuple[bytes, bytes]:
    _check_days(days)
    ca_cert = _load_cert(ca_cert_pem, "CA certificate")
    ca_key = _load_key(ca_key_pem, "CA key")
    if _spki(ca_key) != _spki(ca_cert):
        raise CertificateError("CA key does not belong to the CA certificate")
    key = _new_key()
    now = _now()
    not_after = now + datetime.timedelta(days=days)
    # A leaf outliving its CA fails verification at the CA's expiry anyway; say so plainly.
    not_after = min(not_after, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            _authority_key_identifier(ca_cert),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # Reuse the CA's own SKI when it has one (RFC 5280 4.2.1.1), so chains built by other
    # tools (cert-manager, openssl) match too; otherwise derive it from the CA's key.
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        ski = x509.SubjectKeyIdentifier.from_public_key(ca_cert.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def build_serving_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    *,
    dns_names: Sequence[str],
    ip_addresses: Sequence[IPAddress] = (),
    days: int,
    common_name: str | None = None,
) -> tuple[bytes, bytes]:
    """A TLS server certificate signed by the CA, valid for the given names and addresses.

    Go (the API server's client) ignores the common name and checks the SANs only, so at
    least one SAN is required.
    """
    if not dns_names and not ip_addresses:
        raise CertificateError("a serving certificate needs at least one DNS name or IP address")
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ip) for ip in ip_addresses]
    if common_name is None:
        common_name = dns_names[0] if dns_names else str(ip_addresses[0])
    return _build_leaf(
        ca_cert_pem,
        ca_key_pem,
        common_name=common_name[:64],  # X.520 upper bound; SANs carry the real names
        sans=sans,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        days=days,
    )


def build_client_cert(
    ca_cert_pem: bytes, ca_key_pem: bytes, *, common_name: str, days: int
) -> tuple[bytes, bytes]:
    """A TLS client certificate (e.g. for the API server when ``--client-ca-file`` is on)."""
    return _build_leaf(
        ca_cert_pem,
        ca_key_pem,
        common_name=common_name,
        sans=(),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        days=days,
    )


def service_dns_names(service: str, namespace: str) -> list[str]:
    """Every name the API server may use to reach ``service`` in ``namespace``."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def split_sans(values: Iterable[str]) -> tuple[list[str], list[IPAddress]]:
    """Sort ``--extra-san`` values into DNS names and IP addresses (order kept, no duplicates)."""
    dns: list[str] = []
    ips: list[IPAddress] = []
    for raw in values:
        value = raw.strip()
        if not value:
            raise CertificateError("an extra SAN is empty")
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            if not _looks_like_dns_name(value):
                raise CertificateError(
                    f"{value!r} is neither an IP address nor a DNS name"
                ) from None
            if value not in dns:
                dns.append(value)
        else:
            if ip not in ips:
                ips.append(ip)
    return dns, ips


def _looks_like_dns_name(value: str) -> bool:
    labels = value.split(".")
    if value.startswith("*."):  # a wildcard is allowed as the first label only
        labels = labels[1:]
    return len(value) <= 253 and all(
        0 < len(label) <= 63
        and label.replace("-", "").isalnum()
        and label.isascii()
        and not label.startswith("-")
        and not label.endswith("-")
        for label in labels
    )


def build_cert_bundle(
    service: str,
    namespace: str,
    *,
    extra_sans: Sequence[str] = (),
    days: int = 365,
) -> CertBundle:
    """A fresh CA and a serving certificate for the Service (plus extra names/addresses)."""
    extra_dns, extra_ips = split_sans(extra_sans)
    dns_names = service_dns_names(service, namespace)
    dns_names += [name for name in extra_dns if name not in dns_names]
    ca_cert, ca_key = build_ca(f"vsphere-kale-ca ({service}.{namespace})", days=days)
    tls_cert, tls_key = build_serving_cert(
        ca_cert,
        ca_key,
        dns_names=dns_names,
        ip_addresses=extra_ips,
        days=days,
        common_name=f"{service}.{namespace}.svc",
    )
    return CertBundle(ca_cert=ca_cert, ca_key=ca_key, tls_cert=tls_cert, tls_key=tls_key)


def write_cert_files(
    out_dir: str | os.PathLike[str], bundle: CertBundle, *, force: bool
) -> list[Path]:
    """Write ``ca.crt``, ``ca.key``, ``tls.crt``, ``tls.key`` into ``out_dir``.

    Keys are created 0600 (never world-readable, not even for an instant). Without ``force``
    nothing is written if any of the files exists. Each file is replaced atomically (write
    to a temporary name, then rename), so a server watching ``tls.crt``/``tls.key`` never
    reads half a file; it may briefly see a new certificate with the old key, which the
    server's reload treats as "not yet" and keeps serving the old pair.
    """
    directory = Path(out_dir)
    contents = [
        (CA_CERT_FILE, bundle.ca_cert, 0o644),
        (CA_KEY_FILE, bundle.ca_key, 0o600),
        (TLS_CERT_FILE, bundle.tls_cert, 0o644),
        (TLS_KEY_FILE, bundle.tls_key, 0o600),
    ]
    if not force:
        for name, _, _ in contents:
            if (directory / name).exists():
                raise CertificateError(
                    f"{directory / name} already exists; use --force to overwrite it"
                )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, data, mode in contents:
            target = directory / name
            _write_atomic(target, data, mode)
            written.append(target)
    except OSError as exc:
        raise CertificateError(
            f"cannot write certificates to {directory}: {exc.strerror or exc}"
        ) from exc
    return written


def _write_atomic(target: Path, data: bytes, mode: int) -> None:
    tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed the mode given to os.open
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def not_before(cert_pem: bytes) -> datetime.datetime:
    """Start of the (first) certificate's validity, in UTC."""
    return _load_cert(cert_pem, "certificate").not_valid_before_utc


def not_after(cert_pem: bytes) -> datetime.datetime:
    """Expiry (timezone-aware UTC) of the first certificate in ``cert_pem``."""
    return _load_cert(cert_pem, "certificate").not_valid_after_utc


def describe_pair(cert_pem: bytes, key_pem: bytes) -> str:
    """Check that a certificate and key belong together; returns the certificate's subject
    common name for log lines. Raises :class:`CertificateError` with the reason otherwise."""
    cert = _load_cert(cert_pem, "certificate")
    key = _load_key(key_pem, "key")
    if _spki(key) != _spki(cert):
        raise CertificateError("the private key does not belong to the certificate")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()
