"""Whether a stuck claim may be recreated on the ReadWriteMany class, and the claim to create.

``storageClassName`` is immutable, so a ReadWriteMany claim created before the webhook (or on
a class that does not exist) can only be fixed by deleting it and creating it again. That is
safe only while no data can be lost: the claim must be unbound (a Bound claim has a volume,
maybe with data), not restored or cloned from a data source (recreating would drop the
restore into a fresh empty volume on another class), and not mounted by a running pod.

Pure: the claim, the pods of its namespace, the StorageClasses by name and the settings in;
a :class:`RecreatePlan` or a :class:`RecreateRefusal` (a sentence) out. The admin API acts on
:func:`plan_recreate`; the status document says in advance what it would answer
(:func:`decide_recreate_refusal`, the same rules), so the panel offers only what it accepts.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from vsphere_kale.policy.storage import (
    LEGACY_CLASS_ANNOTATION,
    OPT_OUT_ANNOTATION,
    ORIGINAL_CLASS_ANNOTATION,
)
from vsphere_kale.settings import Settings, StorageSettings

RefusalReason = Literal[
    "not-configured", "bound", "data-source", "in-use", "opted-out", "not-stuck"
]

#: Annotations the PV controller and provisioners set for the *old* class: a new claim
#: carrying them would name the wrong provisioner or claim a binding it never had.
CONTROLLER_ANNOTATIONS = frozenset(
    {
        "pv.kubernetes.io/bind-completed",
        "pv.kubernetes.io/bound-by-controller",
        "volume.beta.kubernetes.io/storage-provisioner",
        "volume.kubernetes.io/storage-provisioner",
        "volume.kubernetes.io/selected-node",
        LEGACY_CLASS_ANNOTATION,
    }
)

#: Pods in these phases no longer hold their volumes.
_FINISHED = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class RecreateRefusal:
    """Why the claim stays as it is; ``message`` is the sentence a user sees (HTTP 409)."""

    reason: RefusalReason
    message: str


@dataclass(frozen=True)
class RecreatePlan:
    """Delete ``namespace/name`` and create ``claim`` (same name) on ``target_class``."""

    namespace: str
    name: str
    original_class: str
    target_class: str
    claim: dict[str, Any]


def _class_of(claim: Mapping[str, Any]) -> str:
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    legacy = annotations.get(LEGACY_CLASS_ANNOTATION)
    return str(legacy or (claim.get("spec") or {}).get("storageClassName") or "")


def _mounting_pods(claim: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[str]:
    name = (claim.get("metadata") or {}).get("name")
    found = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (pod.get("status") or {}).get("phase") in _FINISHED:
            continue
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            if (volume.get("persistentVolumeClaim") or {}).get("claimName") == name:
                found.append(str(meta.get("name", "")))
                break
    return sorted(found)


def build_recreated_claim(claim: Mapping[str, Any], *, target_class: str) -> dict[str, Any]:
    """The new claim: same name, labels, annotations, ownerReferences, size and modes, on
    ``target_class``, with the original class recorded in our annotation."""
    meta = claim.get("metadata") or {}
    spec = claim.get("spec") or {}
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in CONTROLLER_ANNOTATIONS
    }
    annotations[ORIGINAL_CLASS_ANNOTATION] = _class_of(claim)
    new_meta: dict[str, Any] = {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "annotations": annotations,
    }
    for key in ("labels", "ownerReferences"):
        if meta.get(key):
            new_meta[key] = copy.deepcopy(meta[key])
    new_spec: dict[str, Any] = {
        "accessModes": list(spec.get("accessModes") or []),
        "resources": copy.deepcopy(spec.get("resources") or {}),
        "storageClassName": target_class,
    }
    for key in ("volumeMode", "selector", "volumeAttributesClassName"):
        if spec.get(key) is not None:
            new_spec[key] = copy.deepcopy(spec[key])
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": new_meta,
        "spec": new_spec,
    }


def plan_recreate(
    claim: Mapping[str, Any],
    *,
    pods: Sequence[Mapping[str, Any]],
    storage_classes: Mapping[str, Mapping[str, Any]],
    settings: Settings,
) -> RecreatePlan | RecreateRefusal:
    """Recreate ``claim`` on the RWX class, or say why not (first matching rule decides)."""
    return _plan(claim, pods=pods, storage_classes=storage_classes, storage=settings.storage)


def decide_recreate_refusal(
    claim: Mapping[str, Any],
    *,
    pods: Sequence[Mapping[str, Any]],
    storage_classes: Mapping[str, Mapping[str, Any]],
    storage: StorageSettings,
) -> RecreateRefusal | None:
    """Why :func:`plan_recreate` would refuse ``claim``, or ``None`` when it would recreate it.

    The status document's ``pvcs[].recreateRefusal`` (:mod:`vsphere_kale.policy.health`): the
    panel offers its Recreate button only where the service's own rule accepts, and says the
    rule's sentence instead of the button elsewhere.
    """
    plan = _plan(claim, pods=pods, storage_classes=storage_classes, storage=storage)
    return plan if isinstance(plan, RecreateRefusal) else None


def decide_refusal_needs_pods(
    claims: Iterable[Mapping[str, Any]],
    *,
    storage_classes: Mapping[str, Mapping[str, Any]],
    storage: StorageSettings,
) -> bool:
    """Whether the pods decide any claim's refusal: some claim passes every rule but "in use".

    A status reads the namespace's pods only then (a namespace whose claims are all Bound or
    fine, the usual case, costs no pod list).
    """
    return any(
        decide_recreate_refusal(c, pods=(), storage_classes=storage_classes, storage=storage)
        is None
        for c in claims
    )


def _plan(
    claim: Mapping[str, Any],
    *,
    pods: Sequence[Mapping[str, Any]],
    storage_classes: Mapping[str, Mapping[str, Any]],
    storage: StorageSettings,
) -> RecreatePlan | RecreateRefusal:
    meta = claim.get("metadata") or {}
    spec = claim.get("spec") or {}
    where = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    target = storage.rwx_storage_class
    if not target:
        return RecreateRefusal(
            "not-configured",
            "no ReadWriteMany class is configured (storage.rwxStorageClass): "
            "there is no class to recreate the claim on",
        )
    phase = (claim.get("status") or {}).get("phase") or "Pending"
    if phase == "Bound" or spec.get("volumeName"):
        volume = spec.get("volumeName") or "a volume"
        return RecreateRefusal(
            "bound",
            f"claim {where} is Bound to {volume}: recreating it would lose the volume's data; "
            "copy the data to a new ReadWriteMany claim instead",
        )
    if spec.get("dataSource") or spec.get("dataSourceRef"):
        source = spec.get("dataSourceRef") or spec.get("dataSource") or {}
        return RecreateRefusal(
            "data-source",
            f"claim {where} is restored or cloned from {source.get('kind', 'a data source')} "
            f"{source.get('name', '')!s}".rstrip()
            + ": a recreated claim would not carry that restore; recreate it yourself",
        )
    users = _mounting_pods(claim, pods)
    if users:
        return RecreateRefusal(
            "in-use",
            f"claim {where} is mounted by pod {', '.join(users)}: stop the pod first, then "
            "recreate the claim",
        )
    annotations = meta.get("annotations") or {}
    if str(annotations.get(OPT_OUT_ANNOTATION, "")).lower() == "false":
        return RecreateRefusal(
            "opted-out",
            f'claim {where} opts out of class rewriting ({OPT_OUT_ANNOTATION}: "false")',
        )
    modes = set(spec.get("accessModes") or [])
    current = _class_of(claim)
    asks_rwx = bool(modes & set(storage.access_modes))
    class_lacks_rwx = current not in storage_classes or (
        current != target and current not in storage.rwx_capable_classes
    )
    if not asks_rwx or not class_lacks_rwx:
        why = (
            "does not ask for ReadWriteMany"
            if not asks_rwx
            else f"is on {current!r}, a class that serves ReadWriteMany"
        )
        return RecreateRefusal(
            "not-stuck",
            f"claim {where} {why}: only an unbound ReadWriteMany claim on a class without "
            "ReadWriteMany (or on a class that does not exist) is recreated",
        )
    return RecreatePlan(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        original_class=current,
        target_class=target,
        claim=build_recreated_claim(claim, target_class=target),
    )
