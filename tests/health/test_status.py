"""collect_status against the sandbox API server with the real kubernetes client."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from vsphere_kale.errors import KubeNotFound, KubeUnavailable
from vsphere_kale.health.status import collect_status
from vsphere_kale.install.certs import build_ca
from vsphere_kale.kube import Kube
from vsphere_kale.playground import seed
from vsphere_kale.policy import podsecurity
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.sandbox.types import ResourceRef
from vsphere_kale.settings import PodSecuritySettings, Settings, StorageSettings

SETTINGS = Settings(storage=StorageSettings(rwx_storage_class="nfs-client"))
BLOCK = "vsan-default-storage-policy"
MARSHAL = "wf-1-kale-marshal-pvc"
FAILURE = (
    'failed to provision volume with StorageClass "vsan-default-storage-policy": '
    "rpc error: code = Internal desc = ReadWriteMany is not supported for block volumes"
)


def sandbox_requests(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Requests the sandbox API server answered, from its own access log (one DEBUG record
    per request: status, "METHOD /path (client)", duration)."""
    return [
        str(record.args[1])
        for record in caplog.records
        if record.name == "vsphere_kale.sandbox.server"
        and isinstance(record.args, tuple)
        and len(record.args) == 3
        and str(record.args[1]).split(" ", 1)[0] in ("GET", "POST", "PUT", "PATCH", "DELETE")
    ]


