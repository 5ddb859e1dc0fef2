"""The Kubeflow profile controller (an API client) and the seed data, through the real
kubernetes client and kubectl against the embedded sandbox."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from vsphere_kale.kube import Kube
from vsphere_kale.playground.crd import apply_profile_crd
from vsphere_kale.playground.kubeflow import PROFILE_NAMESPACE_LABELS, ProfileController
from vsphere_kale.playground.objects import ApiObjects
from vsphere_kale.playground.seed import apply_seed_through_api
from vsphere_kale.sandbox.testing import RunningSandbox

Factory = Callable[..., RunningSandbox]
RBAC = "rbac.authorization.k8s.io"


def _profile(name: str, owner: str, version: str = "v1") -> dict[str, Any]:
    return {
        "apiVersion": f"kubeflow.org/{version}",
        "kind": "Profile",
        "metadata": {"name": name},
        "spec": {"owner": {"kind": "User", "name": owner}},
    }


def _custom(running: RunningSandbox) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(running.api_client())


def _controller(running: RunningSandbox) -> ProfileController:
    found = [c for c in running.sandbox.controllers if isinstance(c, ProfileController)]
    assert len(found) == 1
    return found[0]


EXPECTED = {
    "Namespace": 1,
    "ServiceAccount": 2,
    "RoleBinding": 3,
}


def _watch_kinds(
    running: RunningSandbox, namespace: str, seen: list[tuple[str, str, int]]
) -> list[threading.Thread]:
    """Watch namespaces, service accounts and role bindings of ``namespace``; record each
    ADDED as (kind, name, resourceVersion) until the expected count of that kind arrived."""
    core = client.CoreV1Api(running.api_client())
    rbac = client.RbacAuthorizationV1Api(running.api_client())
    lock = threading.Lock()

    def follow(kind: str, list_fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        w = watch.Watch()
        count = 0
        for event in w.stream(list_fn, timeout_seconds=10, **kwargs):
            if event["type"] != "ADDED":
                continue
            obj = event["object"]
            with lock:
                seen.append((kind, obj.metadata.name, int(obj.metadata.resource_version)))
            count += 1
            if count == EXPECTED[kind]:
                w.stop()

    specs = [
        ("Namespace", core.list_namespace, {"field_selector": f"metadata.name={namespace}"}),
        ("ServiceAccount", core.list_namespaced_service_account, {"namespace": namespace}),
        ("RoleBinding", rbac.list_namespaced_role_binding, {"namespace": namespace}),
    ]
    threads = [threading.Thread(target=follow, args=spec) for spec in specs]
    for thread in threads:
        thread.start()
    return threads


def test_profile_gets_namespace_then_service_accounts_then_bindings(
    sandbox_factory: Factory,
) -> None:
    running = sandbox_factory(kubeflow=True)
    seen: list[tuple[str, str, int]] = []
    # Given watches open before the Profile exists (kube, like the sandbox, lets one watch a
    # namespace's objects before the namespace exists)
    open_before = running.sandbox.open_watches
    threads = _watch_kinds(running, "carol", seen)
    deadline = time.monotonic() + 5
    while running.sandbox.open_watches < open_before + len(threads):
        assert time.monotonic() < deadline, "the watches did not open"
        time.sleep(0.02)
    # When a Profile is created
    profile = _custom(running).create_cluster_custom_object(
        "kubeflow.org", "v1", "profiles", _profile("carol", "carol@example.com")
    )
    assert _controller(running).wait_idle(5)
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    # Then the objects appeared in the real controller's order
    assert [(kind, name) for kind, name, _ in sorted(seen, key=lambda e: e[2])] == [
        ("Namespace", "carol"),
        ("ServiceAccount", "default-editor"),
        ("ServiceAccount", "default-viewer"),
        ("RoleBinding", "namespaceAdmin"),
        ("RoleBinding", "default-editor"),
        ("RoleBinding", "default-viewer"),
    ]
    # And they look like the profile controller's
    core = client.CoreV1Api(running.api_client())
    rbac = client.RbacAuthorizationV1Api(running.api_client())
    namespace = core.read_namespace("carol")
    for key, value in PROFILE_NAMESPACE_LABELS.items():
        assert namespace.metadata.labels[key] == value
    assert namespace.metadata.annotations == {"owner": "carol@example.com"}
    owner = namespace.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid) == ("Profile", "carol", profile["metadata"]["uid"])
    admin = rbac.read_namespaced_role_binding("namespaceAdmin", "carol")
    assert admin.role_ref.name == "kubeflow-admin"
    assert admin.metadata.annotations == {"role": "admin", "user": "carol@example.com"}
    assert [(s.kind, s.name) for s in admin.subjects] == [("User", "carol@example.com")]
    editor = rbac.read_namespaced_role_binding("default-editor", "carol")
    assert editor.role_ref.name == "kubeflow-edit"
    assert [(s.kind, s.name, s.namespace) for s in editor.subjects] == [
        ("ServiceAccount", "default-editor", "carol")
    ]
    viewer = rbac.read_namespaced_role_binding("default-viewer", "carol")
    assert viewer.role_ref.name == "kubeflow-view"


def test_profile_controller_is_asynchronous_and_idempotent(sandbox_factory: Factory) -> None:
    running = sandbox_factory(kubeflow=True)
    controller = _controller(running)
    controller.step_delay = 0.1
    custom = _custom(running)
    custom.create_cluster_custom_object(
        "kubeflow.org", "v1", "profiles", _profile("dave", "dave@example.com")
    )
    core = client.CoreV1Api(running.api_client())
    # The create answered before the controller's first step (0.1 s later).
    with pytest.raises(ApiException) as caught:
        core.read_namespace("dave")
    assert caught.value.status == 404
    assert controller.wait_idle(5)
    # A deleted child comes back when the Profile is touched again (a re-reconcile).
    core.delete_namespaced_service_account("default-viewer", "dave")
    controller.step_delay = 0.0
    custom.patch_cluster_custom_object(
        "kubeflow.org", "v1", "profiles", "dave", {"metadata": {"labels": {"touched": "yes"}}}
    )
    assert controller.wait_idle(5)
    assert core.read_namespaced_service_account("default-viewer", "dave")


def test_deleting_a_profile_deletes_its_namespace(sandbox_factory: Factory) -> None:
    running = sandbox_factory(kubeflow=True)
    controller = _controller(running)
    controller.step_delay = 0.0
    custom = _custom(running)
    custom.create_cluster_custom_object(
        "kubeflow.org", "v1beta1", "profiles", _profile("erin", "erin@example.com", "v1beta1")
    )
    assert controller.wait_idle(5)
    custom.delete_cluster_custom_object("kubeflow.org", "v1beta1", "profiles", "erin")
    core = client.CoreV1Api(running.api_client())
    deadline = time.monotonic() + 5
    while True:
        try:
            core.read_namespace("erin")
        except ApiException as exc:
            assert exc.status == 404
            break
        assert time.monotonic() < deadline, "the namespace of a deleted profile stayed"
        time.sleep(0.05)


def test_recreated_profile_waits_for_its_old_namespace(sandbox_factory: Factory) -> None:
    # Given a profile whose namespace is still terminating when the profile comes back
    running = sandbox_factory(kubeflow=True)
    running.sandbox.store.namespace_sweep_delay = 0.3
    controller = _controller(running)
    controller.step_delay = 0.0
    custom = _custom(running)
    custom.create_cluster_custom_object(
        "kubeflow.org", "v1", "profiles", _profile("hana", "hana@example.com")
    )
    assert controller.wait_idle(5)
    custom.delete_cluster_custom_object("kubeflow.org", "v1", "profiles", "hana")
    core = client.CoreV1Api(running.api_client())
    deadline = time.monotonic() + 5
    while not core.read_namespace("hana").metadata.deletion_timestamp:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # When it is created again, the controller retries until it can rebuild everything
    custom.create_cluster_custom_object(
        "kubeflow.org", "v1", "profiles", _profile("hana", "hana-2@example.com")
    )
    deadline = time.monotonic() + 10
    while True:
        namespace = _read(core, "hana")  # one read: the old namespace may vanish any moment
        ready = (
            namespace is not None
            and not namespace.metadata.deletion_timestamp
            and controller.wait_idle(0.1)
        )
        if ready:
            break
        assert time.monotonic() < deadline, "the recreated profile was never reconciled"
        time.sleep(0.05)
    assert namespace is not None
    assert namespace.metadata.annotations["owner"] == "hana-2@example.com"
    assert core.read_namespaced_service_account("default-editor", "hana")


def _read(core: client.CoreV1Api, name: str) -> Any:
    try:
        return core.read_namespace(name)
    except ApiException as exc:
        assert exc.status == 404
        return None


def _exists(core: client.CoreV1Api, name: str) -> bool:
    return _read(core, name) is not None


def test_no_controller_thread_outlives_the_sandbox(sandbox_factory: Factory) -> None:
    # Sandboxes of other tests' longer-lived fixtures may still run: judge only new threads.
    before = set(threading.enumerate())
    running = sandbox_factory(kubeflow=True)
    controller = _controller(running)
    controller.step_delay = 0.0
    _custom(running).create_cluster_custom_object(
        "kubeflow.org", "v1", "profiles", _profile("frank", "frank@example.com")
    )
    assert running.sandbox.wait_idle(5)
    assert controller.running
    running.stop()
    assert not controller.running
    assert not [
        t
        for t in threading.enumerate()
        if t.name.startswith(("sandbox-", "playground-")) and t not in before
    ]


def test_kubeflow_emulation_off_by_flag(sandbox: RunningSandbox) -> None:
    _custom(sandbox).create_cluster_custom_object(
        "kubeflow.org", "v1", "profiles", _profile("gina", "gina@example.com")
    )
    # Every in-process controller has seen the Profile (there is no profile controller).
    assert sandbox.sandbox.wait_idle(5)
    with pytest.raises(ApiException):
        client.CoreV1Api(sandbox.api_client()).read_namespace("gina")


# --- seed data ----------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", ["psp", "psa"])
def test_kubeflow_demo_seed(sandbox_factory: Factory, flavor: str) -> None:
    running = sandbox_factory(flavor=flavor, seed="kubeflow-demo")
    api = running.api_client()
    core = client.CoreV1Api(api)
    classes = {sc.metadata.name: sc for sc in client.StorageV1Api(api).list_storage_class().items}
    assert set(classes) == {"vsan-default-storage-policy", "nfs-client"}
    block = classes["vsan-default-storage-policy"]
    assert block.provisioner == "csi.vsphere.vmware.com"
    assert block.metadata.annotations["storageclass.kubernetes.io/is-default-class"] == "true"
    assert classes["nfs-client"].provisioner.endswith("nfs-subdir-external-provisioner")
    namespaces = {ns.metadata.name: ns for ns in core.list_namespace().items}
    assert {"kubeflow", "alice", "bob", "kube-system", "default"} <= set(namespaces)
    assert namespaces["kubeflow"].metadata.labels["control-plane"] == "kubeflow"
    assert namespaces["alice"].metadata.labels["app.kubernetes.io/part-of"] == "kubeflow-profile"
    profiles = _custom(running).list_cluster_custom_object("kubeflow.org", "v1", "profiles")[
        "items"
    ]
    assert {p["metadata"]["name"]: p["spec"]["owner"]["name"] for p in profiles} == {
        "alice": "alice@example.com",
        "bob": "bob@example.com",
    }
    sas = {sa.metadata.name for sa in core.list_namespaced_service_account("bob").items}
    assert {"default-editor", "default-viewer"} <= sas
    pvc = core.read_namespaced_persistent_volume_claim("wf-1-kale-marshal-pvc", "alice")
    assert pvc.spec.access_modes == ["ReadWriteMany"]
    assert pvc.spec.storage_class_name == "vsan-default-storage-policy"
    assert pvc.spec.resources.requests["storage"] == "1Gi"
    assert pvc.status.phase == "Pending"
    events = core.list_namespaced_event(
        "alice",
        field_selector="involvedObject.name=wf-1-kale-marshal-pvc,reason=ProvisioningFailed",
    ).items
    assert len(events) == 1
    assert events[0].type == "Warning"
    assert events[0].involved_object.uid == pvc.metadata.uid
    assert 'StorageClass "vsan-default-storage-policy"' in events[0].message
    roles = {
        r.metadata.name: r for r in client.RbacAuthorizationV1Api(api).list_cluster_role().items
    }
    for name in ("kubeflow-admin", "kubeflow-edit", "kubeflow-view"):
        assert roles[name].aggregation_rule.cluster_role_selectors
    assert roles["kubeflow-view"].metadata.labels == {
        "rbac.authorization.kubeflow.org/aggregate-to-kubeflow-edit": "true"
    }
    psp_roles = {"psp:vmware-system-privileged", "psp:vmware-system-restricted"}
    if flavor == "psp":
        assert psp_roles <= set(roles)
        privileged = roles["psp:vmware-system-privileged"].rules[0]
        assert (privileged.resource_names, privileged.verbs) == (
            ["vmware-system-privileged"],
            ["use"],
        )
        psps = _custom(running).list_cluster_custom_object(
            "policy", "v1beta1", "podsecuritypolicies"
        )
        assert {p["metadata"]["name"] for p in psps["items"]} == {
            "vmware-system-privileged",
            "vmware-system-restricted",
        }
    else:
        assert not psp_roles & set(roles)


def test_kubectl_shows_the_kubeflow_on_tkg_picture(sandbox_factory: Factory) -> None:
    running = sandbox_factory(
        flavor="psp", seed="kubeflow-demo", kubeflow=True, authorization=True, tls=True
    )
    result = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(running.kubeconfig_path),
            "get",
            "profiles,namespaces,pvc",
            "-A",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    items = {
        (i["kind"], i["metadata"].get("namespace", ""), i["metadata"]["name"])
        for i in json.loads(result.stdout)["items"]
    }
    assert ("Profile", "", "alice") in items
    assert ("Namespace", "", "bob") in items
    assert ("PersistentVolumeClaim", "alice", "wf-1-kale-marshal-pvc") in items
    # The seeded users have their contexts: alice sees her PVC, not bob's namespace content.
    alice = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(running.kubeconfig_path),
            "--context",
            "alice@sandbox",
            "get",
            "pvc",
            "-n",
            "bob",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert alice.returncode == 1
    assert 'User "alice@example.com" cannot list resource "persistentvolumeclaims"' in alice.stderr


def test_seed_through_the_api_gives_the_same_picture(sandbox_factory: Factory) -> None:
    # Given an empty sandbox, seeded the way a real kube-apiserver is: through the API
    running = sandbox_factory(flavor="psa", seed="empty")
    api = Kube(running.api_client())
    apply_seed_through_api(api, "kubeflow-demo", flavor="psa")
    # Then it holds what the store-written seed holds (Profiles served built in: no CRD)
    assert apply_profile_crd(ApiObjects(api)) == "built-in"
    core = client.CoreV1Api(running.api_client())
    assert core.read_namespace("alice").metadata.annotations == {"owner": "alice@example.com"}
    pvc = core.read_namespaced_persistent_volume_claim("wf-1-kale-marshal-pvc", "alice")
    assert (pvc.spec.storage_class_name, pvc.status.phase) == (
        "vsan-default-storage-policy",
        "Pending",
    )
    names = {
        rb.metadata.name
        for rb in client.RbacAuthorizationV1Api(running.api_client())
        .list_namespaced_role_binding("alice")
        .items
    }
    assert {"namespaceAdmin", "default-editor", "default-viewer"} <= names
    # And seeding twice is harmless
    apply_seed_through_api(api, "kubeflow-demo", flavor="psa")
