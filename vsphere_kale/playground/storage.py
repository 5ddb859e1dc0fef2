"""The two storage provisioners of a TKG cluster with Kubeflow, as API clients.

A TKG guest cluster has vSphere CSI (pvCSI, ``csi.vsphere.vmware.com``): block volumes only
unless the Supervisor has vSAN File Services. Admins add nfs-subdir-external-provisioner for
ReadWriteMany. :class:`StorageProvisioners` plays both, plus the binding half of
kube-controller-manager's PV controller, through the API only, so it runs against the
embedded sandbox and a real kube-apiserver alike:

- a claim on a ``csi.vsphere.vmware.com`` class asking only for ReadWriteOnce /
  ReadOnlyMany / ReadWriteOncePod gets a PV (``pvc-<claim uid>``, a CSI source) and is bound;
  with ``volumeBindingMode: WaitForFirstConsumer`` only once a pod mounts it (until then a
  ``WaitForFirstConsumer`` Normal event, the PV controller's words);
- a ReadWriteMany claim there is refused as pvCSI refuses it without vSAN File Services:
  a ``ProvisioningFailed`` Warning event ``failed to provision volume with StorageClass "<c>":
  rpc error: code = InvalidArgument desc = File volume not supported.`` and the claim stays
  Pending (kubernetes-sigs/vsphere-csi-driver, guest-cluster CreateVolume validation);
- a claim on a class whose provisioner is nfs-subdir-external-provisioner
  (``cluster.local/nfs-subdir-external-provisioner`` or
  ``k8s-sigs.io/nfs-subdir-external-provisioner``) is bound in every mode: a PV with an
  ``nfs`` source whose path is ``<share>/<namespace>-<claim>-<pv>`` as that provisioner names
  its directories, and ``Provisioning`` / ``ProvisioningSucceeded`` Normal events;
- a claim naming a class that does not exist gets the PV controller's ``ProvisioningFailed``
  ``storageclass.storage.k8s.io "<c>" not found`` Warning and stays Pending;
- when a bound claim is deleted, its PV goes too (reclaim policy ``Delete``);
- storage protection as kube-controller-manager does it: a deleted claim's
  ``kubernetes.io/pvc-protection`` finalizer is removed once no unfinished pod mounts it, a
  deleted volume's ``kubernetes.io/pv-protection`` once its claim is gone.

Repeated events are counted on one Event object (``count``, ``lastTimestamp``), as
client-go's event correlator does. Claims without a class, claims of other provisioners and
claims already bound are left alone. Where kube-controller-manager runs as well, it binds
the same way; a conflicting write is read again and retried.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from vsphere_kale.errors import KubeConflict, KubeError, KubeNotFound
from vsphere_kale.kube import Kube
from vsphere_kale.playground.objects import ApiObjects, WatchLoop, wait_converged
from vsphere_kale.sandbox.types import JSONObject, ResourceRef

log = logging.getLogger(__name__)

PVCS = ResourceRef("", "persistentvolumeclaims")
PVS = ResourceRef("", "persistentvolumes")
PODS = ResourceRef("", "pods")
EVENTS = ResourceRef("", "events")
STORAGE_CLASSES = ResourceRef("storage.k8s.io", "storageclasses")

VSPHERE_CSI = "csi.vsphere.vmware.com"
NFS_PROVISIONERS = frozenset(
    {"cluster.local/nfs-subdir-external-provisioner", "k8s-sigs.io/nfs-subdir-external-provisioner"}
)
#: The NFS export the playground's nfs-client pretends to use (TEST-NET-1: never routable).
NFS_SERVER = "192.0.2.10"
NFS_SHARE = "/srv/nfs"
CSI_COMPONENT = "csi.vsphere.vmware.com_vsphere-csi-controller-6d8f7b9c5-x2mfq_0b5c2f1e"
NFS_COMPONENT = "cluster.local/nfs-subdir-external-provisioner_nfs-provisioner-7c9d5f_3e1a"
PV_CONTROLLER = "persistentvolume-controller"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
_FINISHED = frozenset({"Succeeded", "Failed"})
RWX = "ReadWriteMany"

Action = Literal["ignore", "bind", "wait", "refuse", "no-class"]


@dataclass(frozen=True)
class Provisioning:
    """What a provisioner does with one claim now (:func:`decide_provisioning`)."""

    action: Action
    provisioner: str = ""
    message: str = ""


def claim_class(claim: Mapping[str, Any]) -> str:
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    legacy = annotations.get("volume.beta.kubernetes.io/storage-class")
    return str(legacy or (claim.get("spec") or {}).get("storageClassName") or "")


def claim_modes(claim: Mapping[str, Any]) -> list[str]:
    return [str(m) for m in (claim.get("spec") or {}).get("accessModes") or []]


def provisioning_failed_message(storage_class: str) -> str:
    """pvCSI's answer to a ReadWriteMany claim on a guest cluster without vSAN File Services."""
    return (
        f'failed to provision volume with StorageClass "{storage_class}": rpc error: '
        "code = InvalidArgument desc = File volume not supported."
    )


