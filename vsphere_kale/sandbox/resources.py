"""The resource types the sandbox API server serves (the metav1.Status errors it answers are in
:mod:`.statuses`, conversion in :mod:`.conversion`; both re-exported here).

One :class:`ResourceType` per (group, plural). A type may be served under several versions
(``kubeflow.org`` profiles: ``v1`` and ``v1beta1``) and several types may share one storage
(``events`` in ``v1`` and ``events.k8s.io/v1``): :attr:`ResourceType.storage` names the
storage, so an object written through one is read through the other, as in kube-apiserver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vsphere_kale.sandbox.conversion import CORE_EVENTS as CORE_EVENTS
from vsphere_kale.sandbox.conversion import selectable_fields as selectable_fields
from vsphere_kale.sandbox.conversion import to_served as to_served
from vsphere_kale.sandbox.conversion import to_storage as to_storage
from vsphere_kale.sandbox.statuses import StatusError as StatusError
from vsphere_kale.sandbox.statuses import already_exists as already_exists
from vsphere_kale.sandbox.statuses import bad_request as bad_request
from vsphere_kale.sandbox.statuses import conflict as conflict
from vsphere_kale.sandbox.statuses import forbidden as forbidden
from vsphere_kale.sandbox.statuses import invalid as invalid
from vsphere_kale.sandbox.statuses import method_not_allowed as method_not_allowed
from vsphere_kale.sandbox.statuses import namespace_not_found as namespace_not_found
from vsphere_kale.sandbox.statuses import not_found as not_found
from vsphere_kale.sandbox.statuses import server_not_found as server_not_found
from vsphere_kale.sandbox.types import ResourceRef

FLAVORS = ("psp", "psa")

#: gitVersion reported by ``/version``: a TKG 1.24 cluster still runs PodSecurityPolicy,
#: Kubernetes 1.25+ replaced it with Pod Security Admission.
GIT_VERSIONS: Mapping[str, str] = {"psp": "v1.24.17", "psa": "v1.30.4"}

READ_ONLY_VERBS = ("get", "list", "watch")
READ_WRITE_VERBS = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
CREATE_ONLY_VERBS = ("create",)


_RETURN_DELETED_OBJECT = frozenset(
    ResourceRef("", plural)
    for plural in (
        "persistentvolumeclaims",
        "persistentvolumes",
        "pods",
        "services",
        "serviceaccounts",
    )
)


@dataclass(frozen=True)
class ResourceType:
    """One served resource type (what ``APIResourceList`` lists, plus how we store it)."""

    group: str
    versions: tuple[str, ...]
    """Served versions, preferred first. Every version shares one storage."""
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    virtual: bool = False
    """Create-only review resources (TokenReview, SubjectAccessReview): answered, never stored."""
    admitted: bool = True
    """Whether writes go through the admission hook. Events and Leases skip it, as most
    real webhook configurations exclude them (and it keeps leader election cheap)."""
    storage: ResourceRef | None = None
    """Shared storage of another type (events.k8s.io events live with core events)."""
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    read_only: bool = False
    """Served for reads only: pods exist as a type (kubectl describe pvc lists them) but
    the sandbox runs none, so writes are refused with a sentence saying so."""
    custom: bool = False
    """A CustomResourceDefinition's type: kube decodes it unstructured and only its metadata
    into ObjectMeta, so a decoding error names ``ObjectMeta.labels``, not ``metadata.labels``."""

    @property
    def ref(self) -> ResourceRef:
        return ResourceRef(self.group, self.plural)

    @property
    def returns_deleted_object(self) -> bool:
        """kube-apiserver answers DELETE of these with the deleted object, not a Status
        (``ReturnDeletedObject`` in their registries); the typed client decodes it so."""
        return self.ref in _RETURN_DELETED_OBJECT

    @property
    def storage_ref(self) -> ResourceRef:
        return self.storage or self.ref

    @property
    def verbs(self) -> tuple[str, ...]:
        if self.virtual:
            return CREATE_ONLY_VERBS
        return READ_ONLY_VERBS if self.read_only else READ_WRITE_VERBS

    @property
    def qualified(self) -> str:
        """``rolebindings.rbac.authorization.k8s.io``; bare plural for the core group."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version


