"""Pod-security names, facts, desired state, actions and plans: the values
:mod:`vsphere_kale.policy.podsecurity` decides with. PURE: frozen dataclasses and constants only.

Importable from :mod:`vsphere_kale.policy.podsecurity` as well (it re-exports every name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "vsphere-kale"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
MANAGED_LABELS_ANNOTATION = "vsphere-kale.io/managed-labels"
PSA_PREFIX = "pod-security.kubernetes.io/"
PSA_ENFORCE = PSA_PREFIX + "enforce"
PSA_ENFORCE_VERSION = PSA_PREFIX + "enforce-version"
PSA_WARN = PSA_PREFIX + "warn"
PSA_AUDIT = PSA_PREFIX + "audit"
RBAC_GROUP = "rbac.authorization.k8s.io"

Mode = Literal["psp", "psa", "off"]
Outcome = Literal["create", "repair", "ok", "skipped", "conflict"]


# --- facts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """One RoleBinding subject (``apiGroup`` is implied by ``kind``)."""

    kind: str
    name: str
    namespace: str = ""


@dataclass(frozen=True)
class BindingFacts:
    """One RoleBinding as far as planning cares."""

    name: str
    role_ref_kind: str
    role_ref_name: str
    subjects: tuple[Subject, ...]
    managed: bool
    """Carries ``app.kubernetes.io/managed-by: vsphere-kale``."""
    uid: str = ""
    resource_version: str = ""
    role_ref_api_group: str = RBAC_GROUP


@dataclass(frozen=True)
class NamespaceFacts:
    """What :func:`plan` needs to know about one namespace."""

    name: str
    exists: bool = True
    terminating: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    bindings: tuple[BindingFacts, ...] = ()
    all_bindings: bool = True
    """``bindings`` holds every RoleBinding in the namespace, not only managed ones."""
    uid: str = ""


# --- desired state -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DesiredBinding:
    name: str
    cluster_role: str
    group: str
    """``system:serviceaccounts:<ns>``: every service account of the namespace, including
    ``default-editor`` that notebook pods and Kale steps run as."""


@dataclass(frozen=True)
class Desired:
    namespace: str
    mode: Mode
    binding: DesiredBinding | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def required(self) -> str:
        """One line for status pages: what the namespace must have."""
        if self.binding is not None:
            return f"RoleBinding {self.binding.name} -> ClusterRole {self.binding.cluster_role}"
        if self.labels:
            return "labels " + ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return ""


# --- actions and plans -------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateBinding:
    namespace: str
    binding: DesiredBinding

    def describe(self) -> str:
        b = self.binding
        return f"create rolebinding {self.namespace}/{b.name} -> clusterrole/{b.cluster_role}"


@dataclass(frozen=True)
class DeleteBinding:
    """Delete before re-create: ``roleRef`` is immutable (RBAC rejects an update of it)."""

    namespace: str
    name: str
    uid: str = ""
    """Precondition, so a binding re-created meanwhile by someone else is not deleted."""

    def describe(self) -> str:
        return f"delete rolebinding {self.namespace}/{self.name} (roleRef is immutable)"


@dataclass(frozen=True)
class PatchBinding:
    """Merge-patch a binding: restore our subjects and/or add our managed-by label."""

    namespace: str
    name: str
    subjects: tuple[Subject, ...] | None = None
    label: bool = False
    adopt: bool = False

    def describe(self) -> str:
        if self.adopt:
            return f"adopt rolebinding {self.namespace}/{self.name} (label {MANAGED_SELECTOR})"
        what = []
        if self.subjects is not None:
            what.append("restore subjects")
        if self.label:
            what.append(f"label {MANAGED_SELECTOR}")
        return f"patch rolebinding {self.namespace}/{self.name} ({', '.join(what)})"


@dataclass(frozen=True)
class PatchNamespaceLabels:
    """Merge-patch of the namespace's labels and our ownership annotation (never a full
    update: other controllers' labels stay untouched and no stale resourceVersion 409s)."""

    namespace: str
    labels: Mapping[str, str]
    owned: Mapping[str, str]
    """The complete new value of the ownership record."""

    def describe(self) -> str:
        if not self.labels:
            return f"record label ownership on namespace/{self.namespace}"
        pairs = ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return f"label namespace/{self.namespace} {pairs}"


Action = CreateBinding | DeleteBinding | PatchBinding | PatchNamespaceLabels


@dataclass(frozen=True)
class Plan:
    namespace: str
    outcome: Outcome
    reason: str
    """One sentence saying why (shown by ``reconcile`` and the status page)."""
    actions: tuple[Action, ...] = ()
    needs_all_bindings: bool = False
    """The facts held only managed bindings and those do not satisfy the namespace: list the
    namespace's RoleBindings and plan again before acting."""

    def describe(self) -> tuple[str, ...]:
        return tuple(a.describe() for a in self.actions)
