"""``vsphere-kale certs`` as an admin runs it: files, modes, names, and refusing to overwrite."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from vsphere_kale.cli import main

FILES = ["ca.crt", "ca.key", "tls.crt", "tls.key"]


def run_certs(out_dir: Path, *extra: str) -> Result:
    args = ["certs", "--service", "vsphere-kale", "--namespace", "kubeflow"]
    return CliRunner().invoke(main, [*args, "--out-dir", str(out_dir), *extra])


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_writes_ca_and_serving_pair_with_private_keys(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = run_certs(out, "--extra-san", "127.0.0.1", "--extra-san", "webhook.example.org")

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == FILES
    for name in FILES:
        assert f"wrote {out / name}" in result.stdout
    assert stat.S_IMODE(os.stat(out / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out / "tls.key").st_mode) == 0o600
    assert "vsphere-kale.kubeflow.svc.cluster.local" in result.stdout
    assert "127.0.0.1" in result.stdout

    san = load(out / "tls.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [
        "vsphere-kale",
        "vsphere-kale.kubeflow",
        "vsphere-kale.kubeflow.svc",
        "vsphere-kale.kubeflow.svc.cluster.local",
        "webhook.example.org",
    ]
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


@pytest.mark.parametrize(
    "name",
    [
        x509.DNSName("vsphere-kale.kubeflow.svc"),
        x509.DNSName("webhook.example.org"),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ],
)
def test_serving_certificate_chains_to_the_written_ca(
    tmp_path: Path, name: x509.DNSName | x509.IPAddress
) -> None:
    result = run_certs(tmp_path, "--extra-san", "webhook.example.org", "--extra-san", "::1")
    assert result.exit_code == 0, result.output
    verifier = PolicyBuilder().store(Store([load(tmp_path / "ca.crt")])).build_server_verifier(name)
    chain = verifier.verify(load(tmp_path / "tls.crt"), [])
    assert chain[-1] == load(tmp_path / "ca.crt")


def test_days_sets_the_lifetime(tmp_path: Path) -> None:
    assert run_certs(tmp_path, "--days", "30").exit_code == 0
    lifetime = load(tmp_path / "tls.crt").not_valid_after_utc - datetime.datetime.now(
        datetime.timezone.utc
    )
    assert datetime.timedelta(days=29) < lifetime <= datetime.timedelta(days=30)


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert run_certs(tmp_path).exit_code == 0
    before = {name: (tmp_path / name).read_bytes() for name in FILES}

    refused = run_certs(tmp_path)
    assert refused.exit_code != 0
    assert f"{tmp_path / 'ca.crt'} already exists" in refused.stderr
    assert "use --force" in refused.stderr
    assert "Traceback" not in refused.output
    assert {name: (tmp_path / name).read_bytes() for name in FILES} == before

    forced = run_certs(tmp_path, "--force")
    assert forced.exit_code == 0, forced.output
    after = {name: (tmp_path / name).read_bytes() for name in FILES}
    assert all(after[name] != before[name] for name in FILES)  # a new CA and a new pair
    assert stat.S_IMODE(os.stat(tmp_path / "tls.key").st_mode) == 0o600


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--extra-san", "not a name"], "neither an IP address nor a DNS name"),
        (["--days", "0"], "--days"),
    ],
)
def test_bad_input_is_one_sentence(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = run_certs(tmp_path / "out", *args)
    assert result.exit_code != 0
    assert fragment in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_service_name_must_be_a_dns_label(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["certs", "--service", "Bad_Name", "--namespace", "ns", "--out-dir", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert "not a valid name" in result.stderr
    assert list(tmp_path.iterdir()) == []
