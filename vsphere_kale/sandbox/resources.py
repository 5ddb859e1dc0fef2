"""The resource types the sandbox API server serves, and the metav1.Status errors it answers.

One :class:`ResourceType` per (group, plural). A type may be served under several versions
(``kubeflow.org`` profiles: ``v1`` and ``v1beta1``) and several types may share one storage
(``events`` in ``v1`` and ``events.k8s.io/v1``): :attr:`ResourceType.storage` names the
storage, so an object written through one is read through the other, as in kube-apiserver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vsphere_kale.sandbox.types import JSONObject, ResourceRef

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
        _typ("kubeflow.org", ["v1", "v1beta1"], "profiles", "profile", "Profile", namespaced=False),
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


# --- metav1.Status errors -------------------------------------------------------------------


class StatusError(Exception):
    """A request failed; the server answers ``code`` with a metav1.Status body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: JSONObject | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.retry_after = retry_after
        self.list_continue = ""  # metadata.continue of a 410 for a stale continue token
        super().__init__(message)

    def to_status(self) -> JSONObject:
        """The metav1.Status body, keys in kube's order (kind, apiVersion, metadata, status,
        message, reason, details, code) and ``details`` as Go serialises StatusDetails:
        name, group, kind, uid, causes, retryAfterSeconds, empty strings omitted."""
        status: JSONObject = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {"continue": self.list_continue} if self.list_continue else {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None or self.retry_after is not None:
            given = dict(self.details or {})
            if self.retry_after is not None:
                given["retryAfterSeconds"] = self.retry_after
            ordered: JSONObject = {}
            for key in ("name", "group", "kind", "uid", "causes", "retryAfterSeconds"):
                if given.get(key) not in (None, ""):
                    ordered[key] = given.pop(key)
                given.pop(key, None)
            ordered.update(given)
            status["details"] = ordered
        status["code"] = self.code
        return status


def _details(rt: ResourceType, name: str) -> JSONObject:
    details: JSONObject = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return details


def not_found(rt: ResourceType, name: str) -> StatusError:
    return StatusError(
        404, "NotFound", f'{rt.qualified} "{name}" not found', details=_details(rt, name)
    )


def namespace_not_found(name: str) -> StatusError:
    return StatusError(
        404,
        "NotFound",
        f'namespaces "{name}" not found',
        details={"name": name, "kind": "namespaces"},
    )


def already_exists(rt: ResourceType, name: str) -> StatusError:
    return StatusError(
        409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', details=_details(rt, name)
    )


def conflict(rt: ResourceType, name: str, why: str | None = None) -> StatusError:
    why = why or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return StatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
        details=_details(rt, name),
    )


def forbidden(rt: ResourceType, name: str, why: str) -> StatusError:
    return StatusError(
        403, "Forbidden", f'{rt.qualified} "{name}" is forbidden: {why}', details=_details(rt, name)
    )


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str]]) -> StatusError:
    """422 Invalid; ``causes`` are (field, message) pairs as in field.ErrorList."""
    text = ", ".join(f"{fld}: {msg}" for fld, msg in causes)
    if len(causes) > 1:
        text = f"[{text}]"
    details: JSONObject = {
        "name": name,
        "kind": rt.kind,
        "causes": [
            {"reason": "FieldValueInvalid", "message": msg, "field": fld} for fld, msg in causes
        ],
    }
    if rt.group:
        details["group"] = rt.group
    qualified_kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    return StatusError(
        422, "Invalid", f'{qualified_kind} "{name}" is invalid: {text}', details=details
    )


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def server_not_found() -> StatusError:
    return StatusError(
        404, "NotFound", "the server could not find the requested resource", details={}
    )


def method_not_allowed(message: str = "") -> StatusError:
    return StatusError(
        405,
        "MethodNotAllowed",
        message or "the server does not allow this method on the requested resource",
    )


# --- versions and conversion ----------------------------------------------------------------

CORE_EVENTS = ResourceRef("", "events")

#: core/v1 Event field -> events.k8s.io/v1 Event field (the rest share names).
_EVENT_FIELDS = {
    "involvedObject": "regarding",
    "message": "note",
    "source": "deprecatedSource",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
    "reportingComponent": "reportingController",
}
_EVENT_FIELDS_BACK = {v: k for k, v in _EVENT_FIELDS.items()}


def to_served(rt: ResourceType, version: str, obj: Mapping[str, Any]) -> JSONObject:
    """A stored object as ``rt``/``version`` serves it (a new dict; nested values shared).

    Versions of one type differ only in ``apiVersion`` here (Profile v1 and v1beta1 have the
    same shape for what we use); events.k8s.io Events are converted from core Events field by
    field, as kube-apiserver does.
    """
    if rt.storage == CORE_EVENTS:
        out: JSONObject = {_EVENT_FIELDS.get(k, k): v for k, v in obj.items()}
    else:
        out = dict(obj)
    out["apiVersion"] = rt.api_version(version)
    out["kind"] = rt.kind
    return out


def to_storage(rt: ResourceType, obj: Mapping[str, Any]) -> JSONObject:
    """A request body of ``rt`` in storage form (the inverse of :func:`to_served`)."""
    if rt.storage == CORE_EVENTS:
        out: JSONObject = {_EVENT_FIELDS_BACK.get(k, k): v for k, v in obj.items()}
        out["apiVersion"] = "v1"
    else:
        out = dict(obj)
        out["apiVersion"] = rt.api_version(rt.versions[0])
    out["kind"] = rt.kind
    return out


_EVENT_SELECTABLE = frozenset(
    {"reason", "type", "source", "reportingComponent"}
    | {
        f"involvedObject.{f}"
        for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    }
)
_EVENTS_V1_SELECTABLE = frozenset(
    {"reason", "type", "reportingController"}
    | {
        f"regarding.{f}"
        for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    }
)


def selectable_fields(rt: ResourceType) -> frozenset[str]:
    """Fields a ``fieldSelector`` may use for this type (as kube-apiserver's field sets)."""
    base = frozenset({"metadata.name", "metadata.namespace"})
    if rt.ref == CORE_EVENTS:
        return base | _EVENT_SELECTABLE
    if rt.storage == CORE_EVENTS:
        return base | _EVENTS_V1_SELECTABLE
    if rt.ref == ResourceRef("", "namespaces"):
        return base | {"status.phase"}
    if rt.ref == ResourceRef("", "secrets"):
        return base | {"type"}
    if rt.ref == ResourceRef("", "persistentvolumeclaims"):
        return base | {"status.phase"}
    if rt.ref == ResourceRef("", "pods"):
        return base | {"spec.nodeName", "spec.serviceAccountName", "status.phase"}
    return base
