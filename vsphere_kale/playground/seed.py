"""Seed data for the playground: ``empty`` and ``kubeflow-demo`` (Kubeflow on a TKG cluster).

One implementation, two ways in: :func:`apply_seed` writes through any ``ObjectWriter`` —
the embedded sandbox's store before it serves (``build_sandbox(seed=...)``: no HTTP, a few
milliseconds) or :class:`~vsphere_kale.playground.objects.ApiObjects` on any API server
(:func:`apply_seed_through_api`, which registers the Profile CRD first where needed).

``kubeflow-demo`` is the picture vsphere-kale is built for, as an admin would find it:

- StorageClasses ``vsan-default-storage-policy`` (vSphere CSI, block only, the default) and
  ``nfs-client`` (the NFS subdir external provisioner an admin added for RWX);
- namespaces ``default``, ``kube-system``, ``kube-public``, ``kube-node-lease``, ``kubeflow``;
- Kubernetes' own aggregated roles (``admin``/``edit``/``view`` and their
  ``system:aggregate-to-*`` parts, trimmed to the resources the sandbox serves),
  ``cluster-admin`` bound to ``system:masters``;
- Kubeflow's ClusterRoles ``kubeflow-admin``/``-edit``/``-view`` with its aggregation labels
  (``rbac.authorization.kubeflow.org/aggregate-to-kubeflow-*``), the
  ``kubeflow-kubernetes-*`` roles that pull in Kubernetes' ``admin``/``edit``/``view``
  rules, and notebook/pipeline component roles, as in kubeflow/manifests;
- Profiles ``alice`` and ``bob`` with their namespaces, service accounts and role bindings,
  exactly as :mod:`vsphere_kale.playground.kubeflow` makes them, plus a contributor binding
  (KFAM's naming) giving ``viewer@example.com`` ``kubeflow-view`` in ``alice``;
- in ``alice``, the Kale marshal volume ``wf-1-kale-marshal-pvc`` (ReadWriteMany on the
  block class, Pending, created before any webhook) and the vSphere CSI ``ProvisioningFailed``
  Warning event a TKG guest cluster records for it;
  (a real cluster's event recorder has counted 12 attempts; the storage provisioner of
  :mod:`vsphere_kale.playground.storage` counts on from there);
- in ``alice`` too, a Kale 2 notebook's RWO claim ``raw-data`` and a notebook StatefulSet whose
  pod Pod Security refused (istio-init), with its ``FailedCreate`` Event (:mod:`.seed_kale`);
- flavor ``psp`` only: the PodSecurityPolicies ``vmware-system-privileged`` and
  ``vmware-system-restricted`` and their ``psp:*`` ClusterRoles (``use`` on one PSP each).

Users for the kubeconfig (:data:`USERS`) have fixed, well-known tokens: this is a local
playground, never a cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from vsphere_kale.errors import KubeConflict
from vsphere_kale.kube import Kube
from vsphere_kale.playground.crd import apply_profile_crd
from vsphere_kale.playground.kubeflow import build_profile, reconcile_profile
from vsphere_kale.playground.objects import VERSIONS, ApiObjects
from vsphere_kale.playground.seed_kale import (
    STATEFUL_SETS,
    failed_create_event,
    notebook_statefulset,
    raw_data_pvc,
)
from vsphere_kale.sandbox.types import JSONObject, ObjectWriter, ResourceRef, SeedUser

log = logging.getLogger(__name__)

SEEDS = ("empty", "kubeflow-demo")

RBAC = "rbac.authorization.k8s.io"
NAMESPACES = ResourceRef("", "namespaces")
STORAGE_CLASSES = ResourceRef("storage.k8s.io", "storageclasses")
CLUSTER_ROLES = ResourceRef(RBAC, "clusterroles")
CLUSTER_ROLE_BINDINGS = ResourceRef(RBAC, "clusterrolebindings")
ROLE_BINDINGS = ResourceRef(RBAC, "rolebindings")
PROFILES = ResourceRef("kubeflow.org", "profiles")
PVCS = ResourceRef("", "persistentvolumeclaims")
EVENTS = ResourceRef("", "events")
PSPS = ResourceRef("policy", "podsecuritypolicies")

BLOCK_CLASS = "vsan-default-storage-policy"
NFS_CLASS = "nfs-client"
VSPHERE_CSI = "csi.vsphere.vmware.com"
#: The provisioner name the nfs-subdir-external-provisioner Helm chart registers by default.
NFS_PROVISIONER = "cluster.local/nfs-subdir-external-provisioner"
MARSHAL_PVC = "wf-1-kale-marshal-pvc"
#: What pvCSI on a TKG guest cluster answers for a ReadWriteMany claim when the Supervisor
#: has no vSAN File Services (kubernetes-sigs/vsphere-csi-driver, wcpguest validation).
PROVISIONING_FAILED = (
    f'failed to provision volume with StorageClass "{BLOCK_CLASS}": rpc error: '
    "code = InvalidArgument desc = File volume not supported."
)
CSI_EVENT_SOURCE = (
    "csi.vsphere.vmware.com_vsphere-csi-controller-6d8f7b9c5-x2mfq_"
    "0b5c2f1e-8d1e-4a3b-9c0f-3f4e5d6c7b8a"
)

#: kubeconfig user -> (token, username, groups). Sandbox-only tokens, documented on purpose.
USERS: Mapping[str, SeedUser] = {
    "alice": SeedUser("sandbox-token-alice", "alice@example.com"),
    "bob": SeedUser("sandbox-token-bob", "bob@example.com"),
    "viewer": SeedUser("sandbox-token-viewer", "viewer@example.com"),
}

_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> JSONObject:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def _cluster_role(
    name: str,
    rules: list[JSONObject],
    *,
    labels: Mapping[str, str] | None = None,
    aggregate: str | None = None,
) -> JSONObject:
    meta: JSONObject = {"name": name}
    if labels:
        meta["labels"] = dict(labels)
    role: JSONObject = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": meta,
        "rules": rules,
    }
    if aggregate:
        # The aggregation controller would fill ``rules``; the sandbox's RBAC evaluates the
        # selectors at request time instead, so stored rules stay empty as in the manifests.
        role["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {aggregate: "true"}}]}
    return role


def _k8s(label: str) -> dict[str, str]:
    return {f"rbac.authorization.k8s.io/aggregate-to-{label}": "true"}


def _kf(label: str) -> dict[str, str]:
    return {f"rbac.authorization.kubeflow.org/aggregate-to-{label}": "true"}


def kubernetes_cluster_roles() -> list[JSONObject]:
    """cluster-admin and the aggregated admin/edit/view roles of kube's bootstrap policy."""
    view_rules = [
        _rule(
            [""],
            [
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "serviceaccounts",
                "services",
                "services/status",
            ],
            _READ,
        ),
        _rule(
            [""],
            ["events", "limitranges", "namespaces/status", "pods/log", "pods/status"],
            _READ,
        ),
        _rule([""], ["namespaces"], _READ),
        _rule(
            ["apps"],
            ["deployments", "deployments/scale", "deployments/status", "statefulsets"],
            _READ,
        ),
        _rule(["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"], _READ),
        _rule(["networking.k8s.io"], ["networkpolicies"], _READ),
    ]
    edit_rules = [
        _rule([""], ["pods/attach", "pods/exec", "pods/portforward", "secrets"], _READ),
        _rule([""], ["serviceaccounts"], ["impersonate"]),
        _rule([""], ["pods", "pods/attach", "pods/exec", "pods/portforward"], _WRITE),
        _rule(
            [""],
            [
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "secrets",
                "serviceaccounts",
                "services",
            ],
            _WRITE,
        ),
        _rule([""], ["serviceaccounts/token"], ["create"]),
        _rule(["apps"], ["deployments", "deployments/scale", "statefulsets"], _WRITE),
        _rule(["policy"], ["poddisruptionbudgets"], _WRITE),
        _rule(["networking.k8s.io"], ["networkpolicies"], _WRITE),
    ]
    admin_rules = [
        _rule(["authorization.k8s.io"], ["localsubjectaccessreviews"], ["create"]),
        _rule([RBAC], ["rolebindings", "roles"], [*_WRITE, "get", "list", "watch"]),
    ]
    return [
        # Kubernetes' own superuser role; its wildcards are the cluster's, never ours.
        _cluster_role(
            "cluster-admin",
            [_rule(["*"], ["*"], ["*"]), {"nonResourceURLs": ["*"], "verbs": ["*"]}],
        ),
        _cluster_role("admin", [], aggregate="rbac.authorization.k8s.io/aggregate-to-admin"),
        _cluster_role(
            "edit",
            [],
            labels=_k8s("admin"),
            aggregate="rbac.authorization.k8s.io/aggregate-to-edit",
        ),
        _cluster_role(
            "view",
            [],
            labels=_k8s("edit"),
            aggregate="rbac.authorization.k8s.io/aggregate-to-view",
        ),
        _cluster_role("system:aggregate-to-admin", admin_rules, labels=_k8s("admin")),
        _cluster_role("system:aggregate-to-edit", edit_rules, labels=_k8s("edit")),
        _cluster_role("system:aggregate-to-view", view_rules, labels=_k8s("view")),
    ]


