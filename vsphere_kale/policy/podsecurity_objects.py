"""Pod security's Kubernetes JSON: facts read from API objects, and the bodies ``apply`` sends.

PURE: API JSON in, dataclasses of :mod:`vsphere_kale.policy.podsecurity_model` out (and back).
Importable from :mod:`vsphere_kale.policy.podsecurity` as well (it re-exports every name).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from vsphere_kale.policy.podsecurity_model import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    MANAGED_LABELS_ANNOTATION,
    RBAC_GROUP,
    BindingFacts,
    DesiredBinding,
    NamespaceFacts,
    PatchBinding,
    PatchNamespaceLabels,
    Subject,
)

# --- the ownership annotation ----------------------------------------------------------------


def decide_owned_labels(annotations: Mapping[str, str]) -> dict[str, str | None]:
    """Parse the ownership annotation: label -> value we set (None: any value is ours).

    An unreadable annotation counts as owning nothing: we then only add missing labels and
    never overwrite one, which is the safe direction.
    """
    raw = annotations.get(MANAGED_LABELS_ANNOTATION, "").strip()
    if not raw:
        return {}
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        return {name.strip(): None for name in raw.split(",") if name.strip()}
    if isinstance(parsed, dict):
        return {str(k): str(v) for k, v in parsed.items() if isinstance(v, str)}
    if isinstance(parsed, list):
        return {str(k): None for k in parsed if isinstance(k, str)}
    return {}


def build_owned_annotation(owned: Mapping[str, str]) -> str:
    """The annotation value: compact JSON, sorted so unchanged ownership is byte-identical."""
    return json.dumps(dict(sorted(owned.items())), separators=(",", ":"))


# --- reading facts from API JSON -----------------------------------------------------------------


def binding_facts(obj: Mapping[str, Any]) -> BindingFacts:
    """A RoleBinding's API JSON (camelCase, as the API server sends it) -> BindingFacts."""
    meta = obj.get("metadata") or {}
    ref = obj.get("roleRef") or {}
    subjects = tuple(
        Subject(
            str(s.get("kind", "")),
            str(s.get("name", "")),
            str(s.get("namespace") or ""),
        )
        for s in obj.get("subjects") or ()
    )
    labels = meta.get("labels") or {}
    return BindingFacts(
        name=str(meta.get("name", "")),
        role_ref_kind=str(ref.get("kind", "")),
        role_ref_name=str(ref.get("name", "")),
        role_ref_api_group=str(ref.get("apiGroup", "")),
        subjects=subjects,
        managed=labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE,
        uid=str(meta.get("uid") or ""),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def facts_from_objects(
    name: str,
    namespace: Mapping[str, Any] | None,
    *,
    bindings: Iterable[Mapping[str, Any]] = (),
    all_bindings: bool = True,
) -> NamespaceFacts:
    """Namespace and RoleBinding API JSON -> NamespaceFacts (``namespace`` None: absent).

    Pass ``all_bindings=False`` when ``bindings`` are only the managed ones.
    """
    if namespace is None:
        return NamespaceFacts(name, exists=False, all_bindings=all_bindings)
    meta = namespace.get("metadata") or {}
    status = namespace.get("status") or {}
    return NamespaceFacts(
        name=name,
        exists=True,
        terminating=bool(meta.get("deletionTimestamp")) or status.get("phase") == "Terminating",
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        bindings=tuple(binding_facts(b) for b in bindings),
        all_bindings=all_bindings,
        uid=str(meta.get("uid") or ""),
    )


# --- bodies apply sends ------------------------------------------------------------------------


def _subject_json(s: Subject) -> dict[str, str]:
    out = {"kind": s.kind, "name": s.name}
    if s.kind in ("Group", "User"):
        out["apiGroup"] = RBAC_GROUP
    if s.namespace:
        out["namespace"] = s.namespace
    return out


def build_role_binding(namespace: str, binding: DesiredBinding) -> dict[str, Any]:
    """The RoleBinding to create (rbac.authorization.k8s.io/v1)."""
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": binding.name,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
        },
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": binding.cluster_role},
        "subjects": [_subject_json(Subject("Group", binding.group))],
    }


def build_binding_patch(action: PatchBinding) -> dict[str, Any]:
    """JSON merge patch (RFC 7386) for a binding: ``subjects`` is replaced as a whole."""
    body: dict[str, Any] = {}
    if action.label or action.adopt:
        body["metadata"] = {"labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}}
    if action.subjects is not None:
        body["subjects"] = [_subject_json(s) for s in action.subjects]
    return body


def build_namespace_patch(action: PatchNamespaceLabels) -> dict[str, Any]:
    """JSON merge patch for the namespace: only our labels and our annotation."""
    return {
        "metadata": {
            "labels": dict(action.labels),
            "annotations": {MANAGED_LABELS_ANNOTATION: build_owned_annotation(action.owned)},
        }
    }
