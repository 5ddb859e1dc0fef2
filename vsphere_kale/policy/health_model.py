"""The health verdicts' values: names and limits, the Kubernetes JSON they read (TypedDicts),
and the results whose ``to_json()`` is the ``NamespaceStatus`` document. PURE.

Importable from :mod:`vsphere_kale.policy.health` as well (it re-exports every name).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from vsphere_kale.policy.text import format_time

API_VERSION = "vsphere-kale.io/v1alpha1"
KIND = "NamespaceStatus"

WEBHOOK_CONFIGURATION_NAME = "vsphere-kale"
"""The MutatingWebhookConfiguration the installer creates (deploy/base)."""
ADMISSION_POLICY_NAME = "vsphere-kale"
"""The MutatingAdmissionPolicy ``install --admission policy`` creates (install/admission_policy)."""

CA_EXPIRY_WARNING = dt.timedelta(days=30)
"""Warn this long before the caBundle expires: enough for an admin to rotate it calmly."""

PENDING_GRACE = dt.timedelta(seconds=60)
"""A claim younger than this is still being provisioned; Pending then is not yet a problem."""

KALE_MARSHAL_SUFFIX = "-kale-marshal-pvc"
"""Kale's KFP VolumeOp names the pipeline's marshal volume ``<workflow>-kale-marshal-pvc``."""

BLOCK_PROVISIONERS = frozenset({"csi.vsphere.vmware.com", "kubernetes.io/vsphere-volume"})
"""vSphere CSI (and the in-tree driver it replaced) give block volumes on a TKG guest cluster:
ReadWriteMany there needs vSAN File Services, which most clusters do not have."""

SELECTED_NODE_ANNOTATION = "volume.kubernetes.io/selected-node"

DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)

Severity = Literal["error", "warning", "info"]
Overall = Literal["healthy", "degraded", "broken"]
PvcVerdict = Literal["ok", "rwx-on-block-class", "pending", "lost"]
PodSecurityVerdict = Literal["ok", "missing", "drifted", "conflict", "unmanaged", "off", "unknown"]
WebhookVerdict = Literal["ok", "missing", "ca-invalid", "ca-expiring", "class-missing", "unknown"]

SEVERITY_RANK: Mapping[str, int] = {"error": 3, "warning": 2, "info": 1}


# --- Kubernetes JSON we read (not ours: TypedDicts, every key optional) --------------------


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    creationTimestamp: str
    annotations: dict[str, str]
    labels: dict[str, str]


class PvcSpec(TypedDict, total=False):
    accessModes: list[str]
    storageClassName: str | None
    volumeName: str
    resources: dict[str, Any]


class PvcStatus(TypedDict, total=False):
    phase: str
    capacity: dict[str, str]


class PersistentVolumeClaim(TypedDict, total=False):
    metadata: ObjectMeta
    spec: PvcSpec
    status: PvcStatus


class ObjectReference(TypedDict, total=False):
    kind: str
    name: str
    namespace: str
    uid: str


class Event(TypedDict, total=False):
    metadata: ObjectMeta
    involvedObject: ObjectReference
    reason: str
    message: str
    type: str
    lastTimestamp: str | None
    eventTime: str | None
    firstTimestamp: str | None


class StorageClass(TypedDict, total=False):
    metadata: ObjectMeta
    provisioner: str
    volumeBindingMode: str


class WebhookClientConfig(TypedDict, total=False):
    caBundle: str
    url: str
    service: dict[str, Any]


class MutatingWebhook(TypedDict, total=False):
    name: str
    clientConfig: WebhookClientConfig


class MutatingWebhookConfiguration(TypedDict, total=False):
    metadata: ObjectMeta
    webhooks: list[MutatingWebhook]


@dataclass(frozen=True)
class Unreadable:
    """A read the caller was not allowed to do; ``reason`` names the missing permission."""

    reason: str


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    component: Literal["pvc", "podSecurity", "webhook"]
    object: str
    severity: Severity
    message: str
    hint: str

    def to_json(self) -> dict[str, str]:
        return {
            "component": self.component,
            "object": self.object,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class PvcHealth:
    name: str
    access_modes: tuple[str, ...]
    storage_class: str | None
    phase: str
    capacity: str | None
    age_seconds: int | None
    kale_marshal: bool
    verdict: PvcVerdict
    severity: Severity | None
    message: str
    hint: str
    recreate_refusal: str | None = None
    """Why the admin API would refuse to recreate the claim (its own rule,
    :func:`~vsphere_kale.policy.recreate.decide_recreate_refusal`); ``None`` when it would
    recreate it on the RWX class."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "accessModes": list(self.access_modes),
            "storageClass": self.storage_class,
            "phase": self.phase,
            "capacity": self.capacity,
            "ageSeconds": self.age_seconds,
            "kaleMarshal": self.kale_marshal,
            "verdict": self.verdict,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
            "recreateRefusal": self.recreate_refusal,
        }