def kubeflow_cluster_roles() -> list[JSONObject]:
    """Kubeflow's user-facing roles (kubeflow/manifests common/kubeflow-roles and apps)."""
    kf = "rbac.authorization.kubeflow.org/aggregate-to-kubeflow-"
    notebooks = ["notebooks", "notebooks/status", "poddefaults"]
    pipelines = ["pipelines", "pipelines/versions", "experiments", "runs", "jobs", "viewers"]
    return [
        _cluster_role("kubeflow-admin", [], labels=_kf("kubeflow-admin"), aggregate=kf + "admin"),
        _cluster_role("kubeflow-edit", [], labels=_kf("kubeflow-admin"), aggregate=kf + "edit"),
        _cluster_role("kubeflow-view", [], labels=_kf("kubeflow-edit"), aggregate=kf + "view"),
        _cluster_role(
            "kubeflow-kubernetes-admin",
            [],
            labels=_kf("kubeflow-admin"),
            aggregate="rbac.authorization.k8s.io/aggregate-to-admin",
        ),
        _cluster_role(
            "kubeflow-kubernetes-edit",
            [],
            labels=_kf("kubeflow-edit"),
            aggregate="rbac.authorization.k8s.io/aggregate-to-edit",
        ),
        _cluster_role(
            "kubeflow-kubernetes-view",
            [],
            labels=_kf("kubeflow-view"),
            aggregate="rbac.authorization.k8s.io/aggregate-to-view",
        ),
        _cluster_role(
            "kubeflow-notebooks-edit",
            [_rule(["kubeflow.org"], notebooks, [*_READ, *_WRITE])],
            labels=_kf("kubeflow-edit"),
        ),
        _cluster_role(
            "kubeflow-notebooks-view",
            [_rule(["kubeflow.org"], notebooks, _READ)],
            labels=_kf("kubeflow-view"),
        ),
        _cluster_role(
            "kubeflow-pipelines-edit",
            [
                _rule(["pipelines.kubeflow.org"], pipelines, [*_READ, *_WRITE]),
                _rule(["argoproj.io"], ["workflows"], [*_READ, *_WRITE]),
            ],
            labels=_kf("kubeflow-edit"),
        ),
        _cluster_role(
            "kubeflow-pipelines-view",
            [
                _rule(["pipelines.kubeflow.org"], pipelines, _READ),
                _rule(["argoproj.io"], ["workflows"], _READ),
            ],
            labels=_kf("kubeflow-view"),
        ),
    ]