def seed_cluster(api: client.ApiClient, *, profile: bool = True, webhook: bool = True) -> None:
    """alice: a Profile, a stuck Kale marshal PVC with its ProvisioningFailed Event."""
    core = client.CoreV1Api(api)
    storage = client.StorageV1Api(api)
    core.create_namespace({"metadata": {"name": "alice"}})
    storage.create_storage_class(
        {
            "metadata": {
                "name": BLOCK,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "csi.vsphere.vmware.com",
        }
    )
    storage.create_storage_class(
        {"metadata": {"name": "nfs-client"}, "provisioner": "nfs-subdir-external-provisioner"}
    )
    if profile:
        created = client.CustomObjectsApi(api).create_cluster_custom_object(
            "kubeflow.org",
            "v1",
            "profiles",
            {
                "apiVersion": "kubeflow.org/v1",
                "kind": "Profile",
                "metadata": {"name": "alice"},
                "spec": {"owner": {"kind": "User", "name": "alice@example.com"}},
            },
        )
        # Owned by its Profile, as the profile controller leaves it (ownership decides).
        owner = {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Profile",
            "name": "alice",
            "uid": created["metadata"]["uid"],
            "controller": True,
        }
        core.patch_namespace("alice", {"metadata": {"ownerReferences": [owner]}})
    # The claim predates the webhook configuration, as on a cluster installed late.
    claim = core.create_namespaced_persistent_volume_claim(
        "alice",
        {
            "metadata": {"name": MARSHAL},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": BLOCK,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    for i, message in enumerate(["an older failure", FAILURE]):
        core.create_namespaced_event(
            "alice",
            {
                "metadata": {"name": f"{MARSHAL}.{i}"},
                "involvedObject": {
                    "kind": "PersistentVolumeClaim",
                    "namespace": "alice",
                    "name": MARSHAL,
                    "uid": claim.metadata.uid,
                },
                "reason": "ProvisioningFailed",
                "type": "Warning",
                "message": message,
                "lastTimestamp": f"2026-11-25T19:0{i}:00Z",
            },
        )
    if webhook:
        ca, _ = build_ca("test", days=365)
        client.AdmissionregistrationV1Api(api).create_mutating_webhook_configuration(
            {
                "metadata": {"name": "vsphere-kale"},
                "webhooks": [
                    {
                        "name": "pvc.vsphere-kale.io",
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "None",
                        "failurePolicy": "Ignore",
                        "clientConfig": {
                            "url": "https://127.0.0.1:1/mutate",
                            "caBundle": base64.b64encode(ca).decode(),
                        },
                        "rules": [
                            {
                                "operations": ["CREATE"],
                                "apiGroups": [""],
                                "apiVersions": ["v1"],
                                "resources": ["persistentvolumeclaims"],
                            }
                        ],
                    }
                ],
            }
        )


def marshal_row(doc: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in doc["pvcs"] if p["name"] == MARSHAL)


def test_stuck_marshal_pvc_and_missing_binding(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    running = sandbox_factory(flavor="psp")
    api = running.api_client()
    seed_cluster(api)

    doc = collect_status(
        Kube(api), "alice", settings=SETTINGS, mode=None, can_reconcile=True, source="admin-api"
    )

    row = marshal_row(doc)
    assert row["verdict"] == "rwx-on-block-class"
    assert row["kaleMarshal"] is True
    assert row["storageClass"] == BLOCK
    assert FAILURE in row["message"]
    assert "an older failure" not in row["message"]
    assert "the Kale pipeline's marshal volume" in row["message"]
    assert row["hint"].startswith("Delete the claim and re-run the pipeline")
    assert doc["podSecurity"]["mode"] == "psp"
    assert doc["podSecurity"]["verdict"] == "missing"
    assert doc["podSecurity"]["hint"] == "Run Reconcile"
    assert doc["webhook"]["verdict"] == "ok"
    assert doc["webhook"]["rwxClassExists"] is True
    assert doc["overall"] == "broken"
    assert doc["source"] == "admin-api"


def test_binding_in_place_makes_pod_security_ok(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    running = sandbox_factory(flavor="psp")
    api = running.api_client()
    seed_cluster(api)
    desired = podsecurity.build_desired("alice", mode="psp", settings=PodSecuritySettings())
    assert desired.binding is not None
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        "alice", podsecurity.build_role_binding("alice", desired.binding)
    )
    client.CoreV1Api(api).delete_namespaced_persistent_volume_claim(MARSHAL, "alice")

    doc = collect_status(
        Kube(api), "alice", settings=SETTINGS, mode="psp", can_reconcile=False, source="local"
    )

    assert doc["podSecurity"]["verdict"] == "ok"
    assert doc["podSecurity"]["present"] is True
    assert doc["pvcs"] == []
    assert doc["overall"] == "healthy", doc["problems"]


def test_psa_labels_missing_then_present(sandbox_factory: Callable[..., RunningSandbox]) -> None:
    running = sandbox_factory(flavor="psa")
    api = running.api_client()
    seed_cluster(api)

    before = collect_status(
        Kube(api), "alice", settings=SETTINGS, mode=None, can_reconcile=False, source="local"
    )
    labels = podsecurity.build_desired("alice", mode="psa", settings=PodSecuritySettings()).labels
    client.CoreV1Api(api).patch_namespace("alice", {"metadata": {"labels": dict(labels)}})
    after = collect_status(
        Kube(api), "alice", settings=SETTINGS, mode=None, can_reconcile=False, source="local"
    )

    assert before["podSecurity"]["mode"] == "psa"
    assert before["podSecurity"]["verdict"] == "missing"
    assert before["podSecurity"]["hint"] == "Ask an admin to run Reconcile for namespace alice"
    assert "pod-security.kubernetes.io/enforce=baseline" in before["podSecurity"]["required"]
    assert after["podSecurity"]["verdict"] == "ok"


def test_webhook_missing_changes_the_fix_hint(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    running = sandbox_factory(flavor="psp")
    api = running.api_client()
    seed_cluster(api, webhook=False)

    doc = collect_status(
        Kube(api), "alice", settings=SETTINGS, mode="psp", can_reconcile=True, source="admin-api"
    )

    assert doc["webhook"]["verdict"] == "missing"
    assert marshal_row(doc)["hint"] == (
        "Ask an admin to install vsphere-kale: the webhook configuration is missing"
    )


@pytest.mark.parametrize(
    ("mode", "claims", "expected"),
    [
        # pvcs, events, storageclasses, webhook config, namespace, profile, rolebindings,
        # and the running pods (the stuck marshal claim could be recreated unless one uses it)
        ("psp", 1, 8),
        ("psp", 120, 8),
        # psa: no rolebindings; the FailedCreate Events (the level pods need; Istio CNI only
        # where the namespace asks for injection, which alice here does not)
        ("psa", 120, 8),
        # mode not given and configured "auto": discovery, cached by the client
        (None, 1, 8),
    ],
)
def test_one_request_per_resource_type(
    sandbox_factory: Callable[..., RunningSandbox],
    mode: str | None,
    claims: int,
    expected: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = sandbox_factory(flavor="psa")
    api = running.api_client()
    seed_cluster(api)
    # Bulk data straight into the store (the in-process writer seeds use): the point here
    # is the status call's requests, not 120 admission round trips.
    for i in range(claims - 1):
        running.sandbox.store.create_object(
            ResourceRef("", "persistentvolumeclaims"),
            "alice",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": f"data-{i}", "namespace": "alice"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
    reader = Kube(running.api_client())
    # Discovery (which Profile version, PSP served) is read on a client's first status and
    # cached: count the requests of every status after that.
    collect_status(
        reader, "alice", settings=SETTINGS, mode=mode, can_reconcile=False, source="local"
    )
    caplog.set_level(logging.DEBUG, logger="vsphere_kale.sandbox.server")
    caplog.clear()

    doc = collect_status(
        reader, "alice", settings=SETTINGS, mode=mode, can_reconcile=False, source="local"
    )

    # The sandbox logs each request before its answer leaves (ApiHandler.finish), so once
    # collect_status has every answer, every request it made is in the log: count them now.
    requests = sandbox_requests(caplog)
    assert len(doc["pvcs"]) == claims
    assert len(requests) == expected, requests
    assert all(r.startswith("GET ") for r in requests)
    assert sum("/persistentvolumeclaims" in r for r in requests) == 1


def pod_mounting(name: str, claim: str, *, phase: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "alice"},
        "spec": {
            "containers": [{"name": "main", "image": "busybox"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
        "status": {"phase": phase},
    }


def test_recreate_refusal_says_which_running_pod_mounts_the_stuck_claim(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    # Given the stuck marshal claim, mounted by a finished step pod only
    running = sandbox_factory(flavor="psa")
    seed_cluster(running.api_client())
    store = running.sandbox.store
    pods = ResourceRef("", "pods")
    store.create_object(pods, "alice", pod_mounting("step-1", MARSHAL, phase="Succeeded"))
    reader = Kube(running.api_client())

    def refusal() -> Any:
        doc = collect_status(
            reader, "alice", settings=SETTINGS, mode="psa", can_reconcile=True, source="admin-api"
        )
        return marshal_row(doc)["recreateRefusal"]

    # Then the service would recreate it: a finished pod no longer holds its volume
    assert refusal() is None
    # When a step pod that mounts it is still Pending (scheduled, waiting for the volume)
    store.create_object(pods, "alice", pod_mounting("step-2", MARSHAL, phase="Pending"))
    # Then the row says what the admin API would answer: stop that pod first
    assert refusal() == (
        f"claim alice/{MARSHAL} is mounted by pod step-2: stop the pod first, then recreate "
        "the claim"
    )


@pytest.mark.parametrize(
    ("annotations", "refusal"),
    [
        ({"vsphere-kale.io/rewrite-storage-class": "false"}, "opts out of class rewriting"),
        (None, None),
    ],
)
def test_pods_are_listed_only_when_a_claim_could_be_recreated(
    sandbox_factory: Callable[..., RunningSandbox],
    caplog: pytest.LogCaptureFixture,
    annotations: dict[str, str] | None,
    refusal: str | None,
) -> None:
    running = sandbox_factory(flavor="psa")
    api = running.api_client()
    seed_cluster(api)
    if annotations:
        client.CoreV1Api(api).patch_namespaced_persistent_volume_claim(
            MARSHAL, "alice", {"metadata": {"annotations": annotations}}
        )
    reader = Kube(running.api_client())
    caplog.set_level(logging.DEBUG, logger="vsphere_kale.sandbox.server")
    caplog.clear()

    doc = collect_status(
        reader, "alice", settings=SETTINGS, mode="psa", can_reconcile=True, source="admin-api"
    )

    listed_pods = any("/pods" in r for r in sandbox_requests(caplog))
    found = marshal_row(doc)["recreateRefusal"]
    if refusal is None:
        assert found is None and listed_pods
    else:
        # An opted-out claim is refused whatever pods there are: no pod list is sent
        assert refusal in found and not listed_pods


def test_forbidden_components_are_unknown_not_failures(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    # Given a notebook-like service account that may read claims and events in alice only
    running = sandbox_factory(flavor="psp", authorization=True)
    admin = running.api_client()
    seed_cluster(admin)
    core = client.CoreV1Api(admin)
    rbac = client.RbacAuthorizationV1Api(admin)
    core.create_namespaced_service_account("alice", {"metadata": {"name": "default-editor"}})
    rbac.create_namespaced_role(
        "alice",
        {
            "metadata": {"name": "claims-reader"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["persistentvolumeclaims", "events"],
                    "verbs": ["get", "list"],
                }
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        "alice",
        {
            "metadata": {"name": "claims-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "claims-reader",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "default-editor", "namespace": "alice"}
            ],
        },
    )
    token = core.create_namespaced_service_account_token(
        "default-editor", "alice", {"spec": {"expirationSeconds": 3600}}
    ).status.token
    notebook = running.api_client(token)

    # When the status is collected with the notebook's own credentials
    doc = collect_status(
        Kube(notebook), "alice", settings=SETTINGS, mode="psp", can_reconcile=False, source="local"
    )

    # Then claims are judged; what it may not read is unknown, with the missing permission
    assert marshal_row(doc)["verdict"] == "rwx-on-block-class"
    assert FAILURE in marshal_row(doc)["message"]
    assert doc["webhook"]["verdict"] == "unknown"
    assert "mutatingwebhookconfigurations" in doc["webhook"]["message"]
    assert doc["podSecurity"]["verdict"] == "unknown"
    assert "may not get namespace alice" in doc["podSecurity"]["message"] or (
        "rolebindings" in doc["podSecurity"]["message"]
    )
    assert doc["overall"] == "broken"
    assert {p["severity"] for p in doc["problems"] if p["component"] != "pvc"} == {"info"}


def test_missing_namespace_is_not_found(sandbox_factory: Callable[..., RunningSandbox]) -> None:
    running = sandbox_factory(flavor="psa")

    with pytest.raises(KubeNotFound, match="nobody"):
        collect_status(
            Kube(running.api_client()),
            "nobody",
            settings=SETTINGS,
            mode="psa",
            can_reconcile=False,
            source="local",
        )


def test_api_failure_fails_the_whole_status(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    running = sandbox_factory(flavor="psa")
    api = running.api_client()
    seed_cluster(api)
    running.sandbox.faults.inject(verb="list", resource="persistentvolumeclaims", status=500)

    with pytest.raises(KubeUnavailable, match="list persistentvolumeclaims in namespace alice"):
        collect_status(
            Kube(api), "alice", settings=SETTINGS, mode="psa", can_reconcile=False, source="local"
        )


@pytest.mark.parametrize("flavor", ["psp", "psa"])
def test_kubeflow_demo_seed(sandbox_factory: Callable[..., RunningSandbox], flavor: str) -> None:
    running = sandbox_factory(flavor=flavor, seed="kubeflow-demo")
    api = running.api_client()

    alice = collect_status(
        Kube(api), "alice", settings=SETTINGS, mode=None, can_reconcile=True, source="admin-api"
    )
    bob = collect_status(
        Kube(api), "bob", settings=SETTINGS, mode=None, can_reconcile=True, source="admin-api"
    )

    row = next(p for p in alice["pvcs"] if p["name"] == seed.MARSHAL_PVC)
    assert row["verdict"] == "rwx-on-block-class"
    assert row["severity"] == "error"
    assert row["kaleMarshal"] is True
    assert seed.PROVISIONING_FAILED.rstrip(".") in row["message"]
    assert alice["podSecurity"]["mode"] == flavor
    assert alice["podSecurity"]["managed"] is True
    assert alice["podSecurity"]["verdict"] == "missing"
    # No webhook is installed in the seed: said, with the admin's fix.
    assert alice["webhook"]["verdict"] == "missing"
    assert alice["webhook"]["rwxClassExists"] is True
    assert alice["overall"] == "broken"
    assert bob["pvcs"] == []
    assert bob["podSecurity"]["verdict"] == "missing"