@dataclass(frozen=True)
class PodSecurityFacts:
    """What :mod:`vsphere_kale.health.status` learned from ``policy.podsecurity`` for one namespace.

    Kept as plain values so this module does not depend on the planner's types: ``outcome``
    is ``Plan.outcome`` (``create`` | ``repair`` | ``ok`` | ``skipped`` | ``conflict``) and
    ``reason`` its sentence; ``unreadable`` is set instead when the facts could not be read.
    """

    mode: str
    managed: bool = False
    managed_reason: str = ""
    required: str = ""
    outcome: str = "skipped"
    reason: str = ""
    unreadable: str | None = None


@dataclass(frozen=True)
class PodSecurityHealth:
    mode: str
    managed: bool | None
    required: str
    present: bool | None
    verdict: PodSecurityVerdict
    severity: Severity | None
    message: str
    hint: str

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "managed": self.managed,
            "required": self.required,
            "present": self.present,
            "verdict": self.verdict,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class WebhookHealth:
    configured: bool | None
    rwx_storage_class: str | None
    rwx_class_exists: bool | None
    ca_bundle_not_after: dt.datetime | None
    verdict: WebhookVerdict
    severity: Severity | None
    message: str
    hint: str
    findings: tuple[Problem, ...] = ()
    """Every webhook problem found (the verdict is the worst): an expiring CA and a missing
    class are both worth fixing."""
    admission: str = "webhook"
    """``webhook`` (our MutatingWebhookConfiguration) or ``policy`` (``install --admission
    policy``: a MutatingAdmissionPolicy evaluated by kube-apiserver, no caBundle)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "admission": self.admission,
            "configured": self.configured,
            "rwxStorageClass": self.rwx_storage_class,
            "rwxClassExists": self.rwx_class_exists,
            "caBundleNotAfter": iso_or_none(self.ca_bundle_not_after),
            "verdict": self.verdict,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class NamespaceHealth:
    namespace: str
    generated_at: dt.datetime
    source: str
    overall: Overall
    can_reconcile: bool
    pvcs: tuple[PvcHealth, ...]
    pod_security: PodSecurityHealth
    webhook: WebhookHealth
    problems: tuple[Problem, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "namespace": self.namespace,
            "generatedAt": iso_or_none(self.generated_at),
            "source": self.source,
            "overall": self.overall,
            "canReconcile": self.can_reconcile,
            "pvcs": [p.to_json() for p in self.pvcs],
            "podSecurity": self.pod_security.to_json(),
            "webhook": self.webhook.to_json(),
            "problems": [p.to_json() for p in self.problems],
        }


def iso_or_none(when: dt.datetime | None) -> str | None:
    """``2026-11-25T19:40:00Z``, or None for no time (the document's ``null``)."""
    if when is None:
        return None
    return format_time(when)