def psp_objects() -> list[tuple[ResourceRef, JSONObject]]:
    """TKG's two PodSecurityPolicies and the ClusterRoles granting ``use`` of each."""
    run_as_any = {"rule": "RunAsAny"}
    privileged = {
        "apiVersion": "policy/v1beta1",
        "kind": "PodSecurityPolicy",
        "metadata": {"name": "vmware-system-privileged"},
        "spec": {
            "privileged": True,
            "allowPrivilegeEscalation": True,
            "allowedCapabilities": ["*"],
            "volumes": ["*"],
            "hostNetwork": True,
            "hostPorts": [{"min": 0, "max": 65535}],
            "hostIPC": True,
            "hostPID": True,
            "runAsUser": run_as_any,
            "seLinux": run_as_any,
            "supplementalGroups": run_as_any,
            "fsGroup": run_as_any,
        },
    }
    ids = {"rule": "MustRunAs", "ranges": [{"min": 1, "max": 65535}]}
    restricted = {
        "apiVersion": "policy/v1beta1",
        "kind": "PodSecurityPolicy",
        "metadata": {"name": "vmware-system-restricted"},
        "spec": {
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "requiredDropCapabilities": ["ALL"],
            "volumes": [
                "configMap",
                "emptyDir",
                "projected",
                "secret",
                "downwardAPI",
                "persistentVolumeClaim",
            ],
            "hostNetwork": False,
            "hostIPC": False,
            "hostPID": False,
            "runAsUser": {"rule": "MustRunAsNonRoot"},
            "seLinux": run_as_any,
            "supplementalGroups": ids,
            "fsGroup": ids,
            "readOnlyRootFilesystem": False,
        },
    }
    roles = [
        _cluster_role(
            f"psp:{name}",
            [
                {
                    "apiGroups": ["policy"],
                    "resources": ["podsecuritypolicies"],
                    "resourceNames": [name],
                    "verbs": ["use"],
                }
            ],
        )
        for name in ("vmware-system-privileged", "vmware-system-restricted")
    ]
    return [(PSPS, privileged), (PSPS, restricted)] + [(CLUSTER_ROLES, r) for r in roles]


