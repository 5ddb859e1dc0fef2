"""Server-side apply and managedFields in the sandbox, through the real client and kubectl."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vsphere_kale.sandbox.testing import RunningSandbox

PATH = "/api/v1/namespaces/team/configmaps/settings"


@pytest.fixture
def running(sandbox: RunningSandbox) -> RunningSandbox:
    client.CoreV1Api(sandbox.api_client()).create_namespace({"metadata": {"name": "team"}})
    return sandbox


def _apply(
    running: RunningSandbox, data: dict[str, str], *, manager: str, force: bool = False
) -> dict[str, Any]:
    body = json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": data}
    )
    query = [("fieldManager", manager)] + ([("force", "true")] if force else [])
    return dict(
        running.request(
            "PATCH", PATH, body=body, query=query, content_type="application/apply-patch+yaml"
        ).body
    )


def _managers(obj: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {(e["manager"], e["operation"]): e["fieldsV1"] for e in obj["metadata"]["managedFields"]}


def test_apply_records_field_ownership(running: RunningSandbox) -> None:
    created = _apply(running, {"a": "1"}, manager="installer")
    assert _managers(created) == {("installer", "Apply"): {"f:data": {"f:a": {}}}}
    entry = created["metadata"]["managedFields"][0]
    assert entry["apiVersion"] == "v1" and entry["fieldsType"] == "FieldsV1" and entry["time"]


def test_another_manager_changing_an_owned_field_conflicts(running: RunningSandbox) -> None:
    _apply(running, {"a": "1"}, manager="installer")
    with pytest.raises(ApiException) as caught:
        _apply(running, {"a": "2"}, manager="admin")
    assert caught.value.status == 409
    status = json.loads(caught.value.body)
    assert status["reason"] == "Conflict"
    assert (
        status["message"]
        == 'Apply failed with 1 conflict: conflict with "installer": .data.a'
    )
    assert status["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "installer"',
         "field": ".data.a"}
    ]  # fmt: skip
    # The same value is no conflict: both managers own it.
    shared = _apply(running, {"a": "1"}, manager="admin")
    assert set(_managers(shared)) == {("installer", "Apply"), ("admin", "Apply")}


def test_force_takes_the_field_over(running: RunningSandbox) -> None:
    _apply(running, {"a": "1", "b": "1"}, manager="installer")
    forced = _apply(running, {"a": "2"}, manager="admin", force=True)
    assert forced["data"] == {"a": "2", "b": "1"}
    assert _managers(forced) == {
        ("installer", "Apply"): {"f:data": {"f:b": {}}},
        ("admin", "Apply"): {"f:data": {"f:a": {}}},
    }


def test_fields_a_manager_stops_applying_are_pruned_unless_shared(
    running: RunningSandbox,
) -> None:
    _apply(running, {"a": "1", "b": "1"}, manager="installer")
    _apply(running, {"b": "1"}, manager="admin")
    after = _apply(running, {}, manager="installer")
    assert after["data"] == {"b": "1"}  # a pruned; b still held by admin


def test_an_update_takes_ownership_of_what_it_changed(running: RunningSandbox) -> None:
    _apply(running, {"a": "1"}, manager="installer")
    core = client.CoreV1Api(running.api_client())
    core.patch_namespaced_config_map(
        "settings", "team", {"data": {"a": "edited"}}, field_manager="kubectl-edit"
    )
    stored = running.request("GET", PATH).body
    assert _managers(stored) == {("kubectl-edit", "Update"): {"f:data": {"f:a": {}}}}
    with pytest.raises(ApiException) as caught:
        _apply(running, {"a": "1"}, manager="installer")
    # kube-apiserver names an Update manager with its version, even the request's own.
    assert json.loads(caught.value.body)["message"] == (
        'Apply failed with 1 conflict: conflict with "kubectl-edit" using v1: .data.a'
    )


def test_apply_needs_a_field_manager(running: RunningSandbox) -> None:
    with pytest.raises(ApiException) as caught:
        running.request(
            "PATCH", PATH, body='{"apiVersion":"v1","kind":"ConfigMap"}',
            content_type="application/apply-patch+yaml",
        )  # fmt: skip
    assert caught.value.status == 422  # PatchOptions.meta.k8s.io "" is invalid, as kube
    assert "fieldManager" in json.loads(caught.value.body)["message"]


def test_kubectl_apply_server_side_conflicts_and_force(sandbox_factory: Any, tmp_path: Any) -> None:
    running = sandbox_factory(tls=True)
    client.CoreV1Api(running.api_client()).create_namespace({"metadata": {"name": "team"}})
    _apply(running, {"a": "1"}, manager="installer")
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: team\n"
        "data:\n  a: '2'\n"
    )

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(running.kubeconfig_path), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    refused = kubectl("apply", "--server-side", "-f", str(manifest))
    assert refused.returncode != 0
    assert 'conflict with "installer"' in refused.stderr
    forced = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(manifest))
    assert forced.returncode == 0, forced.stderr
    data = client.CoreV1Api(running.api_client()).read_namespaced_config_map("settings", "team")
    assert data.data == {"a": "2"}
