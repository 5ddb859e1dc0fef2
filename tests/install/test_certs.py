"""Certificate building: the extensions and names the API server's Go TLS client checks."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from vsphere_kale.errors import CertificateError
from vsphere_kale.install import certs

E = TypeVar("E", bound=x509.ExtensionType)


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return certs.build_ca("test-ca", days=30)


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _ext(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


def test_ca_is_a_ca_that_signs_leaves_only(ca: tuple[bytes, bytes]) -> None:
    cert = _cert(ca[0])
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is True
    assert constraints.value.path_length == 0
    usage = _ext(cert, x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.issuer == cert.subject
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_ca_lifetime_is_days_and_backdated(ca: tuple[bytes, bytes]) -> None:
    cert = _cert(ca[0])
    now = datetime.datetime.now(datetime.timezone.utc)
    assert cert.not_valid_before_utc < now - datetime.timedelta(minutes=1)
    lifetime = cert.not_valid_after_utc - now
    assert datetime.timedelta(days=29, hours=23) < lifetime <= datetime.timedelta(days=30)


def test_serving_cert_has_server_extensions_and_sans(ca: tuple[bytes, bytes]) -> None:
    cert_pem, key_pem = certs.build_serving_cert(
        *ca,
        dns_names=["svc", "svc.ns.svc"],
        ip_addresses=[ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")],
        days=10,
    )
    cert = _cert(cert_pem)
    assert _ext(cert, x509.BasicConstraints).value.ca is False
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_cert_sign
    eku = _ext(cert, x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["svc", "svc.ns.svc"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    ca_ski = _ext(_cert(ca[0]), x509.SubjectKeyIdentifier).value
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert certs.describe_pair(cert_pem, key_pem) == "svc"


@pytest.mark.parametrize("name", ["svc.ns.svc", "svc.ns.svc.cluster.local"])
def test_serving_cert_verifies_against_its_ca_for_each_service_name(
    ca: tuple[bytes, bytes], name: str
) -> None:
    bundle = certs.build_cert_bundle("svc", "ns", days=5)
    verifier = (
        PolicyBuilder()
        .store(Store([_cert(bundle.ca_cert)]))
        .build_server_verifier(x509.DNSName(name))
    )
    chain = verifier.verify(_cert(bundle.tls_cert), [])
    assert chain[-1] == _cert(bundle.ca_cert)
    # ... and not against another CA
    other = PolicyBuilder().store(Store([_cert(ca[0])])).build_server_verifier(x509.DNSName(name))
    with pytest.raises(VerificationError):
        other.verify(_cert(bundle.tls_cert), [])


def test_serving_cert_does_not_outlive_its_ca(ca: tuple[bytes, bytes]) -> None:
    cert_pem, _ = certs.build_serving_cert(*ca, dns_names=["svc"], days=3650)
    assert certs.not_after(cert_pem) == certs.not_after(ca[0])


def test_client_cert_is_for_client_auth(ca: tuple[bytes, bytes]) -> None:
    cert_pem, key_pem = certs.build_client_cert(*ca, common_name="kube-apiserver", days=1)
    eku = _ext(_cert(cert_pem), x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert certs.describe_pair(cert_pem, key_pem) == "kube-apiserver"


def test_serving_cert_refuses_a_key_of_another_ca(ca: tuple[bytes, bytes]) -> None:
    _, other_key = certs.build_ca("other", days=1)
    with pytest.raises(CertificateError, match="does not belong"):
        certs.build_serving_cert(ca[0], other_key, dns_names=["svc"], days=1)


def test_serving_cert_needs_a_name(ca: tuple[bytes, bytes]) -> None:
    with pytest.raises(CertificateError, match="at least one"):
        certs.build_serving_cert(*ca, dns_names=[], days=1)


def test_days_must_be_positive() -> None:
    with pytest.raises(CertificateError, match="at least one day"):
        certs.build_ca("x", days=0)


def test_service_dns_names() -> None:
    assert certs.service_dns_names("vsphere-kale", "kube-sys") == [
        "vsphere-kale",
        "vsphere-kale.kube-sys",
        "vsphere-kale.kube-sys.svc",
        "vsphere-kale.kube-sys.svc.cluster.local",
    ]


def test_split_sans_recognises_ips_and_drops_duplicates() -> None:
    dns, ips = certs.split_sans(["localhost", "127.0.0.1", "::1", "localhost", "*.example.org"])
    assert dns == ["localhost", "*.example.org"]
    assert ips == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


@pytest.mark.parametrize("bad", ["", "has space", "-lead.example", "a..b", "x" * 64])
def test_split_sans_rejects_garbage(bad: str) -> None:
    with pytest.raises(CertificateError):
        certs.split_sans([bad])


def test_not_after_is_the_expiry(ca: tuple[bytes, bytes]) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    assert now + datetime.timedelta(days=29) < certs.not_after(ca[0])
    assert certs.not_after(ca[0]) < now + datetime.timedelta(days=31)


def test_load_ca_bundle_reads_old_and_new_ca(ca: tuple[bytes, bytes]) -> None:
    new_ca, _ = certs.build_ca("new", days=1)
    bundle = certs.load_ca_bundle(ca[0] + new_ca)
    assert [c.subject.rfc4514_string() for c in bundle] == ["CN=test-ca", "CN=new"]


@pytest.mark.parametrize("pem", [b"", b"not pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_load_ca_bundle_rejects_garbage(pem: bytes) -> None:
    with pytest.raises(CertificateError):
        certs.load_ca_bundle(pem)


def test_describe_pair_rejects_mismatched_key(ca: tuple[bytes, bytes]) -> None:
    cert_a, _ = certs.build_serving_cert(*ca, dns_names=["a"], days=1)
    _, key_b = certs.build_serving_cert(*ca, dns_names=["b"], days=1)
    with pytest.raises(CertificateError, match="does not belong"):
        certs.describe_pair(cert_a, key_b)
    with pytest.raises(CertificateError, match="not an unencrypted PEM private key"):
        certs.describe_pair(cert_a, b"junk")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_cert_files_modes_and_refusal(tmp_path: Path) -> None:
    bundle = certs.build_cert_bundle("svc", "ns", days=1)
    out = tmp_path / "new" / "dir"
    written = certs.write_cert_files(out, bundle, force=False)
    assert [p.name for p in written] == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert _mode(out / "ca.key") == 0o600
    assert _mode(out / "tls.key") == 0o600
    assert _mode(out / "tls.crt") == 0o644
    assert (out / "tls.crt").read_bytes() == bundle.tls_cert
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]

    second = certs.build_cert_bundle("svc", "ns", days=1)
    (out / "ca.crt").unlink()
    (out / "ca.key").unlink()
    with pytest.raises(CertificateError, match=r"tls\.crt already exists; use --force"):
        certs.write_cert_files(out, second, force=False)
    assert (out / "tls.crt").read_bytes() == bundle.tls_cert
    assert not (out / "ca.crt").exists()  # nothing written on refusal

    certs.write_cert_files(out, second, force=True)
    assert (out / "tls.key").read_bytes() == second.tls_key
    assert _mode(out / "tls.key") == 0o600