def _core(
    plural: str,
    singular: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: Iterable[str] = (),
    **kw: Any,
) -> ResourceType:
    return ResourceType(
        "", ("v1",), plural, singular, kind, namespaced, short_names=tuple(short), **kw
    )


def _typ(
    group: str,
    versions: Iterable[str],
    plural: str,
    singular: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: Iterable[str] = (),
    **kw: Any,
) -> ResourceType:
    return ResourceType(
        group, tuple(versions), plural, singular, kind, namespaced, short_names=tuple(short), **kw
    )


def _all_types(flavor: str) -> list[ResourceType]:
    core_events = ResourceRef("", "events")
    types = [
        _core("namespaces", "namespace", "Namespace", namespaced=False, short=("ns",)),
        _core(
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            "PersistentVolumeClaim",
            short=("pvc",),
        ),
        _core(
            "persistentvolumes",
            "persistentvolume",
            "PersistentVolume",
            namespaced=False,
            short=("pv",),
        ),
        _core("events", "event", "Event", short=("ev",), admitted=False),
        _core("pods", "pod", "Pod", short=("po",), categories=("all",), read_only=True),
        _core(
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            short=("sa",),
            subresources=("token",),
        ),
        _core("secrets", "secret", "Secret"),
        _core("configmaps", "configmap", "ConfigMap", short=("cm",)),
        _core("services", "service", "Service", short=("svc",), categories=("all",)),
        _core("endpoints", "endpoints", "Endpoints", short=("ep",)),
        _typ(
            "events.k8s.io",
            ["v1"],
            "events",
            "event",
            "Event",
            short=("ev",),
            admitted=False,
            storage=core_events,
        ),
        _typ(
            "storage.k8s.io",
            ["v1"],
            "storageclasses",
            "storageclass",
            "StorageClass",
            namespaced=False,
            short=("sc",),
        ),
        _typ("rbac.authorization.k8s.io", ["v1"], "roles", "role", "Role"),
        _typ("rbac.authorization.k8s.io", ["v1"], "rolebindings", "rolebinding", "RoleBinding"),
        _typ(
            "rbac.authorization.k8s.io",
            ["v1"],
            "clusterroles",
            "clusterrole",
            "ClusterRole",
            namespaced=False,
        ),
        _typ(
            "rbac.authorization.k8s.io",
            ["v1"],
            "clusterrolebindings",
            "clusterrolebinding",
            "ClusterRoleBinding",
            namespaced=False,
        ),
        _typ("coordination.k8s.io", ["v1"], "leases", "lease", "Lease", admitted=False),
        _typ(
            "admissionregistration.k8s.io",
            ["v1"],
            "mutatingwebhookconfigurations",
            "mutatingwebhookconfiguration",
            "MutatingWebhookConfiguration",
            namespaced=False,
        ),
        _typ(
            "apps",
            ["v1"],
            "deployments",
            "deployment",
            "Deployment",
            short=("deploy",),
            categories=("all",),
        ),
        # Served so Istio CNI's DaemonSet can be looked for and a notebook's StatefulSet can
        # exist; the sandbox runs no workload controller (no pods are made from them).
        _typ(
            "apps",
            ["v1"],
            "daemonsets",
            "daemonset",
            "DaemonSet",
            short=("ds",),
            categories=("all",),
        ),
        _typ(
            "apps",
            ["v1"],
            "statefulsets",
            "statefulset",
            "StatefulSet",
            short=("sts",),
            categories=("all",),
        ),
        _typ(
            "policy",
            ["v1"],
            "poddisruptionbudgets",
            "poddisruptionbudget",
            "PodDisruptionBudget",
            short=("pdb",),
        ),
        _typ(
            "networking.k8s.io",
            ["v1"],
            "networkpolicies",
            "networkpolicy",
            "NetworkPolicy",
            short=("netpol",),
        ),
        _typ(
            "kubeflow.org",
            ["v1", "v1beta1"],
            "profiles",
            "profile",
            "Profile",
            namespaced=False,
            custom=True,
        ),
        _typ(
            "authentication.k8s.io",
            ["v1"],
            "tokenreviews",
            "tokenreview",
            "TokenReview",
            namespaced=False,
            virtual=True,
            admitted=False,
        ),
        _typ(
            "authorization.k8s.io",
            ["v1"],
            "subjectaccessreviews",
            "subjectaccessreview",
            "SubjectAccessReview",
            namespaced=False,
            virtual=True,
            admitted=False,
        ),
        _typ(
            "authorization.k8s.io",
            ["v1"],
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
            "SelfSubjectAccessReview",
            namespaced=False,
            virtual=True,
            admitted=False,
        ),
        _typ(
            "authorization.k8s.io",
            ["v1"],
            "selfsubjectrulesreviews",
            "selfsubjectrulesreview",
            "SelfSubjectRulesReview",
            namespaced=False,
            virtual=True,
            admitted=False,
        ),
        _typ(
            "authentication.k8s.io",
            ["v1"],
            "selfsubjectreviews",
            "selfsubjectreview",
            "SelfSubjectReview",
            namespaced=False,
            virtual=True,
            admitted=False,
        ),
    ]
    if flavor == "psp":
        types.append(
            _typ(
                "policy",
                ["v1beta1"],
                "podsecuritypolicies",
                "podsecuritypolicy",
                "PodSecurityPolicy",
                namespaced=False,
                short=("psp",),
            )
        )
    return types


