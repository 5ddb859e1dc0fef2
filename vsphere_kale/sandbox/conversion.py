"""Versions and conversion of the sandbox's resources: core/v1 Events served as
events.k8s.io/v1, and which fields a type can select on (importable from
:mod:`vsphere_kale.sandbox.resources` as well)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vsphere_kale.sandbox.types import JSONObject, ResourceRef

if TYPE_CHECKING:
    # Annotations only: resources re-exports these modules' names.
    from vsphere_kale.sandbox.resources import ResourceType


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
