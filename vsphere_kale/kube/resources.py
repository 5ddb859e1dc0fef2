"""The API resources vsphere-kale talks to, as small frozen values.

A :class:`Resource` is what a request needs to build its path (group, version, plural, whether
it lives in a namespace) and what an error message needs to name it (the plural, the kind).
The constants are the resources the product uses; :meth:`Resource.at` gives another version of
the same resource (Profile ``v1`` -> ``v1beta1``, MutatingAdmissionPolicy ``v1`` -> ``v1beta1``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import quote


def path(*segments: str) -> str:
    """``/api/v1/namespaces/alice``: each segment percent-encoded."""
    return "/" + "/".join(quote(s, safe="") for s in segments)


@dataclass(frozen=True)
class Resource:
    group: str
    """``""`` for the core group."""
    version: str
    plural: str
    namespaced: bool
    kind: str
    subresource: str = ""
    """Set for a subresource-only kind (TokenRequest: ``serviceaccounts/<name>/token``)."""

    @property
    def api_version(self) -> str:
        """``v1`` or ``rbac.authorization.k8s.io/v1``, as in an object's ``apiVersion``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version_path(self) -> str:
        """``/api/v1`` or ``/apis/<group>/<version>``: the discovery document of its version."""
        return (
            path("api", self.version) if not self.group else path("apis", self.group, self.version)
        )

    def at(self, version: str) -> Resource:
        """The same resource at another version."""
        return replace(self, version=version)

    def path(
        self, *, namespace: str | None = None, name: str | None = None, subresource: str = ""
    ) -> str:
        """The collection path (``namespace=None`` lists across namespaces), or one object's.

        A namespaced object's path needs its namespace; a cluster-scoped resource ignores none
        given and refuses one given, so a caller's mix-up is a ``ValueError``, not a 404.
        """
        if self.namespaced and name is not None and not namespace:
            raise ValueError(f"{self.plural} {name}: a namespaced resource needs a namespace")
        if not self.namespaced and namespace:
            raise ValueError(f"{self.plural} is cluster-scoped; got namespace {namespace!r}")
        segments = ["api", self.version] if not self.group else ["apis", self.group, self.version]
        if namespace:
            segments += ["namespaces", namespace]
        segments.append(self.plural)
        if name is not None:
            segments.append(name)
            if subresource or self.subresource:
                segments.append(subresource or self.subresource)
        return path(*segments)

    def describe(self, name: str = "", *, namespace: str | None = None) -> str:
        """``rolebindings alice/x``, ``namespaces alice``, ``profiles``: for error messages."""
        if not name:
            return f"{self.plural} in namespace {namespace}" if namespace else self.plural
        return f"{self.plural} {namespace}/{name}" if namespace else f"{self.plural} {name}"


def _core(plural: str, kind: str, *, namespaced: bool = True) -> Resource:
    return Resource("", "v1", plural, namespaced, kind)


NAMESPACE = _core("namespaces", "Namespace", namespaced=False)
PERSISTENT_VOLUME = _core("persistentvolumes", "PersistentVolume", namespaced=False)
PERSISTENT_VOLUME_CLAIM = _core("persistentvolumeclaims", "PersistentVolumeClaim")
SERVICE_ACCOUNT = _core("serviceaccounts", "ServiceAccount")
SECRET = _core("secrets", "Secret")
CONFIG_MAP = _core("configmaps", "ConfigMap")
SERVICE = _core("services", "Service")
POD = _core("pods", "Pod")
EVENT = _core("events", "Event")
TOKEN_REQUEST = Resource("", "v1", "serviceaccounts", True, "TokenRequest", subresource="token")
"""Created as the ``token`` subresource of a ServiceAccount (``create(..., name=account)``)."""

ENDPOINTS = _core("endpoints", "Endpoints")
STORAGE_CLASS = Resource("storage.k8s.io", "v1", "storageclasses", False, "StorageClass")
LEASE = Resource("coordination.k8s.io", "v1", "leases", True, "Lease")
DEPLOYMENT = Resource("apps", "v1", "deployments", True, "Deployment")
DAEMON_SET = Resource("apps", "v1", "daemonsets", True, "DaemonSet")
STATEFUL_SET = Resource("apps", "v1", "statefulsets", True, "StatefulSet")
POD_DISRUPTION_BUDGET = Resource(
    "policy", "v1", "poddisruptionbudgets", True, "PodDisruptionBudget"
)
CERT_MANAGER_ISSUER = Resource("cert-manager.io", "v1", "issuers", True, "Issuer")
CERT_MANAGER_CERTIFICATE = Resource("cert-manager.io", "v1", "certificates", True, "Certificate")

