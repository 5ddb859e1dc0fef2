"""Interfaces between the sandbox API server's request pipeline and its policy parts.

The server (``server.py``, ``store.py``) owns HTTP, storage and watches. Authentication,
RBAC, admission webhooks and the Kubeflow emulation live in their own modules and meet the
server only through the types below, so each side can be tested alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

JSONObject = dict[str, Any]


@dataclass(frozen=True)
class ResourceRef:
    """A resource type as RBAC and admission see it: API group ("" for core) and plural."""

    group: str
    plural: str


@dataclass(frozen=True)
class UserInfo:
    """Who sent a request (authentication.k8s.io/v1 UserInfo)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


ANONYMOUS = UserInfo("system:anonymous", groups=("system:unauthenticated",))


@dataclass(frozen=True)
class Attributes:
    """What a request wants to do, as kube-apiserver's authorizer.Attributes.

    For resource requests ``resource`` is set (``path`` empty); for non-resource
    requests (``/version``, ``/api``, ``/openapi/v3``) ``path`` is set and ``resource`` empty.
    ``verb`` is the RBAC verb: get, list, watch, create, update, patch, delete,
    deletecollection (or a lower-case HTTP verb for non-resource paths).
    """

    user: UserInfo
    verb: str
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


class ObjectReader(Protocol):
    """Read access to the store, used by RBAC and the webhook caller."""

    def list_objects(self, ref: ResourceRef, namespace: str | None = None) -> list[JSONObject]:
        """Every stored object of a type (deep copies), optionally in one namespace."""
        ...

    def get_object(
        self, ref: ResourceRef, namespace: str | None, name: str
    ) -> JSONObject | None: ...


class ObjectWriter(ObjectReader, Protocol):
    """Write access for in-process controllers (the Kubeflow emulation).

    Writes go through the same store as API requests, so they get resourceVersions and
    watch events, but skip authentication, authorization and admission.
    """

    def create_object(self, ref: ResourceRef, namespace: str | None, obj: JSONObject) -> JSONObject:
        """Create; raises ``KubeConflict`` if it exists (callers ignore that)."""
        ...


@dataclass(frozen=True)
class AdmissionAttributes:
    """One write as the admission chain sees it."""

    operation: str  # CREATE | UPDATE | DELETE
    group: str
    version: str
    kind: str
    plural: str
    namespace: str
    name: str
    user: UserInfo
    dry_run: bool = False
    subresource: str = ""


@dataclass(frozen=True)
class AdmissionResult:
    obj: JSONObject
    warnings: tuple[str, ...] = ()


class AdmissionRejected(Exception):
    """A webhook denied the request, or failed under failurePolicy: Fail.

    The server answers with ``code`` and a metav1.Status carrying ``message``
    (kube-apiserver uses 500 InternalError for a failing webhook with failurePolicy
    Fail, and the webhook's own status code (default 400/403) for a denial).
    """

    def __init__(self, code: int, reason: str, message: str) -> None:
        self.code = code
        self.reason = reason
        self.message = message
        super().__init__(message)


# --- added by the policy side (sandbox-policy); additive only ------------------------------


class ObjectEditor(ObjectWriter, Protocol):
    """Full write access for controllers that also update and delete (the store has both).

    The Kubeflow emulation deletes a Profile's namespace; the Endpoints controller replaces
    Endpoints when a mapped Service changes.
    """

    def update_object(self, ref: ResourceRef, namespace: str | None, obj: JSONObject) -> JSONObject:
        """Replace; ``obj``'s resourceVersion is a precondition (``KubeConflict`` if stale)."""
        ...

    def delete_object(self, ref: ResourceRef, namespace: str | None, name: str) -> None:
        """Delete; a missing object is not an error."""
        ...


class Controller(Protocol):
    """An in-process controller: the store calls it after every committed change.

    ``event_type`` is ADDED, MODIFIED or DELETED; ``ref`` the storage type; ``obj`` a copy.
    Controllers must return quickly (they run on the store's dispatcher thread) and own
    whatever threads they start: ``stop()`` ends them, ``wait_idle()`` lets tests wait until
    every reaction to past events has been written.
    """

    def __call__(self, event_type: str, ref: ResourceRef, obj: JSONObject) -> None: ...

    def wait_idle(self, timeout: float = 5.0) -> bool: ...

    def stop(self) -> None: ...


class SeedUser(NamedTuple):
    """A user the seed data defines, with a fixed sandbox-only bearer token.

    Seeds export ``USERS: Mapping[str, SeedUser]`` keyed by the kubeconfig user/context
    name; ``build_sandbox`` unpacks each as ``(token, username, groups)`` and registers the
    token (the registry adds ``system:authenticated``).
    """

    token: str
    username: str
    groups: tuple[str, ...] = ()

    @property
    def user(self) -> UserInfo:
        return UserInfo(self.username, groups=self.groups)
