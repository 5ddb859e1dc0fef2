"""Server-side Tables (``meta.k8s.io`` Table) for ``kubectl get``'s human-readable output.

kubectl asks ``Accept: application/json;as=Table;g=meta.k8s.io;v=v1,...``. Answering with
a Table gives the columns kube-apiserver prints (a PVC's STATUS, ACCESS MODES,
STORAGECLASS; a StorageClass's ``(default)`` marker; an Event's REASON and MESSAGE), which is
what makes the Kubeflow-on-TKG picture readable. Types without a column set here get
kube's default for custom resources: NAME and AGE.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from vsphere_kale.sandbox.resources import ResourceType
from vsphere_kale.sandbox.types import JSONObject

Cell = Callable[[Mapping[str, Any]], Any]

_ACCESS_MODES = {
    "ReadWriteOnce": "RWO",
    "ReadOnlyMany": "ROX",
    "ReadWriteMany": "RWX",
    "ReadWriteOncePod": "RWOP",
}
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


def wants_table(accept: str) -> str | None:
    """The meta.k8s.io version of Table the Accept header asks for first, if any."""
    for part in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p)
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return params.get("v", "v1")
    return None


def human_duration(seconds: float) -> str:
    """kube's ``duration.HumanDuration`` (apimachinery/pkg/util/duration)."""
    if seconds < -1:
        return "<invalid>"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years = hours // (24 * 365)
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{years}y"


def _age_of(timestamp: Any) -> str:
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return "<unknown>"
    return human_duration((datetime.now(timezone.utc) - then).total_seconds())


