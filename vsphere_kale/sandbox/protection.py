"""The storage-object-in-use protection controllers of kube-controller-manager, as the
sandbox needs them.

On a cluster the ``kubernetes.io/pvc-protection`` finalizer keeps a deleted claim until no pod
uses it, and ``kubernetes.io/pv-protection`` keeps a volume until no claim is bound to it. The
sandbox runs no pods, so a deleted claim is never in use: the finalizer is removed as soon as
the claim is marked for deletion, exactly what the real controller does for an unused claim.
(Without this, ``kubectl delete pvc`` on the seeded marshal volume would hang forever.)
"""

from __future__ import annotations

import logging

from vsphere_kale.errors import KubeError
from vsphere_kale.sandbox.types import JSONObject, ObjectEditor, ResourceRef

log = logging.getLogger(__name__)

PVCS = ResourceRef("", "persistentvolumeclaims")
PVS = ResourceRef("", "persistentvolumes")
FINALIZERS = {PVCS: "kubernetes.io/pvc-protection", PVS: "kubernetes.io/pv-protection"}


class StorageProtection:
    """Drops the protection finalizer of deleted claims (never in use) and volumes whose
    claim is gone."""

    def __init__(self, store: ObjectEditor) -> None:
        self._store = store

    def __call__(self, event_type: str, ref: ResourceRef, obj: JSONObject) -> None:
        finalizer = FINALIZERS.get(ref)
        meta = obj.get("metadata") or {}
        if (
            finalizer is None
            or event_type == "DELETED"
            or not meta.get("deletionTimestamp")
            or finalizer not in (meta.get("finalizers") or [])
        ):
            return
        if ref == PVS and self._claim_exists(obj):
            return
        meta["finalizers"] = [f for f in meta["finalizers"] if f != finalizer]
        try:
            self._store.update_object(ref, meta.get("namespace"), obj)
        except KubeError as exc:
            # A concurrent write changed it; its own MODIFIED event brings us back here.
            log.debug(
                "storage protection: %s/%s not updated: %s", ref.plural, meta.get("name"), exc
            )

    def _claim_exists(self, volume: JSONObject) -> bool:
        claim = (volume.get("spec") or {}).get("claimRef") or {}
        if not claim.get("name"):
            return False
        return self._store.get_object(PVCS, claim.get("namespace"), claim["name"]) is not None

    def wait_idle(self, timeout: float = 5.0) -> bool:
        return True  # works synchronously on the store's dispatcher thread

    def stop(self) -> None:
        return None