@dataclass(frozen=True)
class GroupVersion:
    group: str
    version: str

    @property
    def path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


#: Preferred version first, as ``/apis`` reports it.
_VERSION_ORDER = ("v1", "v1beta1", "v1alpha1")


@dataclass
class Registry:
    """Every served type of one flavor, indexed for routing and storage."""

    flavor: str
    types: list[ResourceType] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.flavor not in FLAVORS:
            raise ValueError(f"unknown sandbox flavor {self.flavor!r}; choose one of {FLAVORS}")
        if not self.types:
            self.types = _all_types(self.flavor)
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self._by_ref: dict[ResourceRef, ResourceType] = {}
        for rt in self.types:
            self._by_ref[rt.ref] = rt
            for version in rt.versions:
                self._by_gvr[(rt.group, version, rt.plural)] = rt

    @property
    def git_version(self) -> str:
        return GIT_VERSIONS[self.flavor]

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def by_ref(self, ref: ResourceRef) -> ResourceType:
        """The type with this (group, plural); ``KeyError`` if not served."""
        return self._by_ref[ref]

    def storage_types(self) -> list[ResourceType]:
        """Types that own a storage (not virtual, not sharing another's)."""
        return [rt for rt in self.types if not rt.virtual and rt.storage is None]

    def group_versions(self) -> list[GroupVersion]:
        seen: dict[tuple[str, str], None] = {}
        for rt in self.types:
            for v in rt.versions:
                seen[(rt.group, v)] = None
        return [GroupVersion(g, v) for g, v in seen]

    def versions_of(self, group: str) -> list[str]:
        versions = {gv.version for gv in self.group_versions() if gv.group == group}
        return sorted(
            versions, key=lambda v: _VERSION_ORDER.index(v) if v in _VERSION_ORDER else 99
        )

    def groups(self) -> list[str]:
        """Named groups (not core), in first-served order."""
        return list(dict.fromkeys(rt.group for rt in self.types if rt.group))

    def types_in(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self.types if rt.group == group and version in rt.versions]