def _consumed(claim: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> bool:
    meta = claim.get("metadata") or {}
    for pod in pods:
        if (pod.get("metadata") or {}).get("namespace") != meta.get("namespace"):
            continue
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            source = volume.get("persistentVolumeClaim") or {}
            if source.get("claimName") == meta.get("name"):
                return True
    return False


def decide_provisioning(
    claim: Mapping[str, Any],
    storage_class: Mapping[str, Any] | None,
    *,
    pods: Sequence[Mapping[str, Any]] = (),
) -> Provisioning:
    """Pure: what the provisioner of ``claim``'s class does with it now."""
    meta = claim.get("metadata") or {}
    spec = claim.get("spec") or {}
    if (
        meta.get("deletionTimestamp")
        or spec.get("volumeName")
        or (claim.get("status") or {}).get("phase") in ("Bound", "Lost")
    ):
        return Provisioning("ignore")
    name = claim_class(claim)
    if not name:
        return Provisioning("ignore")  # static binding only: no provisioner is asked
    if storage_class is None:
        return Provisioning("no-class", message=f'storageclass.storage.k8s.io "{name}" not found')
    provisioner = str(storage_class.get("provisioner") or "")
    if provisioner == VSPHERE_CSI:
        if RWX in claim_modes(claim):
            return Provisioning("refuse", provisioner, provisioning_failed_message(name))
        if storage_class.get("volumeBindingMode") == "WaitForFirstConsumer" and not _consumed(
            claim, pods
        ):
            return Provisioning(
                "wait", provisioner, "waiting for first consumer to be created before binding"
            )
        return Provisioning("bind", provisioner)
    if provisioner in NFS_PROVISIONERS:
        return Provisioning("bind", provisioner)
    return Provisioning("ignore")


def pv_name(claim: Mapping[str, Any]) -> str:
    """``pvc-<claim uid>``, as external-provisioner names the volumes it creates."""
    return f"pvc-{(claim.get('metadata') or {}).get('uid', '')}"


def build_volume(
    claim: Mapping[str, Any], storage_class: Mapping[str, Any], *, provisioner: str
) -> JSONObject:
    """The PV a provisioner creates for ``claim``, pre-bound to it by ``claimRef``."""
    meta = claim.get("metadata") or {}
    spec = claim.get("spec") or {}
    name = pv_name(claim)
    request = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    volume_spec: JSONObject = {
        "capacity": {"storage": request},
        "accessModes": claim_modes(claim),
        "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy") or "Delete",
        "storageClassName": claim_class(claim),
        "volumeMode": spec.get("volumeMode") or "Filesystem",
        "claimRef": {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": meta.get("namespace", ""),
            "name": meta.get("name", ""),
            "uid": meta.get("uid", ""),
        },
    }
    if provisioner == VSPHERE_CSI:
        volume_spec["csi"] = {
            "driver": VSPHERE_CSI,
            "fsType": "ext4",
            "volumeHandle": f"{meta.get('uid', '')}-{secrets.token_hex(4)}",
            "volumeAttributes": {"type": "vSphere CNS Block Volume"},
        }
    else:
        directory = f"{meta.get('namespace', '')}-{meta.get('name', '')}-{name}"
        volume_spec["nfs"] = {"server": NFS_SERVER, "path": f"{NFS_SHARE}/{directory}"}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "annotations": {"pv.kubernetes.io/provisioned-by": provisioner},
            "finalizers": ["kubernetes.io/pv-protection"],
        },
        "spec": volume_spec,
    }


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class StorageProvisioners:
    """vSphere CSI block, nfs-subdir-external-provisioner and PV binding, through the API.

    :meth:`start` lists and watches claims and pods (a pod mounting a WaitForFirstConsumer
    claim is its first consumer); one worker handles claims in event order. :meth:`wait_idle`
    returns once no claim that can be bound right now is still unbound.
    """

    def __init__(self, objects: ApiObjects) -> None:
        self._objects = objects
        self._stopping = threading.Event()
        self._queue: queue.Queue[tuple[str, JSONObject] | None] = queue.Queue()
        self._busy = 0
        self._lock = threading.Lock()
        self._loops = [
            WatchLoop(
                objects, PVCS, self._on_claim, name="playground-pvcs", stopping=self._stopping
            ),
            WatchLoop(objects, PODS, self._on_pod, name="playground-pods", stopping=self._stopping),
        ]
        self._worker = threading.Thread(
            target=self._run, name="playground-provisioners", daemon=True
        )

    def start(self) -> StorageProvisioners:
        self._worker.start()
        for loop in self._loops:
            loop.start()
        return self

    # -- events -> queue --

    def _put(self, event_type: str, claim: JSONObject) -> None:
        if self._stopping.is_set():
            return
        with self._lock:
            self._busy += 1
        self._queue.put((event_type, claim))

    def _on_claim(self, event_type: str, claim: JSONObject) -> None:
        self._put(event_type, claim)

    def _on_pod(self, event_type: str, pod: JSONObject) -> None:
        if event_type == "DELETED":
            return
        namespace = (pod.get("metadata") or {}).get("namespace")
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            claim = self._objects.get_object(PVCS, namespace, name) if name else None
            if claim is not None:
                self._put("MODIFIED", claim)

    def _run(self) -> None:
        while not self._stopping.is_set():
            item = self._queue.get()
            if item is None:
                return
            event_type, claim = item
            try:
                if event_type == "DELETED":
                    self._release(claim)
                else:
                    self._handle(claim)
            except KubeError as exc:
                meta = claim.get("metadata") or {}
                log.info(
                    "provisioner: claim %s/%s not handled: %s",
                    meta.get("namespace"),
                    meta.get("name"),
                    exc,
                )
            except Exception:  # a bug must not stop the worker: log and go on
                log.exception("provisioner failed on a claim")
            finally:
                with self._lock:
                    self._busy -= 1

    # -- the work --

    def _decide(self, claim: JSONObject) -> Provisioning:
        name = claim_class(claim)
        storage_class = self._objects.get_object(STORAGE_CLASSES, None, name) if name else None
        pods: list[JSONObject] = []
        if storage_class is not None and storage_class.get("volumeBindingMode") == (
            "WaitForFirstConsumer"
        ):
            pods = self._objects.list_objects(PODS, (claim.get("metadata") or {}).get("namespace"))
        return decide_provisioning(claim, storage_class, pods=pods)

    def _handle(self, seen: JSONObject) -> None:
        meta = seen.get("metadata") or {}
        claim = self._objects.get_object(PVCS, meta.get("namespace"), str(meta.get("name")))
        if claim is None or (claim.get("metadata") or {}).get("uid") != meta.get("uid"):
            return
        if (claim.get("metadata") or {}).get("deletionTimestamp"):
            self._unprotect_claim(claim)
            return
        decision = self._decide(claim)
        if decision.action == "bind":
            self._bind(claim, decision.provisioner)
        elif decision.action == "refuse":
            component = CSI_COMPONENT if decision.provisioner == VSPHERE_CSI else NFS_COMPONENT
            self.record_event(claim, "Warning", "ProvisioningFailed", decision.message, component)
        elif decision.action == "wait":
            self.record_event(
                claim, "Normal", "WaitForFirstConsumer", decision.message, PV_CONTROLLER
            )
        elif decision.action == "no-class":
            self.record_event(
                claim, "Warning", "ProvisioningFailed", decision.message, PV_CONTROLLER
            )

    def _bind(self, claim: JSONObject, provisioner: str) -> None:
        meta = claim["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        storage_class = self._objects.get_object(STORAGE_CLASSES, None, claim_class(claim)) or {}
        component = CSI_COMPONENT if provisioner == VSPHERE_CSI else NFS_COMPONENT
        self.record_event(
            claim,
            "Normal",
            "Provisioning",
            f'External provisioner is provisioning volume for claim "{namespace}/{name}"',
            component,
        )
        volume = build_volume(claim, storage_class, provisioner=provisioner)
        with contextlib.suppress(KubeConflict):  # created by an earlier attempt: bind to it
            self._objects.create_object(PVS, None, volume)
        self.record_event(
            claim,
            "Normal",
            "ProvisioningSucceeded",
            f"Successfully provisioned volume {volume['metadata']['name']}",
            component,
        )
        self._objects.patch_status(PVS, None, volume["metadata"]["name"], {"phase": "Bound"})
        # The PV controller's half: the claim names its volume, then reports Bound.
        self._objects.patch_object(
            PVCS,
            namespace,
            name,
            {
                "metadata": {
                    "resourceVersion": meta.get("resourceVersion"),
                    "annotations": {
                        "pv.kubernetes.io/bind-completed": "yes",
                        "pv.kubernetes.io/bound-by-controller": "yes",
                        "volume.kubernetes.io/storage-provisioner": provisioner,
                        "volume.beta.kubernetes.io/storage-provisioner": provisioner,
                    },
                },
                "spec": {"volumeName": volume["metadata"]["name"]},
            },
        )
        self._objects.patch_status(
            PVCS,
            namespace,
            name,
            {
                "phase": "Bound",
                "accessModes": volume["spec"]["accessModes"],
                "capacity": dict(volume["spec"]["capacity"]),
            },
        )
        log.info("provisioner: bound %s/%s to %s", namespace, name, volume["metadata"]["name"])

    def _release(self, claim: JSONObject) -> None:
        """A deleted claim's dynamically provisioned volume goes with it (reclaim Delete)."""
        volume = self._objects.get_object(PVS, None, pv_name(claim))
        if volume is None:
            return
        spec = volume.get("spec") or {}
        owner = (spec.get("claimRef") or {}).get("uid")
        if owner == (claim.get("metadata") or {}).get("uid") and (
            spec.get("persistentVolumeReclaimPolicy") == "Delete"
        ):
            self._objects.delete_object(PVS, None, volume["metadata"]["name"])
            # Its claim is gone: nothing holds the volume any more (pv-protection).
            deleting = self._objects.get_object(PVS, None, volume["metadata"]["name"])
            if deleting is not None:
                self._drop_finalizer(PVS, None, deleting, PV_PROTECTION)

    def _unprotect_claim(self, claim: JSONObject) -> None:
        """kube-controller-manager's pvc-protection controller, for a claim being deleted:
        its finalizer goes once no pod that has not finished mounts it. (The embedded sandbox
        does this in-process too; a real control plane may run the controller or not.)"""
        meta = claim["metadata"]
        if PVC_PROTECTION not in (meta.get("finalizers") or []):
            return
        pods = self._objects.list_objects(PODS, meta.get("namespace"))
        running = [p for p in pods if (p.get("status") or {}).get("phase") not in _FINISHED]
        if _consumed(claim, running):
            return
        self._drop_finalizer(PVCS, str(meta.get("namespace")), claim, PVC_PROTECTION)

    def _drop_finalizer(
        self, ref: ResourceRef, namespace: str | None, obj: JSONObject, finalizer: str
    ) -> None:
        meta = obj["metadata"]
        rest = [f for f in meta.get("finalizers") or [] if f != finalizer]
        # Changed or gone meanwhile: its next event brings us back if still needed.
        with contextlib.suppress(KubeConflict, KubeNotFound):
            self._objects.patch_object(
                ref,
                namespace,
                str(meta["name"]),
                # resourceVersion: the list is replaced whole, so only over what we read.
                {"metadata": {"finalizers": rest, "resourceVersion": meta.get("resourceVersion")}},
            )

    def record_event(
        self, claim: Mapping[str, Any], kind: str, reason: str, message: str, component: str
    ) -> None:
        """One Event on ``claim``; a repeat of the same one bumps its count."""
        record_event(
            self._objects, claim, kind=kind, reason=reason, message=message, component=component
        )

    # -- lifecycle --

    def _converged(self) -> bool:
        for claim in self._objects.list_objects(PVCS):
            if self._decide(claim).action == "bind":
                return False
        return True

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no work is queued and the API shows every object in its end state."""
        return wait_converged(
            idle=self._idle,
            converged=self._converged,
            stopping=self._stopping,
            timeout=timeout,
            what="provisioner",
        )

    def _idle(self) -> bool:
        with self._lock:
            return self._busy == 0

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._worker.is_alive():
            self._worker.join(timeout)
        for loop in self._loops:
            loop.join(timeout)


def record_event(
    objects: ApiObjects,
    involved: Mapping[str, Any],
    *,
    kind: str,
    reason: str,
    message: str,
    component: str,
) -> JSONObject:
    """Create a core/v1 Event on ``involved`` or count a repeat of the same one."""
    meta = involved.get("metadata") or {}
    namespace, name, uid = str(meta.get("namespace")), str(meta.get("name")), meta.get("uid")
    found, _ = objects.list_with_version(
        EVENTS,
        namespace,
        fieldSelector=f"involvedObject.name={name},reason={reason}",
    )
    now = _now()
    for event in found:
        if (event.get("involvedObject") or {}).get("uid") == uid and event.get(
            "message"
        ) == message:
            return objects.patch_object(
                EVENTS,
                namespace,
                event["metadata"]["name"],
                {"count": int(event.get("count") or 1) + 1, "lastTimestamp": now},
            )
    new: JSONObject = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": str(involved.get("apiVersion") or "v1"),
            "kind": str(involved.get("kind") or "PersistentVolumeClaim"),
            "namespace": namespace,
            "name": name,
            "uid": uid,
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component},
        "reportingComponent": component,
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
    }
    return objects.create_object(EVENTS, namespace, new)


def start_provisioners(api: Kube) -> StorageProvisioners:
    """The storage provisioners on ``api``, watching (their initial lists handled) on return."""
    return StorageProvisioners(ApiObjects(api)).start()