def storage_classes() -> list[JSONObject]:
    return [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": BLOCK_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": VSPHERE_CSI,
            "parameters": {"svStorageClass": BLOCK_CLASS},
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": True,
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": NFS_CLASS,
                "labels": {"app": "nfs-subdir-external-provisioner"},
            },
            "provisioner": NFS_PROVISIONER,
            "parameters": {"archiveOnDelete": "true"},
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": True,
        },
    ]


def marshal_pvc() -> JSONObject:
    """The Kale marshal volume a KFP VolumeOp created before any webhook was installed."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": MARSHAL_PVC,
            "namespace": "alice",
            "annotations": {
                # Set by the PV controller on claims waiting for an external provisioner.
                "volume.beta.kubernetes.io/storage-provisioner": VSPHERE_CSI,
                "volume.kubernetes.io/storage-provisioner": VSPHERE_CSI,
            },
            "finalizers": ["kubernetes.io/pvc-protection"],
        },
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": BLOCK_CLASS,
            "volumeMode": "Filesystem",
        },
        "status": {"phase": "Pending"},
    }


def provisioning_failed_event(pvc: Mapping[str, Any]) -> JSONObject:
    meta = pvc.get("metadata") or {}
    when = str(meta.get("creationTimestamp") or "")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{MARSHAL_PVC}.17f3a9c2d4b1e0a7", "namespace": "alice"},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "name": MARSHAL_PVC,
            "namespace": "alice",
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": "ProvisioningFailed",
        "message": PROVISIONING_FAILED,
        "type": "Warning",
        "source": {"component": CSI_EVENT_SOURCE},
        "reportingComponent": CSI_EVENT_SOURCE,
        "count": 12,
        "firstTimestamp": when,
        "lastTimestamp": when,
    }


def viewer_binding() -> JSONObject:
    """A contributor binding as KFAM names it: user-<email with @ and . as ->-clusterrole-view."""
    user = USERS["viewer"].username
    name = "user-" + user.replace("@", "-").replace(".", "-") + "-clusterrole-view"
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": name,
            "namespace": "alice",
            "annotations": {"role": "view", "user": user},
        },
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "kubeflow-view"},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": user}],
    }


_KINDS = {
    NAMESPACES: "Namespace",
    STORAGE_CLASSES: "StorageClass",
    CLUSTER_ROLES: "ClusterRole",
    CLUSTER_ROLE_BINDINGS: "ClusterRoleBinding",
    ROLE_BINDINGS: "RoleBinding",
    PROFILES: "Profile",
    PVCS: "PersistentVolumeClaim",
    EVENTS: "Event",
    PSPS: "PodSecurityPolicy",
    STATEFUL_SETS: "StatefulSet",
}


def _create(writer: ObjectWriter, ref: ResourceRef, obj: JSONObject) -> JSONObject | None:
    namespace = (obj.get("metadata") or {}).get("namespace")
    version = VERSIONS[ref]
    obj.setdefault("apiVersion", f"{ref.group}/{version}" if ref.group else version)
    obj.setdefault("kind", _KINDS[ref])
    try:
        return writer.create_object(ref, namespace, obj)
    except KubeConflict:
        # Seeding twice (or on top of an emulated controller) is harmless.
        return writer.get_object(ref, namespace, obj["metadata"]["name"])


def apply_seed(writer: ObjectWriter, name: str, *, flavor: str) -> None:
    """Store the objects of seed ``name`` (synchronously; idempotent)."""
    if name not in SEEDS:
        raise ValueError(f"unknown seed {name!r}; choose one of {', '.join(SEEDS)}")
    if name == "empty":
        return
    for namespace in ("default", "kube-system", "kube-public", "kube-node-lease"):
        _create(writer, NAMESPACES, {"metadata": {"name": namespace}})
    for storage_class in storage_classes():
        _create(writer, STORAGE_CLASSES, storage_class)
    _create(
        writer,
        NAMESPACES,
        {
            "metadata": {
                "name": "kubeflow",
                "labels": {"control-plane": "kubeflow", "istio-injection": "enabled"},
            }
        },
    )
    for role in kubernetes_cluster_roles() + kubeflow_cluster_roles():
        _create(writer, CLUSTER_ROLES, role)
    _create(
        writer,
        CLUSTER_ROLE_BINDINGS,
        {
            "metadata": {"name": "cluster-admin"},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": RBAC, "kind": "Group", "name": "system:masters"}],
        },
    )
    if flavor == "psp":
        for ref, obj in psp_objects():
            _create(writer, ref, obj)
    for user in ("alice", "bob"):
        profile = _create(writer, PROFILES, build_profile(user, USERS[user].username))
        if profile is not None:
            reconcile_profile(writer, profile)
    _create(writer, ROLE_BINDINGS, viewer_binding())
    pvc = _create(writer, PVCS, marshal_pvc())
    if pvc is not None:
        _create(writer, EVENTS, provisioning_failed_event(pvc))
    _create(writer, PVCS, raw_data_pvc())
    notebook = _create(writer, STATEFUL_SETS, notebook_statefulset())
    if notebook is not None:
        _create(writer, EVENTS, failed_create_event(notebook))
    log.info("seeded %s (%s flavor)", name, flavor)


def apply_seed_through_api(api: Kube, name: str, *, flavor: str) -> None:
    """:func:`apply_seed` over the API, on either control plane (Profile CRD first)."""
    objects = ApiObjects(api)
    if name != "empty":
        apply_profile_crd(objects)
    apply_seed(objects, name, flavor=flavor)
