"""PersistentVolumeClaim validation and DefaultStorageClass admission in the sandbox, through
the real kubernetes client and kubectl, with kube-apiserver 1.36's messages."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vsphere_kale.sandbox.testing import RunningSandbox

IMMUTABLE = (
    'PersistentVolumeClaim "data" is invalid: spec: Forbidden: spec is immutable after creation '
    "except resources.requests and volumeAttributesClassName for bound claims\n"
)


def _core(running: RunningSandbox) -> client.CoreV1Api:
    core = client.CoreV1Api(running.api_client())
    try:
        core.create_namespace({"metadata": {"name": "team"}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    return core


def _claim(name: str = "data", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "vsan",
        "resources": {"requests": {"storage": "1Gi"}},
    }
    body.update(spec)
    return {"metadata": {"name": name}, "spec": {k: v for k, v in body.items() if v is not None}}


def _status(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert body["kind"] == "Status"
    return dict(body)


def _refused(call: Any, *args: Any) -> dict[str, Any]:
    with pytest.raises(ApiException) as caught:
        call(*args)
    assert caught.value.status == 422
    status = _status(caught.value)
    assert status["reason"] == "Invalid"
    return status


def test_claim_without_a_storage_request_is_422_with_the_field_path(
    sandbox: RunningSandbox,
) -> None:
    core = _core(sandbox)
    status = _refused(
        core.create_namespaced_persistent_volume_claim, "team", _claim(resources={})
    )
    assert status["message"] == (
        'PersistentVolumeClaim "data" is invalid: spec.resources[storage]: Required value'
    )
    assert status["details"] == {
        "name": "data",
        "kind": "PersistentVolumeClaim",
        "causes": [
            {
                "reason": "FieldValueRequired",
                "message": "Required value",
                "field": "spec.resources[storage]",
            }
        ],
    }
    assert list(status) == [
        "kind", "apiVersion", "metadata", "status", "message", "reason", "details", "code",
    ]  # fmt: skip


def test_claim_without_access_modes_and_a_zero_size_lists_both_causes(
    sandbox: RunningSandbox,
) -> None:
    status = _refused(
        _core(sandbox).create_namespaced_persistent_volume_claim,
        "team",
        _claim(accessModes=[], resources={"requests": {"storage": "0"}}),
    )
    assert status["message"] == (
        'PersistentVolumeClaim "data" is invalid: [spec.accessModes: Required value: at least 1 '
        'access mode is required, spec.resources[storage]: Invalid value: "0": must be greater '
        "than zero]"
    )


def test_malformed_quantity_is_400(sandbox: RunningSandbox) -> None:
    with pytest.raises(ApiException) as caught:
        _core(sandbox).create_namespaced_persistent_volume_claim(
            "team", _claim(resources={"requests": {"storage": "lots"}})
        )
    assert caught.value.status == 400
    assert "quantities must match the regular expression" in _status(caught.value)["message"]


@pytest.mark.parametrize(
    "patch",
    [
        {"spec": {"storageClassName": "nfs-client"}},
        {"spec": {"accessModes": ["ReadWriteMany"]}},
        {"spec": {"resources": {"requests": {"storage": "2Gi"}}}},  # unbound: no resize
        {"spec": {"volumeMode": "Block"}},
    ],
)
def test_pending_claims_spec_is_immutable(sandbox: RunningSandbox, patch: dict[str, Any]) -> None:
    core = _core(sandbox)
    core.create_namespaced_persistent_volume_claim("team", _claim())
    status = _refused(core.patch_namespaced_persistent_volume_claim, "data", "team", patch)
    assert status["message"].startswith(IMMUTABLE)
    assert status["details"]["causes"][0]["field"] == "spec"
    assert status["details"]["causes"][0]["reason"] == "FieldValueForbidden"
    stored = core.read_namespaced_persistent_volume_claim("data", "team")
    assert stored.spec.storage_class_name == "vsan"
    assert stored.spec.access_modes == ["ReadWriteOnce"]


def test_replacing_a_claim_is_held_to_the_same_rules(sandbox: RunningSandbox) -> None:
    core = _core(sandbox)
    created = core.create_namespaced_persistent_volume_claim("team", _claim())
    body = _claim(storageClassName="nfs-client")
    body["metadata"]["resourceVersion"] = created.metadata.resource_version
    status = _refused(core.replace_namespaced_persistent_volume_claim, "data", "team", body)
    assert status["message"].startswith(IMMUTABLE)


def test_metadata_changes_stay_allowed(sandbox: RunningSandbox) -> None:
    core = _core(sandbox)
    core.create_namespaced_persistent_volume_claim("team", _claim())
    patched = core.patch_namespaced_persistent_volume_claim(
        "data", "team", {"metadata": {"labels": {"team": "a"}}}
    )
    assert patched.metadata.labels == {"team": "a"}


def test_a_classless_claim_may_get_a_class_once(sandbox: RunningSandbox) -> None:
    # No default class exists, so the claim is stored without one (retroactive default).
    core = _core(sandbox)
    created = core.create_namespaced_persistent_volume_claim(
        "team", _claim(storageClassName=None)
    )
    assert created.spec.storage_class_name is None
    core.patch_namespaced_persistent_volume_claim(
        "data", "team", {"spec": {"storageClassName": "nfs-client"}}
    )
    status = _refused(
        core.patch_namespaced_persistent_volume_claim,
        "data",
        "team",
        {"spec": {"storageClassName": "other"}},
    )
    assert status["message"].startswith(IMMUTABLE)


def _bind(core: client.CoreV1Api, capacity: str) -> None:
    current = core.read_namespaced_persistent_volume_claim("data", "team")
    body = core.api_client.sanitize_for_serialization(current)
    body["spec"]["volumeName"] = "pv-1"
    body["status"] = {"phase": "Bound", "capacity": {"storage": capacity}}
    core.replace_namespaced_persistent_volume_claim("data", "team", body)


def test_bound_claim_may_grow_but_not_shrink_below_capacity(sandbox: RunningSandbox) -> None:
    core = _core(sandbox)
    core.create_namespaced_persistent_volume_claim("team", _claim())
    _bind(core, "1Gi")
    grown = core.patch_namespaced_persistent_volume_claim(
        "data", "team", {"spec": {"resources": {"requests": {"storage": "5Gi"}}}}
    )
    assert grown.spec.resources.requests == {"storage": "5Gi"}
    status = _refused(
        core.patch_namespaced_persistent_volume_claim,
        "data",
        "team",
        {"spec": {"resources": {"requests": {"storage": "512Mi"}}}},
    )
    assert status["message"] == (
        'PersistentVolumeClaim "data" is invalid: spec.resources.requests.storage: Forbidden: '
        "field can not be less than status.capacity"
    )
    # And the class of a bound claim is as immutable as ever
    status = _refused(
        core.patch_namespaced_persistent_volume_claim,
        "data",
        "team",
        {"spec": {"storageClassName": "nfs-client"}},
    )
    assert status["message"].startswith(IMMUTABLE)


def test_kubectl_patch_of_the_class_prints_kubes_refusal(sandbox_factory: Any) -> None:
    running = sandbox_factory(tls=True)
    _core(running).create_namespaced_persistent_volume_claim("team", _claim())
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(running.kubeconfig_path), "-n", "team",
         "patch", "pvc", "data", "-p", '{"spec":{"storageClassName":"nfs-client"}}'],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert IMMUTABLE.rstrip("\n") in result.stderr


def _storage_class(running: RunningSandbox, name: str, *, default: bool) -> None:
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    client.StorageV1Api(running.api_client()).create_storage_class(
        {
            "metadata": {"name": name, "annotations": annotations},
            "provisioner": "csi.vsphere.vmware.com",
        }
    )


def test_default_storage_class_admission(sandbox: RunningSandbox) -> None:
    core = _core(sandbox)
    # Given: two classes marked default, and one not
    _storage_class(sandbox, "zeta-default", default=True)
    _storage_class(sandbox, "alpha-default", default=True)
    _storage_class(sandbox, "plain", default=False)
    # When: claims are created without a class, with a class and with "" (no class)
    classless = core.create_namespaced_persistent_volume_claim(
        "team", _claim("classless", storageClassName=None)
    )
    chosen = core.create_namespaced_persistent_volume_claim(
        "team", _claim("chosen", storageClassName="plain")
    )
    empty = core.create_namespaced_persistent_volume_claim(
        "team", _claim("empty", storageClassName="")
    )
    # Then: only the classless claim gets a default; of several, the newest wins, and in
    # the same second (same creationTimestamp) the first by name, as kube's GetDefaultClass
    created = {
        sc.metadata.name: sc.metadata.creation_timestamp
        for sc in client.StorageV1Api(sandbox.api_client()).list_storage_class().items
    }
    newest = max(created["zeta-default"], created["alpha-default"])
    expected = sorted(n for n in ("zeta-default", "alpha-default") if created[n] == newest)[0]
    assert classless.spec.storage_class_name == expected
    assert chosen.spec.storage_class_name == "plain"
    assert empty.spec.storage_class_name == ""


def test_no_default_class_leaves_the_claim_classless(sandbox: RunningSandbox) -> None:
    _storage_class(sandbox, "plain", default=False)
    created = _core(sandbox).create_namespaced_persistent_volume_claim(
        "team", _claim(storageClassName=None)
    )
    assert created.spec.storage_class_name is None
