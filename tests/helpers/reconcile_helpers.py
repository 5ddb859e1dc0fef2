"""Helpers for the reconciler's integration tests (real client, sandbox API server)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vsphere_kale.kube import Kube
from vsphere_kale.playground.kubeflow import build_profile
from vsphere_kale.reconcile.reconciler import Reconciler
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.settings import Settings

T = TypeVar("T")

# Short leader-election periods so failover fits in a test; the production defaults are
# 15 s / 10 s / 2 s.
LEASE = {"lease_duration": 2, "renew_deadline": 1.5, "retry_period": 0.3}
PSP_ROLE = "psp:vmware-system-privileged"
ENFORCE = "pod-security.kubernetes.io/enforce"


def wait_for(what: str, check: Callable[[], T | None], *, timeout: float = 5.0) -> T:
    """Poll ``check`` until it returns something truthy (tests only; bounded)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _profile(api: client.ApiClient, name: str) -> Any | None:
    try:
        return client.CustomObjectsApi(api).get_cluster_custom_object(
            "kubeflow.org", "v1", "profiles", name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def ensure_profile_crd(api: client.ApiClient) -> str:
    """``profiles.kubeflow.org`` on a real control plane (v1 served and stored, v1beta1
    served), cluster-scoped, once established; a 409 (already there) is fine.

    A minimal schema of our own (the real one is kubeflow/manifests'); enough for the
    reconciler, which reads only names and ``spec.owner``.
    """
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    body = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "profiles.kubeflow.org"},
        "spec": {
            "group": "kubeflow.org",
            "scope": "Cluster",
            "names": {"plural": "profiles", "singular": "profile", "kind": "Profile"},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": version == "v1",
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                }
                for version in ("v1", "v1beta1")
            ],
        },
    }
    crds = client.ApiextensionsV1Api(api)
    try:
        crds.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        crd = crds.read_custom_resource_definition("profiles.kubeflow.org")
        conditions = (crd.status.conditions if crd.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for("profiles.kubeflow.org established", established, timeout=30)
    return "profiles.kubeflow.org"


def owner_reference(profile: Any) -> dict[str, Any]:
    """The controller reference the Kubeflow profile controller puts on its namespace."""
    meta = profile["metadata"]
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def ensure_namespace(api: client.ApiClient, name: str, **labels: str) -> None:
    """Create a namespace; owned by the same-named Profile if there is one (as Kubeflow's)."""
    body: dict[str, Any] = {"metadata": {"name": name, "labels": dict(labels)}}
    profile = _profile(api, name)
    if profile is not None:
        body["metadata"]["ownerReferences"] = [owner_reference(profile)]
    try:
        client.CoreV1Api(api).create_namespace(body)
    except ApiException as exc:
        if exc.status != 409:
            raise


def create_profile(api: client.ApiClient, name: str) -> None:
    """Create a Profile and, like its controller, own the same-named namespace if it exists
    (tests without the Kubeflow emulation; with it, the emulation creates the namespace)."""
    profile = client.CustomObjectsApi(api).create_cluster_custom_object(
        "kubeflow.org", "v1", "profiles", build_profile(name, f"{name}@example.com")
    )
    try:
        client.CoreV1Api(api).patch_namespace(
            name, {"metadata": {"ownerReferences": [owner_reference(profile)]}}
        )
    except ApiException as exc:
        if exc.status != 404:
            raise


def create_profile_namespace(api: client.ApiClient, name: str, labels: dict[str, str]) -> None:
    """A Profile, then its namespace with ``labels``, owned by it with the controller reference
    Kubeflow's profile controller sets (a same-named Profile alone is not enough for the
    reconciler)."""
    profile = client.CustomObjectsApi(api).create_cluster_custom_object(
        "kubeflow.org", "v1", "profiles", build_profile(name, f"{name}@example.com")
    )
    client.CoreV1Api(api).create_namespace(
        {
            "metadata": {
                "name": name,
                "labels": dict(labels),
                "ownerReferences": [owner_reference(profile)],
            }
        }
    )


def read_binding(api: client.ApiClient, ns: str, name: str) -> Any | None:
    try:
        return client.RbacAuthorizationV1Api(api).read_namespaced_role_binding(name, ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def bindings_to_role(api: client.ApiClient, ns: str, role: str = PSP_ROLE) -> list[Any]:
    items = client.RbacAuthorizationV1Api(api).list_namespaced_role_binding(ns).items
    return [b for b in items if b.role_ref.name == role]


def ns_labels(api: client.ApiClient, ns: str) -> dict[str, str]:
    """The namespace's labels ({} while it does not exist yet)."""
    try:
        return dict(client.CoreV1Api(api).read_namespace(ns).metadata.labels or {})
    except ApiException as exc:
        if exc.status == 404:
            return {}
        raise


def events(api: client.ApiClient, ns: str, reason: str | None = None) -> list[Any]:
    items = client.CoreV1Api(api).list_namespaced_event(ns).items
    return [e for e in items if reason is None or e.reason == reason]


def wait_events(api: client.ApiClient, ns: str, reason: str, *, count: int = 1) -> list[Any]:
    """Events are sent by a background thread after the write: wait for them."""
    return wait_for(
        f"{count} {reason} event(s) in {ns}",
        lambda: (found := events(api, ns, reason)) and len(found) >= count and found,
    )


class Reconcilers:
    """Starts reconcilers against a sandbox and stops every one at teardown."""

    def __init__(self) -> None:
        self.started: list[Reconciler] = []

    def start(
        self,
        running: RunningSandbox,
        *,
        settings: Settings | None = None,
        identity: str = "replica-a",
        token: str | None = None,
        wait_leader: bool = True,
        **kwargs: Any,
    ) -> Reconciler:
        api = Kube(running.api_client(token))
        ensure_namespace(running.api_client(), (settings or Settings()).namespace)
        options: dict[str, Any] = {
            **LEASE,
            "resync_seconds": 60,
            "backoff_base": 0.05,
            "backoff_max": 1.0,
            **kwargs,
        }
        reconciler = Reconciler(api, settings or Settings(), identity=identity, **options)
        self.started.append(reconciler)
        reconciler.start()
        assert reconciler.wait_for_sync(10), "informers did not sync"
        if wait_leader:
            wait_for("leadership", reconciler.is_leader, timeout=10)
        return reconciler

    def stop_all(self) -> None:
        for reconciler in reversed(self.started):
            reconciler.stop(timeout=10)


@contextmanager
def reconcilers() -> Iterator[Reconcilers]:
    group = Reconcilers()
    try:
        yield group
    finally:
        group.stop_all()


def token_without_bind(admin: client.ApiClient) -> str:
    """A token for service account vsphere-kale/vsphere-kale holding everything the reconciler
    needs except ``bind`` on the PSP ClusterRole (so RBAC's escalation check refuses)."""
    core = client.CoreV1Api(admin)
    rbac = client.RbacAuthorizationV1Api(admin)
    ensure_namespace(admin, "vsphere-kale")
    core.create_namespaced_service_account("vsphere-kale", {"metadata": {"name": "vsphere-kale"}})
    rule = client.V1PolicyRule
    rbac.create_cluster_role(
        {
            "metadata": {"name": "vsphere-kale-test"},
            "rules": [
                rule(
                    api_groups=[""],
                    resources=["namespaces"],
                    verbs=["get", "list", "watch", "patch"],
                ),
                rule(api_groups=[""], resources=["events"], verbs=["create"]),
                rule(
                    api_groups=["kubeflow.org"],
                    resources=["profiles"],
                    verbs=["get", "list", "watch"],
                ),
                rule(
                    api_groups=["rbac.authorization.k8s.io"],
                    resources=["rolebindings"],
                    verbs=["get", "list", "watch", "create", "patch", "delete"],
                ),
                rule(
                    api_groups=["coordination.k8s.io"],
                    resources=["leases"],
                    verbs=["get", "create", "update"],
                ),
            ],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": "vsphere-kale-test"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "vsphere-kale-test",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "vsphere-kale", "namespace": "vsphere-kale"}
            ],
        }
    )
    token: str = core.create_namespaced_service_account_token(
        "vsphere-kale", "vsphere-kale", {"spec": {"audiences": []}}
    ).status.token
    return token


def writes_counted(reconciler: Reconciler) -> float:
    """The writes this replica's ``vsphere_kale_podsecurity_writes_total`` counted, over every
    verb and resource: what /metrics shows an operator."""
    return sum(
        sample.value
        for metric in reconciler.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == "vsphere_kale_podsecurity_writes_total"
    )