def _get(obj: Mapping[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def _text(path: str, default: str = "<none>") -> Cell:
    def cell(obj: Mapping[str, Any]) -> Any:
        value = _get(obj, path)
        return default if value in (None, "") else value

    return cell


def _age(obj: Mapping[str, Any]) -> str:
    return _age_of(_get(obj, "metadata.creationTimestamp"))


def _name(obj: Mapping[str, Any]) -> str:
    return str(_get(obj, "metadata.name") or "")


def _access_modes(path: str) -> Cell:
    def cell(obj: Mapping[str, Any]) -> str:
        modes = _get(obj, path) or []
        return ",".join(_ACCESS_MODES.get(m, m) for m in modes)

    return cell


def _storage_class_name(obj: Mapping[str, Any]) -> str:
    name = _name(obj)
    annotations = _get(obj, "metadata.annotations") or {}
    return f"{name} (default)" if annotations.get(DEFAULT_CLASS_ANNOTATION) == "true" else name


def _count(path: str) -> Cell:
    def cell(obj: Mapping[str, Any]) -> int:
        value = _get(obj, path)
        return len(value) if isinstance(value, (list, dict)) else 0

    return cell


def _data_count(obj: Mapping[str, Any]) -> int:
    return len(obj.get("data") or {}) + len(obj.get("binaryData") or {})


def _role_ref(obj: Mapping[str, Any]) -> str:
    ref = obj.get("roleRef") or {}
    return f"{ref.get('kind', '')}/{ref.get('name', '')}"


def _event_object(field: str) -> Cell:
    def cell(obj: Mapping[str, Any]) -> str:
        ref = obj.get(field) or {}
        return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"

    return cell


def _last_seen(*paths: str) -> Cell:
    def cell(obj: Mapping[str, Any]) -> str:
        for path in paths:
            value = _get(obj, path)
            if value:
                return _age_of(str(value)[:19] + "Z" if "." in str(value) else value)
        return _age(obj)

    return cell


def _deployment_ready(obj: Mapping[str, Any]) -> str:
    status = obj.get("status") or {}
    return f"{status.get('readyReplicas', 0)}/{(obj.get('spec') or {}).get('replicas', 1)}"


Column = tuple[str, str, Cell]  # name, type, cell
_NAME: Column = ("Name", "string", _name)
_AGE: Column = ("Age", "string", _age)

COLUMNS: Mapping[tuple[str, str], list[Column]] = {
    ("", "namespaces"): [_NAME, ("Status", "string", _text("status.phase")), _AGE],
    ("", "persistentvolumeclaims"): [
        _NAME,
        ("Status", "string", _text("status.phase")),
        ("Volume", "string", _text("spec.volumeName", "")),
        ("Capacity", "string", _text("status.capacity.storage", "")),
        ("Access Modes", "string", _access_modes("status.accessModes")),
        ("StorageClass", "string", _text("spec.storageClassName", "")),
        _AGE,
    ],
    ("", "persistentvolumes"): [
        _NAME,
        ("Capacity", "string", _text("spec.capacity.storage", "")),
        ("Access Modes", "string", _access_modes("spec.accessModes")),
        ("Reclaim Policy", "string", _text("spec.persistentVolumeReclaimPolicy", "")),
        ("Status", "string", _text("status.phase", "")),
        ("StorageClass", "string", _text("spec.storageClassName", "")),
        _AGE,
    ],
    ("storage.k8s.io", "storageclasses"): [
        ("Name", "string", _storage_class_name),
        ("Provisioner", "string", _text("provisioner")),
        ("ReclaimPolicy", "string", _text("reclaimPolicy", "Delete")),
        ("VolumeBindingMode", "string", _text("volumeBindingMode", "Immediate")),
        ("AllowVolumeExpansion", "boolean", _text("allowVolumeExpansion", "false")),
        _AGE,
    ],
    ("", "events"): [
        ("Last Seen", "string", _last_seen("lastTimestamp", "eventTime")),
        ("Type", "string", _text("type", "")),
        ("Reason", "string", _text("reason", "")),
        ("Object", "string", _event_object("involvedObject")),
        ("Message", "string", _text("message", "")),
    ],
    ("events.k8s.io", "events"): [
        ("Last Seen", "string", _last_seen("deprecatedLastTimestamp", "eventTime")),
        ("Type", "string", _text("type", "")),
        ("Reason", "string", _text("reason", "")),
        ("Object", "string", _event_object("regarding")),
        ("Message", "string", _text("note", "")),
    ],
    ("", "configmaps"): [_NAME, ("Data", "integer", _data_count), _AGE],
    ("", "secrets"): [
        _NAME,
        ("Type", "string", _text("type", "Opaque")),
        ("Data", "integer", _data_count),
        _AGE,
    ],
    ("", "serviceaccounts"): [_NAME, ("Secrets", "integer", _count("secrets")), _AGE],
    ("rbac.authorization.k8s.io", "rolebindings"): [
        _NAME,
        ("Role", "string", _role_ref),
        _AGE,
    ],
    ("rbac.authorization.k8s.io", "clusterrolebindings"): [
        _NAME,
        ("Role", "string", _role_ref),
        _AGE,
    ],
    ("coordination.k8s.io", "leases"): [
        _NAME,
        ("Holder", "string", _text("spec.holderIdentity", "")),
        _AGE,
    ],
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): [
        _NAME,
        ("Webhooks", "integer", _count("webhooks")),
        _AGE,
    ],
    ("apps", "deployments"): [
        _NAME,
        ("Ready", "string", _deployment_ready),
        ("Up-to-date", "integer", _text("status.updatedReplicas", "0")),
        ("Available", "integer", _text("status.availableReplicas", "0")),
        _AGE,
    ],
}


def build_table(
    rt: ResourceType,
    objects: list[JSONObject],
    *,
    table_version: str,
    resource_version: str | None,
    include_object: str = "Metadata",
) -> JSONObject:
    """A meta.k8s.io Table of ``objects`` (served form) with ``rt``'s columns."""
    columns = COLUMNS.get((rt.group, rt.plural), [_NAME, _AGE])
    definitions = [
        {
            "name": name,
            "type": kind,
            "format": "name" if name == "Name" else "",
            "description": f"{name} of the {rt.kind}.",
            "priority": 0,
        }
        for name, kind, _ in columns
    ]
    rows = []
    for obj in objects:
        row: JSONObject = {"cells": [cell(obj) for _, _, cell in columns]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": f"meta.k8s.io/{table_version}",
                "metadata": obj.get("metadata") or {},
            }
        rows.append(row)
    metadata: JSONObject = {}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{table_version}",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    }
