"""``limit``/``continue`` pagination and DeleteOptions in the sandbox, through the real client
and kubectl, as kube-apiserver answers them."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vsphere_kale.sandbox.testing import RunningSandbox


@pytest.fixture
def core(sandbox: RunningSandbox) -> client.CoreV1Api:
    api = client.CoreV1Api(sandbox.api_client())
    api.create_namespace({"metadata": {"name": "team"}})
    for i in range(7):
        api.create_namespaced_config_map(
            "team", {"metadata": {"name": f"cm-{i}", "labels": {"odd": str(i % 2)}}}
        )
    return api


def _status(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert body["kind"] == "Status"
    return dict(body)


def test_pages_cover_the_list_once_with_remaining_counts(core: client.CoreV1Api) -> None:
    first = core.list_namespaced_config_map("team", limit=3)
    assert [c.metadata.name for c in first.items] == ["cm-0", "cm-1", "cm-2"]
    assert first.metadata.remaining_item_count == 4
    assert first.metadata._continue
    second = core.list_namespaced_config_map("team", limit=3, _continue=first.metadata._continue)
    assert [c.metadata.name for c in second.items] == ["cm-3", "cm-4", "cm-5"]
    assert second.metadata.remaining_item_count == 1
    assert second.metadata.resource_version == first.metadata.resource_version
    last = core.list_namespaced_config_map("team", limit=3, _continue=second.metadata._continue)
    assert [c.metadata.name for c in last.items] == ["cm-6"]
    assert last.metadata._continue is None
    assert last.metadata.remaining_item_count is None


def test_later_pages_are_consistent_with_the_first(core: client.CoreV1Api) -> None:
    first = core.list_namespaced_config_map("team", limit=2)
    core.delete_namespaced_config_map("cm-5", "team")
    core.create_namespaced_config_map("team", {"metadata": {"name": "cm-9"}})
    rest = core.list_namespaced_config_map("team", _continue=first.metadata._continue)
    assert [c.metadata.name for c in rest.items] == ["cm-2", "cm-3", "cm-4", "cm-5", "cm-6"]


def test_selector_pages_fill_up_and_omit_the_remaining_count(core: client.CoreV1Api) -> None:
    page = core.list_namespaced_config_map("team", limit=2, label_selector="odd=1")
    assert [c.metadata.name for c in page.items] == ["cm-1", "cm-3"]
    assert page.metadata.remaining_item_count is None
    rest = core.list_namespaced_config_map(
        "team", limit=2, label_selector="odd=1", _continue=page.metadata._continue
    )
    assert [c.metadata.name for c in rest.items] == ["cm-5"]


def test_stale_token_is_410_expired_with_an_inconsistent_continue(
    sandbox: RunningSandbox, core: client.CoreV1Api
) -> None:
    first = core.list_namespaced_config_map("team", limit=3)
    sandbox.sandbox.list_snapshots.compact()  # what an etcd compaction does
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_config_map("team", limit=3, _continue=first.metadata._continue)
    assert caught.value.status == 410
    status = _status(caught.value)
    assert status["reason"] == "Expired"
    assert status["message"].startswith(
        "The provided continue parameter is too old to display a consistent list result."
    )
    # The token in the Status continues from the same place at the latest state.
    rest = core.list_namespaced_config_map(
        "team", limit=10, _continue=status["metadata"]["continue"]
    )
    assert [c.metadata.name for c in rest.items] == ["cm-3", "cm-4", "cm-5", "cm-6"]


@pytest.mark.parametrize("token", ["not-base64!", "eyJ2IjoieCJ9"])
def test_garbage_token_is_400(core: client.CoreV1Api, token: str) -> None:
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_config_map("team", limit=3, _continue=token)
    assert caught.value.status == 400
    assert _status(caught.value)["message"].startswith("invalid continue token")


def test_kubectl_get_in_chunks_lists_everything(sandbox_factory: Any) -> None:
    running = sandbox_factory(tls=True)
    api = client.CoreV1Api(running.api_client())
    api.create_namespace({"metadata": {"name": "team"}})
    for i in range(5):
        api.create_namespaced_config_map("team", {"metadata": {"name": f"cm-{i}"}})
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(running.kubeconfig_path), "get", "configmaps",
         "-n", "team", "--chunk-size=2", "-o", "name"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert out == [f"configmap/cm-{i}" for i in range(5)]


# --- DeleteOptions --------------------------------------------------------------------------


def test_unknown_propagation_policy_is_422_and_nothing_is_deleted(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as caught:
        core.delete_namespaced_config_map("cm-0", "team", propagation_policy="Sometimes")
    assert caught.value.status == 422
    status = _status(caught.value)
    assert status["message"] == (
        'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: '
        '"Sometimes": supported values: "Foreground", "Background", "Orphan", "nil"'
    )
    assert status["details"]["group"] == "meta.k8s.io"
    assert status["details"]["kind"] == "DeleteOptions"
    core.read_namespaced_config_map("cm-0", "team")


def test_orphan_dependents_with_a_policy_is_422(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as caught:
        core.delete_namespaced_config_map(
            "cm-0",
            "team",
            body=client.V1DeleteOptions(orphan_dependents=True, propagation_policy="Orphan"),
        )
    assert caught.value.status == 422
    assert (
        "orphanDependents and deletionPropagation cannot be both set"
        in (_status(caught.value)["message"])
    )


@pytest.mark.parametrize("policy", ["Orphan", "Background", "Foreground"])
def test_known_policies_delete(core: client.CoreV1Api, policy: str) -> None:
    core.delete_namespaced_config_map("cm-0", "team", propagation_policy=policy)
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_config_map("cm-0", "team")
    assert caught.value.status == 404


def test_kubectl_delete_with_foreground_cascade_deletes(sandbox_factory: Any) -> None:
    running = sandbox_factory(tls=True)
    api = client.CoreV1Api(running.api_client())
    api.create_namespace({"metadata": {"name": "team"}})
    api.create_namespaced_config_map("team", {"metadata": {"name": "cm"}})
    done = subprocess.run(
        ["kubectl", "--kubeconfig", str(running.kubeconfig_path), "delete", "configmap", "cm",
         "-n", "team", "--cascade=foreground"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert api.list_namespaced_config_map("team").items == []
