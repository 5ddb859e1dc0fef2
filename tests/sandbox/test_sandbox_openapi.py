"""OpenAPI of the sandbox: a real PVC schema for ``kubectl explain``, ``/openapi/v2`` as JSON."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from vsphere_kale.sandbox.testing import RunningSandbox


def _kubectl(running: RunningSandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(running.kubeconfig_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def running(sandbox_factory: Any) -> RunningSandbox:
    return sandbox_factory(tls=True)


def test_kubectl_explain_pvc_spec_lists_its_fields(running: RunningSandbox) -> None:
    done = _kubectl(running, "explain", "pvc.spec")
    assert done.returncode == 0, done.stderr
    assert "KIND:       PersistentVolumeClaim" in done.stdout
    assert "FIELD: spec <PersistentVolumeClaimSpec>" in done.stdout
    for field in ("accessModes\t<[]string>", "storageClassName\t<string>", "resources\t<"):
        assert field in done.stdout


def test_kubectl_explain_reaches_nested_fields(running: RunningSandbox) -> None:
    done = _kubectl(running, "explain", "persistentvolumeclaims.spec.resources.requests")
    assert done.returncode == 0, done.stderr
    assert "FIELD: requests <map[string]" in done.stdout


def test_kubectl_apply_of_a_claim_still_works_with_the_schema(
    running: RunningSandbox, tmp_path: Any
) -> None:
    manifest = tmp_path / "pvc.yaml"
    body = (
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\n"
        "  namespace: team\n  labels: {tier: LABEL}\nspec:\n  accessModes: [ReadWriteOnce]\n"
        "  resources:\n    requests:\n      storage: 1Gi\n"
    )
    assert _kubectl(running, "create", "namespace", "team").returncode == 0
    manifest.write_text(body.replace("LABEL", "a"))
    first = _kubectl(running, "apply", "-f", str(manifest))
    assert first.returncode == 0, first.stderr
    manifest.write_text(body.replace("LABEL", "b"))
    second = _kubectl(running, "apply", "-f", str(manifest))
    assert second.returncode == 0, second.stderr
    assert "configured" in second.stdout
    assert "Warning" not in second.stderr


def test_openapi_v2_is_json_with_the_pvc_definition(running: RunningSandbox) -> None:
    doc = running.request("GET", "/openapi/v2").body
    assert doc["swagger"] == "2.0"
    spec = doc["definitions"]["io.k8s.api.core.v1.PersistentVolumeClaim"]["properties"]["spec"]
    assert spec["$ref"] == "#/definitions/io.k8s.api.core.v1.PersistentVolumeClaimSpec"


def test_openapi_v2_in_protobuf_is_a_clear_406(running: RunningSandbox) -> None:
    api = running.api_client()
    response = api.call_api(
        "GET",
        f"{running.url}/openapi/v2",
        header_params={
            "Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
            "Authorization": f"Bearer {running.admin_token}",
        },
    )
    response.read()
    assert response.status == 406
    assert json.loads(response.data)["reason"] == "NotAcceptable"