_RBAC = "rbac.authorization.k8s.io"
ROLE_BINDING = Resource(_RBAC, "v1", "rolebindings", True, "RoleBinding")
ROLE = Resource(_RBAC, "v1", "roles", True, "Role")
CLUSTER_ROLE = Resource(_RBAC, "v1", "clusterroles", False, "ClusterRole")
CLUSTER_ROLE_BINDING = Resource(_RBAC, "v1", "clusterrolebindings", False, "ClusterRoleBinding")

TOKEN_REVIEW = Resource("authentication.k8s.io", "v1", "tokenreviews", False, "TokenReview")
_AUTHZ = "authorization.k8s.io"
SUBJECT_ACCESS_REVIEW = Resource(_AUTHZ, "v1", "subjectaccessreviews", False, "SubjectAccessReview")
SELF_SUBJECT_ACCESS_REVIEW = Resource(
    _AUTHZ, "v1", "selfsubjectaccessreviews", False, "SelfSubjectAccessReview"
)

POD_SECURITY_POLICY = Resource(
    "policy", "v1beta1", "podsecuritypolicies", False, "PodSecurityPolicy"
)

PROFILE_GROUP = "kubeflow.org"
PROFILE = Resource(PROFILE_GROUP, "v1", "profiles", False, "Profile")
PROFILE_V1BETA1 = PROFILE.at("v1beta1")

_ADMISSION = "admissionregistration.k8s.io"
MUTATING_WEBHOOK_CONFIGURATION = Resource(
    _ADMISSION, "v1", "mutatingwebhookconfigurations", False, "MutatingWebhookConfiguration"
)
MUTATING_ADMISSION_POLICY = Resource(
    _ADMISSION, "v1", "mutatingadmissionpolicies", False, "MutatingAdmissionPolicy"
)
MUTATING_ADMISSION_POLICY_V1BETA1 = MUTATING_ADMISSION_POLICY.at("v1beta1")
MUTATING_ADMISSION_POLICY_BINDING = Resource(
    _ADMISSION, "v1", "mutatingadmissionpolicybindings", False, "MutatingAdmissionPolicyBinding"
)
MUTATING_ADMISSION_POLICY_BINDING_V1BETA1 = MUTATING_ADMISSION_POLICY_BINDING.at("v1beta1")
VALIDATING_ADMISSION_POLICY = Resource(
    _ADMISSION, "v1", "validatingadmissionpolicies", False, "ValidatingAdmissionPolicy"
)
VALIDATING_ADMISSION_POLICY_BINDING = Resource(
    _ADMISSION,
    "v1",
    "validatingadmissionpolicybindings",
    False,
    "ValidatingAdmissionPolicyBinding",
)

BY_KIND: dict[tuple[str, str], Resource] = {
    (r.api_version, r.kind): r
    for r in (
        NAMESPACE,
        PERSISTENT_VOLUME,
        PERSISTENT_VOLUME_CLAIM,
        SERVICE_ACCOUNT,
        SECRET,
        CONFIG_MAP,
        SERVICE,
        POD,
        EVENT,
        ENDPOINTS,
        STORAGE_CLASS,
        LEASE,
        DEPLOYMENT,
        DAEMON_SET,
        STATEFUL_SET,
        POD_DISRUPTION_BUDGET,
        CERT_MANAGER_ISSUER,
        CERT_MANAGER_CERTIFICATE,
        ROLE_BINDING,
        ROLE,
        CLUSTER_ROLE,
        CLUSTER_ROLE_BINDING,
        TOKEN_REVIEW,
        SUBJECT_ACCESS_REVIEW,
        SELF_SUBJECT_ACCESS_REVIEW,
        POD_SECURITY_POLICY,
        PROFILE,
        PROFILE_V1BETA1,
        MUTATING_WEBHOOK_CONFIGURATION,
        MUTATING_ADMISSION_POLICY,
        MUTATING_ADMISSION_POLICY_V1BETA1,
        MUTATING_ADMISSION_POLICY_BINDING,
        MUTATING_ADMISSION_POLICY_BINDING_V1BETA1,
        VALIDATING_ADMISSION_POLICY,
        VALIDATING_ADMISSION_POLICY_BINDING,
    )
}
"""``(apiVersion, kind)`` -> resource, for applying a manifest's documents."""


def resource_for(api_version: str, kind: str) -> Resource:
    """The resource of a manifest document; ``KeyError`` naming it when we do not know it."""
    try:
        return BY_KIND[(api_version, kind)]
    except KeyError:
        raise KeyError(f"unknown resource {kind} {api_version}") from None
