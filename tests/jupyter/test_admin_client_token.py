"""The extension sends the audience-bound token when the PodDefault mounted it (issue 10)."""

from __future__ import annotations

from pathlib import Path

from vsphere_kale.jupyter.admin_client import AdminApiClient


def client_for(tmp_path: Path, *, audience: bool) -> AdminApiClient:
    (tmp_path / "sa-token").write_text("api-audience-token\n")
    if audience:
        (tmp_path / "vk-token").write_text("vsphere-kale-audience-token\n")
    return AdminApiClient(
        url="https://vsphere-kale.vsphere-kale.svc",
        token_file=str(tmp_path / "sa-token"),
        ca_file=None,
        timeout=1.0,
        audience_token_file=str(tmp_path / "vk-token"),
    )


def test_the_audience_bound_token_is_preferred(tmp_path: Path) -> None:
    token, source = client_for(tmp_path, audience=True)._token()
    assert token == "vsphere-kale-audience-token" and source.endswith("vk-token")


def test_without_it_the_service_account_token_is_sent(tmp_path: Path) -> None:
    token, source = client_for(tmp_path, audience=False)._token()
    assert token == "api-audience-token" and source.endswith("sa-token")


def test_a_rotated_audience_token_is_read_again(tmp_path: Path) -> None:
    client = client_for(tmp_path, audience=True)
    (tmp_path / "vk-token").write_text("rotated\n")  # the kubelet rewrites it about hourly
    assert client._token()[0] == "rotated"
